// Package testkit is what keyward's tests share: the keyward binary built
// once per test process, a clean environment for it, SSH key pairs, free
// 127.0.0.1 addresses, a settable clock, the demo catalog and copyFile;
// a terminal on an SSH PTY session and SSH dialing (term.go); an isolated
// installation to run the CLI in (cli.go); the bench keys (keys.go).
// Only tests import it.
package testkit

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// ModuleRoot is the directory holding keyward's go.mod.
func ModuleRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside keyward's module")
	}
	return filepath.Dir(mod), nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Binary returns the keyward binary, built on first use and shared by the
// whole test process. Main removes it at the end.
func Binary(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			bin.err = err
			return
		}
		if bin.dir, err = os.MkdirTemp("", "keyward-test-bin-"); err != nil {
			bin.err = err
			return
		}
		bin.path = filepath.Join(bin.dir, "keyward")
		build := exec.Command(goTool(), "build", "-o", bin.path, ".")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatalf("building keyward: %v", bin.err)
	}
	return bin.path
}

// Main runs the tests and removes the binary Binary built, if any. Call
// it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// scrubbed reports whether an inherited variable could point keyward
// elsewhere (its database, operator, home) or at the tester's own
// terminal, display or SSH session (the TUI's clipboard looks at those).
func scrubbed(name string) bool {
	if strings.HasPrefix(name, "KEYWARD_") {
		return true
	}
	switch name {
	case "HOME", "XDG_DATA_HOME", "DISPLAY", "WAYLAND_DISPLAY", "SSH_TTY", "SSH_CONNECTION":
		return true
	}
	return false
}

// Environ is an environment for a keyward child process: the test's own,
// minus anything that could point keyward elsewhere, plus HOME=home,
// KEYWARD_DB=db (unless empty), NO_COLOR=1 and extra ("NAME=value").
func Environ(home, db string, extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !scrubbed(name) {
			out = append(out, kv)
		}
	}
	out = append(out, "HOME="+home, "NO_COLOR=1")
	if db != "" {
		out = append(out, "KEYWARD_DB="+db)
	}
	return append(out, extra...)
}

// Getenv is Environ as a lookup function, for code that takes one in
// place of os.Getenv.
func Getenv(env []string) func(string) string {
	m := map[string]string{}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		m[name] = value
	}
	return func(name string) string { return m[name] }
}

// Without returns env minus the named variables.
func Without(env []string, drop ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			keep = keep && name != d
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// SSHKey is an ed25519 key pair.
type SSHKey struct {
	Signer gossh.Signer
	Priv   ed25519.PrivateKey
	Line   string // authorized_keys form, "ssh-ed25519 AAAA..." without comment
}

// NewSSHKey makes a fresh ed25519 key pair.
func NewSSHKey(t testing.TB) SSHKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return SSHKey{Signer: signer, Priv: priv, Line: strings.TrimSpace(string(gossh.MarshalAuthorizedKey(signer.PublicKey())))}
}

// FreeAddr returns a 127.0.0.1 address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Clock is a clock for store.Options.Now that tests set or move. Its zero
// value follows the real time; Set fixes it at a time, Advance moves it.
type Clock struct {
	mu    sync.Mutex
	fixed time.Time
	off   time.Duration
}

// NewClock returns a clock fixed at t.
func NewClock(t time.Time) *Clock { return &Clock{fixed: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fixed.IsZero() {
		return time.Now().Add(c.off)
	}
	return c.fixed.Add(c.off)
}

// Set fixes the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.fixed, c.off = t, 0
	c.mu.Unlock()
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// CatalogJSON is the demo catalog every new database gets.
func CatalogJSON(t testing.TB) []byte {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "cli", "demo_catalog.json"))
	if err != nil {
		t.Fatalf("reading the demo catalog: %v", err)
	}
	return b
}

// CopyFile copies from to a new file to (0600), synced.
func CopyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
