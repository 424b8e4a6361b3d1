package store_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

func TestSharedSecret(t *testing.T) {
	e := newEnv(t)
	if meta, err := e.s.SecretInfo(); err != nil || meta.Exists {
		t.Fatalf("new DB has a secret: %+v %v", meta, err)
	}
	if e.s.CheckSharedSecret("") || e.s.CheckSharedSecret("kws_anything") {
		t.Fatal("a DB without a secret accepted one")
	}
	s1, meta, err := e.s.RevealSecret("admin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s1, store.SecretPrefix) || len(s1) < 40 || !meta.Exists || !strings.HasPrefix(s1, meta.Hint) {
		t.Fatalf("secret %q meta %+v", s1, meta)
	}
	if ev := e.audit()[0]; ev.Target != "secret" || strings.Contains(ev.Detail, s1[len(store.SecretPrefix):]) {
		t.Fatalf("audit %+v", ev)
	}
	again, _, err := e.s.RevealSecret("admin")
	if err != nil || again != s1 {
		t.Fatalf("second reveal: %v", err)
	}
	if ev := e.audit()[0]; ev.Action != model.ActSecretReveal {
		t.Fatalf("reveal not audited: %+v", ev)
	}
	if !e.s.CheckSharedSecret(s1) || e.s.CheckSharedSecret(s1+"x") || e.s.CheckSharedSecret(s1[:len(s1)-1]) || e.s.CheckSharedSecret("") {
		t.Fatal("CheckSharedSecret wrong")
	}
	e.reopen()
	if got, _, err := e.s.RevealSecret("admin"); err != nil || got != s1 || !e.s.CheckSharedSecret(s1) {
		t.Fatalf("after reopen: %v", err)
	}

	// Rotate with grace: both work until the grace ends.
	s2, meta, err := e.s.RotateSecret("admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if s2 == s1 || meta.RotatedAt == nil || meta.PreviousValidUntil == nil {
		t.Fatalf("rotate: %+v", meta)
	}
	if !e.s.CheckSharedSecret(s1) || !e.s.CheckSharedSecret(s2) {
		t.Fatal("grace: both secrets should check")
	}
	e.reopen()
	e.clock.Advance(59 * time.Minute)
	if !e.s.CheckSharedSecret(s1) {
		t.Fatal("grace lost on reopen")
	}
	e.clock.Advance(time.Minute)
	if e.s.CheckSharedSecret(s1) || !e.s.CheckSharedSecret(s2) {
		t.Fatal("previous secret outlived its grace")
	}
	// Rotate without grace: the previous dies at once.
	s3, _, err := e.s.RotateSecret("admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	if e.s.CheckSharedSecret(s2) || e.s.CheckSharedSecret(s1) || !e.s.CheckSharedSecret(s3) {
		t.Fatal("rotation without grace")
	}
	if got, _, _ := e.s.RevealSecret("admin"); got != s3 {
		t.Fatal("reveal after rotate")
	}
	// EnsureSecret keeps an existing secret.
	if err := e.s.EnsureSecret("admin"); err != nil || !e.s.CheckSharedSecret(s3) {
		t.Fatalf("EnsureSecret: %v", err)
	}
}

// TestNoSecretsOnDisk issues many tokens and shared secrets and then reads
// the raw database file: none of them, nor their random bodies, may appear.
func TestNoSecretsOnDisk(t *testing.T) {
	e := newEnv(t)
	var secrets []string
	var ids []string
	specs := make([]model.KeySpec, 150)
	for i := range specs {
		specs[i] = spec(fmt.Sprintf("imported-%d", i))
	}
	keys, toks, err := e.s.ImportKeys("admin", specs)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, toks...)
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	for i := 0; i < 40; i++ {
		k, tok := e.create(spec(fmt.Sprintf("created-%d", i)))
		secrets = append(secrets, tok)
		ids = append(ids, k.ID)
	}
	for i, id := range ids {
		if i%4 != 0 {
			continue
		}
		_, tok, err := e.s.RegenerateKey("admin", id, time.Duration(i%2)*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, tok)
	}
	for _, tok := range secrets {
		e.s.Verify(tok, "coupons:read", "", "10.1.2.3")
	}
	sec, _, err := e.s.RevealSecret("admin")
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, sec)
	sec2, _, err := e.s.RotateSecret("admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sec3, _, err := e.s.RevealSecret("admin")
	if err != nil || sec3 != sec2 {
		t.Fatal(err)
	}
	secrets = append(secrets, sec2)
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	data := e.state()
	// The file is readable text where it should be: names and ids are there.
	if !bytes.Contains(data, []byte("imported-149")) || !bytes.Contains(data, []byte(ids[0])) || !bytes.Contains(data, []byte("10.1.2.3")) {
		t.Fatal("the file does not hold the expected plain data; the test is not looking at the right bytes")
	}
	for _, s := range secrets {
		var body string
		if strings.HasPrefix(s, store.SecretPrefix) {
			body = s[len(store.SecretPrefix):]
		} else {
			body = s[len(model.DefaultPrefix):]
		}
		for _, needle := range []string{s, body, body[:len(body)/2], body[len(body)/2:]} {
			if bytes.Contains(data, []byte(needle)) {
				t.Fatalf("database file contains secret material %q", needle)
			}
		}
	}
	// The backup is the same bytes-wise promise.
	e.open()
	var buf bytes.Buffer
	if _, err := e.s.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if bytes.Contains(buf.Bytes(), []byte(s)) {
			t.Fatal("backup contains a secret")
		}
	}
}

func TestSecretMasterKeyMismatch(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	if _, _, err := a.s.RevealSecret("admin"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.s.RevealSecret("admin"); err != nil {
		t.Fatal(err)
	}
	// Swap in another database's master key: decryption must fail clearly.
	if err := a.s.Close(); err != nil {
		t.Fatal(err)
	}
	a.s = nil
	mk := readFile(t, b.masterKeyPath())
	writeFile(t, a.masterKeyPath(), mk)
	a.open()
	if _, _, err := a.s.RevealSecret("admin"); err == nil || !strings.Contains(err.Error(), "master key") {
		t.Fatalf("wrong master key: %v", err)
	}
}

// TestRotateSecretGraceBounded: the store refuses a grace period outside
// 0..30 days for the shared secret as it does for keys (only the CLI
// checked it before), and a refused rotation changes nothing.
func TestRotateSecretGraceBounded(t *testing.T) {
	e := newEnv(t)
	s1, _, err := e.s.RevealSecret("admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []time.Duration{-time.Second, model.MaxGrace + time.Second, 1000 * 7 * 24 * time.Hour} {
		if _, _, err := e.s.RotateSecret("admin", g); err == nil || !strings.Contains(err.Error(), "between 0 and 30 days") {
			t.Errorf("RotateSecret with grace %s: %v, want a refusal", g, err)
		}
	}
	if now, _, err := e.s.RevealSecret("admin"); err != nil || now != s1 {
		t.Fatalf("a refused rotation changed the secret (%v)", err)
	}
	if _, _, err := e.s.RotateSecret("admin", model.MaxGrace); err != nil {
		t.Fatalf("RotateSecret with the longest grace: %v", err)
	}
}
