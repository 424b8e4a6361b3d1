package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Files beside the database, the database path and the lock message,
// through the built binary.

// TestDBPathRules (issue 12.13): --db "" is a usage error; a --db in a
// missing directory is refused and creates nothing, unless --create is
// given (then the directory is 0700). The default location is still
// created on first run.
func TestDBPathRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.run("", "--db", "", "keys", "list")
	if r.code != 2 || !strings.Contains(r.stderr, "--db needs a path") {
		t.Errorf("--db \"\": %s", r)
	}
	typo := filepath.Join(e.dir, "tpyo", "keyward.db")
	r = e.run("", "--db", typo, "keys", "list")
	if r.code != 1 || !strings.Contains(r.stderr, filepath.Dir(typo)+" does not exist") || !strings.Contains(r.stderr, "--create") {
		t.Errorf("--db in a missing directory: %s", r)
	}
	if _, err := os.Stat(filepath.Dir(typo)); !os.IsNotExist(err) {
		t.Fatalf("the missing directory was created: %v", err)
	}
	e.ok("--db", typo, "--create", "keys", "list")
	if fi, err := os.Stat(filepath.Dir(typo)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("--create made %v %v, want a 0700 directory", fi, err)
	}
	e.ok("--db", typo, "keys", "list") // it exists now

	// The default: no --db, no $KEYWARD_DB, a fresh HOME.
	home := t.TempDir()
	cmd := exec.Command(binPath, "keys", "list")
	cmd.Env = append(filterEnv(e.environ(), "KEYWARD_DB", "HOME"), "HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keys list with the default database on a fresh HOME: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(home, ".local", "share", "keyward", "keyward.db")); err != nil {
		t.Errorf("default database not created: %v", err)
	}
}

func filterEnv(env []string, drop ...string) []string {
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

// TestPlantedLockSymlinkCLI (issue 11.6): `ln -s victim keyward.db.lock;
// keyward keys list` fails with a clear error and leaves the victim as it
// was; so does a symlinked --db.
func TestPlantedLockSymlinkCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.ok("keys", "list")
	victim := filepath.Join(e.dir, "victim")
	const content = "someone else's file\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, e.db+".lock"); err != nil {
		t.Fatal(err)
	}
	r := e.run("", "keys", "list")
	if r.code != 1 || !strings.Contains(r.stderr, e.db+".lock") || !strings.Contains(r.stderr, "symbolic link") {
		t.Errorf("keys list with a planted lock symlink: %s", r)
	}
	if b, _ := os.ReadFile(victim); string(b) != content {
		t.Fatalf("the victim was overwritten: %q", b)
	}
	os.Remove(e.db + ".lock")

	link := filepath.Join(e.dir, "link.db")
	if err := os.Symlink(e.db, link); err != nil {
		t.Fatal(err)
	}
	r = e.run("", "--db", link, "keys", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "symbolic link") || !strings.Contains(r.stderr, "--db "+e.db) {
		t.Errorf("keys list through a symlinked --db: %s", r)
	}
}

// TestLooseModeWarningsCLI (issue 11.8): a database and data directory
// others can read are used with a warning on stderr; a master key others
// can read is refused when the secret is shown.
func TestLooseModeWarningsCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.ok("secret", "show")
	if r := e.ok("keys", "list"); r.stderr != "" {
		t.Fatalf("private files gave output on stderr: %s", r)
	}
	dir := filepath.Dir(e.db)
	mk := e.db + ".masterkey"
	for p, m := range map[string]os.FileMode{dir: 0o755, e.db: 0o644, mk: 0o644} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	r := e.ok("keys", "list")
	for _, want := range []string{
		"keyward: warning: directory " + dir + " has mode 0755",
		"keyward: warning: database " + e.db + " has mode 0644",
		"keyward: warning: master key: " + mk,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r)
		}
	}
	r = e.run("", "secret", "show")
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 600 "+mk) || strings.Contains(r.stdout, "kws_") {
		t.Errorf("secret show with a 0644 master key: %s", r)
	}
}

// TestLockMessageRealPort (issue 12.8): with serve --ssh 127.0.0.1:0, a
// refused command names the port the server is bound to and a login
// name: "ssh -p PORT OPERATOR@127.0.0.1", never "ssh -p 0".
func TestLockMessageRealPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.ok("keys", "list")
	srv := e.startServeArgs("--ssh", "127.0.0.1:0")
	m := regexp.MustCompile(`ssh listening on 127\.0\.0\.1:(\d+)`).FindStringSubmatch(srv.logs())
	if m == nil {
		t.Fatalf("no SSH address in the log: %s", srv.logs())
	}
	r := e.run("", "keys", "list")
	want := "ssh -p " + m[1] + " OPERATOR@127.0.0.1"
	if r.code != 1 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "-p 0 ") {
		t.Errorf("lock message lacks %q: %s", want, r)
	}
	srv.stop()
}

// startServeArgs starts serve with an HTTP listener plus args, and waits
// until /healthz answers and the log shows every listener.
func (e *env) startServeArgs(args ...string) *serveProc {
	e.t.Helper()
	addr := freeTCPAddr(e.t)
	s := &serveProc{e: e, httpAddr: addr, logPath: filepath.Join(e.dir, "serve.log")}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	s.cmd = e.command(ctx, append([]string{"serve", "--http", addr}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("serve never answered /healthz: %s", s.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeTCPAddr returns a 127.0.0.1 address that was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
