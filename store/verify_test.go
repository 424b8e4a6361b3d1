package store_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

func TestVerifyEveryCode(t *testing.T) {
	e := newEnv(t)
	_, valid := e.create(spec("valid", "coupons:read", "analytics:read"))
	kd, disabled := e.create(spec("disabled"))
	if _, err := e.s.SetKeyActive("admin", kd.ID, false); err != nil {
		t.Fatal(err)
	}
	exp := e.clock.Now().Add(time.Hour)
	sp := spec("expiring")
	sp.ExpiresAt = &exp
	_, expiring := e.create(sp)
	sp = spec("limited", "coupons:read")
	sp.Resources = []string{"web-shop"}
	_, limited := e.create(sp)
	_, admin := e.create(model.KeySpec{Name: "root", Role: model.RoleAdmin, Active: true})
	if _, err := e.s.AddOperator("admin", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	_, bobs, err := e.s.CreateKey("bob", spec("bobs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SetOperatorDisabled("admin", "bob", true); err != nil {
		t.Fatal(err)
	}
	neverIssued, _ := model.GenerateToken("")
	e.clock.Advance(2 * time.Hour)

	flipped := []byte(valid)
	if flipped[10] == 'A' {
		flipped[10] = 'B'
	} else {
		flipped[10] = 'A'
	}
	cases := []struct {
		name, tok, scope, res string
		want                  model.Code
	}{
		{"valid", valid, "coupons:read", "", model.CodeValid},
		{"valid any resource", valid, "analytics:read", "us-store", model.CodeValid},
		{"valid key only", valid, "", "", model.CodeValid},
		{"malformed garbage", "hello", "", "", model.CodeMalformed},
		{"malformed empty", "", "", "", model.CodeMalformed},
		{"malformed checksum", string(flipped), "", "", model.CodeMalformed},
		{"malformed prefix", "xx_" + valid[3:], "", "", model.CodeMalformed},
		{"malformed whitespace", valid + "\n", "", "", model.CodeMalformed},
		{"not found", neverIssued.String(), "", "", model.CodeNotFound},
		{"disabled", disabled, "coupons:read", "", model.CodeDisabled},
		{"expired", expiring, "coupons:read", "", model.CodeExpired},
		{"insufficient scope", valid, "coupons:write", "", model.CodeInsufficientScope},
		{"forbidden resource", limited, "coupons:read", "us-store", model.CodeForbiddenResource},
		{"limited, no resource named", limited, "coupons:read", "", model.CodeForbiddenResource},
		{"limited, granted", limited, "coupons:read", "web-shop", model.CodeValid},
		{"admin any scope", admin, "exports:read", "us-store", model.CodeValid},
		{"creator disabled", bobs, "coupons:read", "", model.CodeCreatorDisabled},
	}
	seen := map[model.Code]bool{}
	for _, c := range cases {
		r := e.s.Verify(c.tok, c.scope, c.res, "test")
		if r.Code != c.want {
			t.Errorf("%s: %s (%s), want %s", c.name, r.Code, r.Reason, c.want)
		}
		if r.Valid != (c.want == model.CodeValid) {
			t.Errorf("%s: Valid=%v", c.name, r.Valid)
		}
		if strings.Contains(r.Reason, c.tok) && c.tok != "" {
			t.Errorf("%s: reason names the token", c.name)
		}
		seen[r.Code] = true
	}
	for _, code := range model.Codes {
		if !seen[code] {
			t.Errorf("code %s not reached through store.Verify", code)
		}
	}
}

func TestVerifyImmediateEffect(t *testing.T) {
	e := newEnv(t)
	k, tok := e.create(spec("k"))
	for i := 0; i < 3; i++ {
		e.wantCode(tok, "", "", model.CodeValid)
		if _, err := e.s.SetKeyActive("admin", k.ID, false); err != nil {
			t.Fatal(err)
		}
		e.wantCode(tok, "", "", model.CodeDisabled)
		if _, err := e.s.SetKeyActive("admin", k.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	e.wantCode(tok, "", "", model.CodeValid)
	if err := e.s.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok, "", "", model.CodeNotFound)
}

func TestRegenerateGrace(t *testing.T) {
	e := newEnv(t)
	k, old := e.create(spec("k"))
	kr, tok1, err := e.s.RegenerateKey("admin", k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if kr.GraceUntil == nil || !kr.GraceUntil.Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("grace until %v", kr.GraceUntil)
	}
	if ev := e.audit()[0]; !strings.Contains(ev.Detail, "valid until") {
		t.Fatalf("audit detail %q does not mention the grace", ev.Detail)
	}
	e.wantCode(old, "coupons:read", "", model.CodeValid)
	e.wantCode(tok1, "coupons:read", "", model.CodeValid)
	// The grace survives a restart.
	e.reopen()
	e.clock.Advance(59 * time.Minute)
	e.wantCode(old, "coupons:read", "", model.CodeValid)
	// The previous secret follows the key's state like the current one.
	if _, err := e.s.SetKeyActive("admin", k.ID, false); err != nil {
		t.Fatal(err)
	}
	e.wantCode(old, "", "", model.CodeDisabled)
	if _, err := e.s.SetKeyActive("admin", k.ID, true); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.wantCode(old, "coupons:read", "", model.CodeNotFound)
	e.wantCode(tok1, "coupons:read", "", model.CodeValid)
	e.reopen()
	e.wantCode(old, "", "", model.CodeNotFound)

	// A second regeneration with grace keeps only the immediately previous
	// secret; a regeneration without grace kills it at once.
	_, tok2, err := e.s.RegenerateKey("admin", k.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, tok3, err := e.s.RegenerateKey("admin", k.ID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok1, "", "", model.CodeNotFound)
	e.wantCode(tok2, "", "", model.CodeValid)
	e.wantCode(tok3, "", "", model.CodeValid)
	_, tok4, err := e.s.RegenerateKey("admin", k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok2, "", "", model.CodeNotFound)
	e.wantCode(tok3, "", "", model.CodeNotFound)
	e.wantCode(tok4, "", "", model.CodeValid)
	e.reopen()
	e.wantCode(tok3, "", "", model.CodeNotFound)
	e.wantCode(tok4, "", "", model.CodeValid)
	// Deleting the key kills both secrets during a grace.
	_, tok5, _ := e.s.RegenerateKey("admin", k.ID, time.Hour)
	if err := e.s.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok4, "", "", model.CodeNotFound)
	e.wantCode(tok5, "", "", model.CodeNotFound)
}

func TestGraceExpiryCleanup(t *testing.T) {
	// With a short flush interval the background loop drops previous
	// secrets whose grace is over, from memory and disk, without touching a
	// newer grace. bbolt only: it looks for the hash in the file's index
	// (on etcd grace expiry writes nothing; TestRegenerateGrace covers the
	// verification side on both backends).
	e := newBoltEnv(t)
	e.opts.FlushInterval = 20 * time.Millisecond
	e.reopen()
	k, old := e.create(spec("k"))
	if _, _, err := e.s.RegenerateKey("admin", k.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	h := model.HashToken(old)
	inIndex := func() bool {
		// Freed bbolt pages keep their bytes, so look in the bucket itself.
		e.s.Close()
		e.s = nil
		db, err := bolt.Open(e.path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		_ = db.View(func(tx *bolt.Tx) error {
			found = tx.Bucket([]byte("hashes")).Get(h[:]) != nil
			return nil
		})
		db.Close()
		e.open()
		return found
	}
	if !inIndex() {
		t.Fatal("previous hash not in the index during its grace")
	}
	e.clock.Advance(2 * time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		if !inIndex() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired previous hash never removed from the index")
		}
	}
	e.wantCode(old, "", "", model.CodeNotFound)
}

func TestLastUsed(t *testing.T) {
	e := newEnv(t)
	k, tok := e.create(spec("used"))
	k2, tok2 := e.create(spec("refused"))
	if k.LastUsedAt != nil {
		t.Fatal("new key has last-used")
	}
	e.clock.Advance(time.Minute)
	at := e.clock.Now()
	e.wantCode(tok, "coupons:read", "", model.CodeValid)
	// Refused verifications do not count.
	e.wantCode(tok2, "coupons:write", "", model.CodeInsufficientScope)
	if _, err := e.s.SetKeyActive("admin", k2.ID, false); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok2, "", "", model.CodeDisabled)
	// Key shows the in-memory last use at once (see lastused_live.go);
	// the flush below is what writes it to the file.
	got, _ := e.s.Key(k.ID)
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(at) {
		t.Fatalf("in-memory last-used not visible before a flush: %v", got.LastUsedAt)
	}
	if got.Version != k.Version {
		t.Fatal("a verification bumped the version")
	}
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	got, _ = e.s.Key(k.ID)
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(at) || got.LastUsedFrom != "test" {
		t.Fatalf("after flush: %v %q", got.LastUsedAt, got.LastUsedFrom)
	}
	if got.Version != k.Version {
		t.Fatal("flushing last-used bumped the version")
	}
	if g2, _ := e.s.Key(k2.ID); g2.LastUsedAt != nil {
		t.Fatal("refused verifications set last-used")
	}
	// A hostile source is sanitised and bounded.
	e.clock.Advance(time.Minute)
	e.s.Verify(tok, "", "", "10.0.0.9\x1b]52;c;QUJD\x07"+strings.Repeat("é", 100))
	e.reopen() // Close flushes
	got, _ = e.s.Key(k.ID)
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(e.clock.Now()) {
		t.Fatalf("last-used not persisted by Close: %v", got.LastUsedAt)
	}
	if model.Sanitize(got.LastUsedFrom) != got.LastUsedFrom || len(got.LastUsedFrom) > 128 || !strings.HasPrefix(got.LastUsedFrom, "10.0.0.9") {
		t.Fatalf("last-used source %q", got.LastUsedFrom)
	}
	if g2, _ := e.s.Key(k2.ID); g2.LastUsedAt != nil {
		t.Fatal("refused key got last-used after reopen")
	}
	// Deleting a key with buffered last-used data is harmless.
	e.s.Verify(tok, "", "", "x")
	if err := e.s.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Key(k.ID); err == nil {
		t.Fatal("flush resurrected a deleted key")
	}
}

func TestNoLastUsed(t *testing.T) {
	e := newEnv(t)
	e.opts.NoLastUsed = true
	e.reopen()
	k, tok := e.create(spec("k"))
	e.wantCode(tok, "", "", model.CodeValid)
	e.reopen()
	if got, _ := e.s.Key(k.ID); got.LastUsedAt != nil {
		t.Fatal("NoLastUsed still recorded")
	}
}

func TestConcurrentVerifyAndWrite(t *testing.T) {
	e := newEnv(t)
	e.opts.FlushInterval = 5 * time.Millisecond
	e.opts.NoSync = true
	e.reopen()
	const n = 20
	ids := make([]string, n)
	toks := make([]atomic.Pointer[string], n)
	for i := range ids {
		k, tok := e.create(spec(fmt.Sprintf("k%d", i)))
		ids[i] = k.ID
		toks[i].Store(&tok)
	}
	stable, stableTok := e.create(spec("stable"))
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Value
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				r := e.s.Verify(*toks[(i+w)%n].Load(), "coupons:read", "", "w")
				switch r.Code {
				case model.CodeValid, model.CodeDisabled, model.CodeNotFound:
				default:
					bad.Store(fmt.Sprintf("unexpected %s", r.Code))
				}
				if r := e.s.Verify(stableTok, "coupons:read", "", "w"); r.Code != model.CodeValid {
					bad.Store(fmt.Sprintf("stable key: %s", r.Code))
				}
				_ = e.s.Keys()
			}
		}(w)
	}
	for round := 0; round < 15; round++ {
		for i, id := range ids {
			switch (round + i) % 3 {
			case 0:
				if _, err := e.s.SetKeyActive("admin", id, round%2 == 0); err != nil {
					t.Error(err)
				}
			case 1:
				_, tok, err := e.s.RegenerateKey("admin", id, time.Duration(round%2)*time.Hour)
				if err != nil {
					t.Error(err)
				}
				toks[i].Store(&tok)
			case 2:
				k, _ := e.s.Key(id)
				sp := model.SpecOf(k)
				sp.Description = fmt.Sprint(round)
				if _, err := e.s.EditKey("admin", id, k.Version, sp); err != nil {
					t.Error(err)
				}
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if k, _ := e.s.Key(stable.ID); k.LastUsedAt == nil {
		t.Fatal("concurrent verifications not recorded")
	}
}

func TestMissingMasterKeyStillOpens(t *testing.T) {
	e := newEnv(t)
	secret, _, err := e.s.RevealSecret("admin")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	if err := os.Rename(e.masterKeyPath(), e.masterKeyPath()+".saved"); err != nil {
		t.Fatal(err)
	}
	e.open()
	_, _, err = e.s.RevealSecret("admin")
	if err == nil || !strings.Contains(err.Error(), "master key") || !strings.Contains(err.Error(), e.masterKeyPath()) {
		t.Fatalf("reveal without master key: %v", err)
	}
	// Verifying HTTP callers needs only the hash.
	if !e.s.CheckSharedSecret(secret) {
		t.Fatal("shared secret no longer checks")
	}
	if e.s.Backend() == "etcd" {
		// On etcd the other nodes hold the master key: rotating under a new
		// one would lock them out, so it is refused, naming the file, until
		// this node has the key again.
		mk := readFile(t, e.masterKeyPath()+".saved")
		if _, _, err := e.s.RotateSecret("admin", 0); err == nil || !strings.Contains(err.Error(), e.masterKeyPath()) {
			t.Fatalf("rotate without the cluster's master key: %v, want a refusal naming the file", err)
		}
		writeFile(t, e.masterKeyPath(), mk)
		if got, _, err := e.s.RevealSecret("admin"); err != nil || got != secret {
			t.Fatalf("reveal with the master key back: %v", err)
		}
		return
	}
	// On one host, rotating starts over with a new master key.
	s2, _, err := e.s.RotateSecret("admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := e.s.RevealSecret("admin"); err != nil || got != s2 {
		t.Fatalf("reveal after rotate: %v", err)
	}
}
