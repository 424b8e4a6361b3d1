package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/store"
)

// TestMasterKeyOption: Options.MasterKey names the master key file (every
// etcd node passes the same one): it is created there, 0600, on first use,
// nothing is written beside the database, and the secret reveals again
// after a reopen with the same file.
func TestMasterKeyOption(t *testing.T) {
	e := newEnv(t)
	mk := filepath.Join(t.TempDir(), "master.key")
	e.opts.MasterKey = mk
	e.reopen()
	if got := e.s.MasterKeyPath(); got != mk {
		t.Fatalf("MasterKeyPath = %s, want %s", got, mk)
	}
	secret, _, err := e.s.RevealSecret("admin")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(mk)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key file: %v %v", fi, err)
	}
	if e.backend == "bbolt" { // (on etcd there is no database file)
		if _, err := os.Stat(store.MasterKeyPath(e.path)); !os.IsNotExist(err) {
			t.Fatalf("a master key was written beside the database too: %v", err)
		}
	}
	e.reopen()
	if again, _, err := e.s.RevealSecret("admin"); err != nil || again != secret {
		t.Fatalf("reveal after reopen: %v", err)
	}
}

// TestMasterKeyCheck: the secret record carries a check of the master key
// it was sealed with. A store given another master key says so (both
// checks, the path, what to do) before decrypting, refuses to reveal and
// to rotate (which would re-seal under a key the other nodes lack), and
// still checks HTTP callers, which needs only the hash. With the right
// key everything works as before.
func TestMasterKeyCheck(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	right, wrong := filepath.Join(dir, "right.key"), filepath.Join(dir, "wrong.key")
	e.opts.MasterKey = right
	e.reopen()
	secret, _, err := e.s.RevealSecret("admin")
	if err != nil {
		t.Fatal(err)
	}
	// Another installation's master key, a real one.
	other := newEnv(t)
	if _, _, err := other.s.RevealSecret("admin"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, wrong, readFile(t, other.masterKeyPath()))

	e.opts.MasterKey = wrong
	e.reopen()
	_, _, err = e.s.RevealSecret("admin")
	var mm *store.MasterKeyMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("reveal with the wrong master key: %v, want a MasterKeyMismatchError", err)
	}
	msg := err.Error()
	for _, want := range []string{wrong, "is not the one the shared secret was sealed with", mm.Check, mm.SealedFor} {
		if want == "" || !strings.Contains(msg, want) {
			t.Errorf("mismatch message lacks %q: %s", want, msg)
		}
	}
	if mm.Check == mm.SealedFor || len(mm.Check) != 16 {
		t.Errorf("key checks: %q vs %q", mm.Check, mm.SealedFor)
	}
	if _, _, err := e.s.RotateSecret("admin", 0); !errors.As(err, &mm) {
		t.Fatalf("rotate with the wrong master key: %v, want a refusal", err)
	}
	if !e.s.CheckSharedSecret(secret) {
		t.Fatal("HTTP callers no longer check with the wrong master key")
	}

	e.opts.MasterKey = right
	e.reopen()
	if again, _, err := e.s.RevealSecret("admin"); err != nil || again != secret {
		t.Fatalf("the refused rotation changed the secret, or the right key fails: %v", err)
	}
	if _, _, err := e.s.RotateSecret("admin", 0); err != nil {
		t.Fatalf("rotate with the right key: %v", err)
	}
}
