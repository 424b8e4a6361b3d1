package store_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/keyward/keyward/store"
)

// warnings collects Options.Warn calls.
type warnings struct {
	mu  sync.Mutex
	got []string
}

func (w *warnings) warn(msg string) { w.mu.Lock(); w.got = append(w.got, msg); w.mu.Unlock() }

func (w *warnings) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.got, "\n")
}

func openOpts(w *warnings) store.Options {
	return store.Options{Bootstrap: "admin", Warn: w.warn}
}

// victim is a file owned by "someone else" that a planted link points at:
// it must come out of every test byte for byte.
func victim(t *testing.T) (string, func()) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "victim")
	const content = "root's file: must not change\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil || string(b) != content {
			t.Fatalf("the victim file was changed: %q %v", b, err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
			t.Fatalf("the victim file's mode was changed: %v", fi.Mode())
		}
	}
}

// TestPlantedLockSymlink: a symbolic link planted as <db>.lock (issue
// 11.6: `ln -s victim keyward.db.lock; keyward keys list` overwrote the
// victim) is refused with a clear error, and the victim is untouched. The
// same for a hard link to the victim, and a FIFO (which must not hang).
func TestPlantedLockSymlink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keyward.db")
	s, err := store.Open(path, store.Options{Bootstrap: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	vpath, check := victim(t)
	if err := os.Symlink(vpath, path+".lock"); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(path, store.Options{Bootstrap: "admin"})
	if !errors.Is(err, store.ErrUnsafeFile) || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), path+".lock") {
		t.Fatalf("Open with a planted lock symlink: %v", err)
	}
	check()
	if fi, err := os.Lstat(path + ".lock"); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("the planted link itself should be left for the owner to look at: %v", err)
	}

	// A dangling link (the victim does not exist yet) is not created either.
	os.Remove(path + ".lock")
	ghost := filepath.Join(t.TempDir(), "ghost")
	if err := os.Symlink(ghost, path+".lock"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(path, store.Options{Bootstrap: "admin"}); !errors.Is(err, store.ErrUnsafeFile) {
		t.Fatalf("Open with a dangling lock symlink: %v", err)
	}
	if _, err := os.Lstat(ghost); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the link's target was created: %v", err)
	}

	// A hard link to a file of ours that is linked elsewhere.
	os.Remove(path + ".lock")
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(other, path+".lock"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(path, store.Options{Bootstrap: "admin"}); !errors.Is(err, store.ErrUnsafeFile) || !strings.Contains(err.Error(), "hard links") {
		t.Fatalf("Open with a hard-linked lock file: %v", err)
	}
	if b, _ := os.ReadFile(other); string(b) != "keep" {
		t.Fatalf("the hard-linked file was changed: %q", b)
	}

	// A FIFO: refused, without hanging.
	os.Remove(path + ".lock")
	if err := syscall.Mkfifo(path+".lock", 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(path, store.Options{Bootstrap: "admin"}); !errors.Is(err, store.ErrUnsafeFile) {
		t.Fatalf("Open with a FIFO lock file: %v", err)
	}

	// Once the planted file is gone, the database opens.
	os.Remove(path + ".lock")
	s, err = store.Open(path, store.Options{Bootstrap: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestSymlinkedDatabaseRefused: the database path itself is not followed
// through a symbolic link; the error names the real path to use instead.
func TestSymlinkedDatabaseRefused(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.db")
	s, err := store.Open(real, store.Options{Bootstrap: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	before, _ := os.ReadFile(real)
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(link, store.Options{Bootstrap: "admin"})
	if !errors.Is(err, store.ErrUnsafeFile) || !strings.Contains(err.Error(), "--db "+real) {
		t.Fatalf("Open through a symlink: %v", err)
	}
	if _, err := store.Peek(link, 10, store.Options{}); !errors.Is(err, store.ErrUnsafeFile) {
		t.Fatalf("Peek through a symlink: %v", err)
	}
	if after, _ := os.ReadFile(real); string(after) != string(before) {
		t.Fatal("the target database was changed")
	}
	// A planted link to a victim (an empty file would otherwise become a
	// database) is refused the same way.
	vpath, check := victim(t)
	planted := filepath.Join(dir, "planted.db")
	if err := os.Symlink(vpath, planted); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(planted, store.Options{Bootstrap: "admin"}); !errors.Is(err, store.ErrUnsafeFile) {
		t.Fatalf("Open of a planted link: %v", err)
	}
	check()
	if _, err := os.Lstat(planted + ".lock"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a lock file was written beside a refused database: %v", err)
	}
}

// TestLooseModes (issue 11.8): a database or data directory others can
// read is used with a warning; a master key others can read is refused
// (warned about at open, refused when the secret is revealed or rotated),
// as the SSH host key is; a planted master key symlink is refused.
func TestLooseModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "keyward.db")
	var w warnings
	s, err := store.Open(path, openOpts(&w))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RevealSecret("admin"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := w.all(); got != "" {
		t.Fatalf("private files gave warnings: %s", got)
	}

	mk := store.MasterKeyPath(path)
	for _, c := range []struct{ path string }{{dir}, {path}, {mk}} {
		mode := os.FileMode(0o644)
		if c.path == dir {
			mode = 0o755
		}
		if err := os.Chmod(c.path, mode); err != nil {
			t.Fatal(err)
		}
	}
	w = warnings{}
	s, err = store.Open(path, openOpts(&w))
	if err != nil {
		t.Fatal(err)
	}
	got := w.all()
	for _, want := range []string{
		"directory " + dir + " has mode 0755",
		"database " + path + " has mode 0644",
		"master key: " + mk + ": unsafe file: it has mode 0644",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	if _, _, err := s.RevealSecret("admin"); !errors.Is(err, store.ErrUnsafeFile) || !strings.Contains(err.Error(), "chmod 600 "+mk) {
		t.Errorf("reveal with a 0644 master key: %v", err)
	}
	if _, _, err := s.RotateSecret("admin", 0); !errors.Is(err, store.ErrUnsafeFile) {
		t.Errorf("rotate with a 0644 master key: %v", err)
	}
	s.Close()

	// A master key replaced by a symlink to someone's file is refused,
	// not read (nor written to).
	vpath, check := victim(t)
	os.Remove(mk)
	if err := os.Symlink(vpath, mk); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(path, openOpts(&warnings{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RotateSecret("admin", 0); !errors.Is(err, store.ErrUnsafeFile) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("rotate with a symlinked master key: %v", err)
	}
	s.Close()
	check()
}

// TestNoCreateDir (issue 12.13): with NoCreateDir a database in a missing
// directory is refused and nothing is created; an empty path is refused.
func TestNoCreateDir(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "typo", "keyward.db")
	_, err := store.Open(missing, store.Options{Bootstrap: "admin", NoCreateDir: true})
	var nd *store.NoDirError
	if !errors.As(err, &nd) || nd.Dir != filepath.Dir(missing) {
		t.Fatalf("Open in a missing dir: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the directory was created: %v", err)
	}
	if _, err := store.Open("", store.Options{Bootstrap: "admin"}); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}

// TestLockAdvertisesBoundSSH (issue 12.8): the lock message names the
// port the server is bound to and a login name, not the configured :0.
func TestLockAdvertisesBoundSSH(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyward.db")
	s, err := store.Open(path, store.Options{Bootstrap: "admin", Lock: store.LockInfo{Command: "keyward serve", SSHAddr: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AdvertiseSSH("127.0.0.1:40123"); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(path, store.Options{Bootstrap: "admin", Timeout: 100e6})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "ssh -p 40123 OPERATOR@127.0.0.1") {
		t.Fatalf("lock message %q", msg)
	}
	for addr, want := range map[string]string{
		"0.0.0.0:2222": "ssh -p 2222 OPERATOR@localhost",
		"[::]:2222":    "ssh -p 2222 OPERATOR@localhost",
		"[::1]:2200":   "ssh -p 2200 OPERATOR@::1",
	} {
		le := &store.LockedError{Path: "/x/k.db", Holder: &store.LockInfo{PID: 42, Command: "keyward serve", SSHAddr: addr}}
		if msg := le.Error(); !strings.Contains(msg, want) {
			t.Errorf("%s: message %q lacks %q", addr, msg, want)
		}
	}
	le := &store.LockedError{Path: "/x/k.db", Holder: &store.LockInfo{PID: 42, Command: "keyward serve", SSHAddr: "127.0.0.1:0"}}
	if msg := le.Error(); strings.Contains(msg, "ssh -p") {
		t.Errorf("a :0 address still gives an ssh hint: %q", msg)
	}
}
