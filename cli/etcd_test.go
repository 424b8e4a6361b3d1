package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/store"
)

// runEnv runs keyward in process with e's installation plus extra
// environment variables ("NAME=value").
func (e *env) runEnv(extra []string, args ...string) result {
	e.T.Helper()
	var out, errb bytes.Buffer
	environ := append(testkit.Environ(e.Dir, e.DB), "XDG_CONFIG_HOME="+filepath.Join(e.Dir, ".config"))
	code := run(args, strings.NewReader(""), &out, &errb, testkit.Getenv(append(environ, extra...)))
	return result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// closedURL is an etcd URL nothing listens on (port 1 on loopback).
const closedURL = "http://127.0.0.1:1"

// TestEtcdFlagErrors: every wrong combination or value of the etcd flags
// and their environment variables is a usage error (exit 2) that names
// the flag or variable at fault, before anything is opened: the bbolt
// file is not created either.
func TestEtcdFlagErrors(t *testing.T) {
	e := newEnv(t)
	pw := filepath.Join(e.Dir, "pw")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--etcd", "", "keys", "list"}, "--etcd needs at least one URL"},
		{nil, []string{"--etcd", closedURL, "--db", e.DB, "keys", "list"}, "give one or the other"},
		{nil, []string{"--db", e.DB, "--etcd", closedURL, "verify"}, "give one or the other"},
		{nil, []string{"--etcd", "ftp://127.0.0.1:2379", "keys", "list"}, "--etcd: \"ftp://127.0.0.1:2379\": the scheme must be http or https"},
		{nil, []string{"--etcd", "127.0.0.1:2379", "keys", "list"}, "--etcd"},
		{nil, []string{"--etcd", "http://127.0.0.1", "keys", "list"}, "needs host:port"},
		{nil, []string{"--etcd", "http://127.0.0.1:99999", "keys", "list"}, "the port must be a number"},
		{nil, []string{"--etcd", "http://u:p@127.0.0.1:2379", "keys", "list"}, "give only scheme://host:port"},
		{nil, []string{"--etcd", "http://127.0.0.1:2379/v3", "keys", "list"}, "give only scheme://host:port"},
		{nil, []string{"--etcd", closedURL + ",", "keys", "list"}, "an empty URL"},
		{nil, []string{"--etcd", closedURL + "\x1b[31m", "keys", "list"}, "--etcd holds a control character"},
		{nil, []string{"--etcd", strings.Repeat(closedURL+",", 17) + closedURL, "keys", "list"}, "more than 16 URLs"},
		{[]string{"KEYWARD_ETCD=gopher://x:1", "KEYWARD_DB="}, []string{"keys", "list"}, "$KEYWARD_ETCD: \"gopher://x:1\""},
		{[]string{"KEYWARD_ETCD=" + closedURL}, []string{"keys", "list"}, "$KEYWARD_ETCD and $KEYWARD_DB are both set"},
		{nil, []string{"--etcd-prefix", "/x/", "keys", "list"}, "--etcd-prefix applies to an etcd cluster; give --etcd too"},
		{nil, []string{"--etcd-cacert", "ca.pem", "serve"}, "--etcd-cacert applies to an etcd cluster"},
		{nil, []string{"--etcd", closedURL, "--etcd-prefix", "keyward", "keys", "list"}, "--etcd-prefix \"keyward\" must start and end with \"/\""},
		{[]string{"KEYWARD_ETCD_PREFIX=/a\nb/"}, []string{"--etcd", closedURL, "keys", "list"}, "$KEYWARD_ETCD_PREFIX holds a control character"},
		{nil, []string{"--etcd", closedURL, "--etcd-cert", "c.pem", "keys", "list"}, "--etcd-cert and --etcd-key go together"},
		{nil, []string{"--etcd", closedURL, "--etcd-user", "bob", "keys", "list"}, "etcd user \"bob\" has no password"},
		{[]string{"KEYWARD_ETCD_PASSWORD=x"}, []string{"--etcd", closedURL, "keys", "list"}, "no user"},
		{nil, []string{"--etcd", closedURL, "--etcd-user", "bob", "--etcd-password-file", pw, "keys", "list"}, "--etcd-password-file:"},
		{nil, []string{"--etcd", closedURL, "--etcd-password", "x", "keys", "list"}, "unknown flag: --etcd-password"},
		{nil, []string{"--master-key", "/tmp/k\x07", "keys", "list"}, "--master-key holds a control character"},
		{nil, []string{"serve", "--max-staleness", "0s"}, "--max-staleness must be positive"},
		{nil, []string{"--etcd", closedURL, "--etcd-cacert", filepath.Join(e.Dir, "no-ca.pem"), "keys", "list"}, "--etcd-cacert: stat " + filepath.Join(e.Dir, "no-ca.pem")},
		{nil, []string{"--etcd", closedURL, "--etcd-cert", e.Dir, "--etcd-key", pw, "keys", "list"}, "--etcd-cert: " + e.Dir + " is not a file"},
		{nil, []string{"--etcd", closedURL, "--create", "keys", "list"}, "--create makes --db's directory"},
		{nil, []string{"--etcd", closedURL, "serve", "--max-staleness", "-1s"}, "--max-staleness must be positive"},
	} {
		r := e.runEnv(c.env, c.args...)
		if r.Code != exitUsage || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("keyward %q (env %q): want exit 2 and %q\n%s", c.args, c.env, c.want, r)
		}
		if strings.Contains(r.Stderr, "\x1b") || strings.Contains(r.Stderr, "\x07") || strings.Contains(r.Stderr, "hunter2") {
			t.Errorf("keyward %q: stderr carries a control character or the password: %q", c.args, r.Stderr)
		}
	}
	if _, err := os.Stat(e.DB); !os.IsNotExist(err) {
		t.Fatalf("a refused command created the database: %v", err)
	}
}

// TestEtcdSelectsBackend: --etcd (or $KEYWARD_ETCD) opens the cluster,
// never the bbolt file, and says which cluster failed; a flag beats the
// other backend's environment variable.
func TestEtcdSelectsBackend(t *testing.T) {
	e := newEnv(t)
	pw := filepath.Join(e.Dir, "pw")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"--etcd", closedURL, "keys", "list"}}, // --etcd beats $KEYWARD_DB
		{[]string{"KEYWARD_ETCD=" + closedURL, "KEYWARD_DB="}, []string{"--etcd-prefix", "/kw-test/", "operators", "list"}},
		{nil, []string{"--etcd", closedURL, "--etcd-user", "bob", "--etcd-password-file", pw, "audit"}},
	} {
		r := e.runEnv(c.env, c.args...)
		if r.Code != exitFailure || !strings.Contains(r.Stderr, "etcd "+closedURL+" (prefix /") {
			t.Errorf("keyward %q: want exit 1 naming the cluster\n%s", c.args, r)
		}
		if strings.Contains(r.Stderr+r.Stdout, "hunter2") {
			t.Errorf("the etcd password leaked: %s", r)
		}
	}
	if _, err := os.Stat(e.DB); !os.IsNotExist(err) {
		t.Fatalf("with --etcd the bbolt file was created: %v", err)
	}
	// --db beats $KEYWARD_ETCD.
	if r := e.runEnv([]string{"KEYWARD_ETCD=" + closedURL}, "--db", e.DB, "--create", "keys", "list"); r.Code != 0 {
		t.Fatalf("--db with $KEYWARD_ETCD set: %s", r)
	}
}

// TestEtcdHelp: the global help lists every etcd flag, and none takes a
// password value; serve's help lists --max-staleness; verify documents
// exit status 3.
func TestEtcdHelp(t *testing.T) {
	e := newEnv(t)
	root := e.OK("--help").Stdout
	for _, f := range []string{"--etcd ", "--etcd-prefix", "--etcd-cacert", "--etcd-cert", "--etcd-key", "--etcd-user", "--etcd-password-file", "--master-key", "KEYWARD_ETCD_PASSWORD", "Running a cluster"} {
		if !strings.Contains(root, f) {
			t.Errorf("keyward --help lacks %s", f)
		}
	}
	if serve := e.OK("serve", "--help").Stdout; !strings.Contains(serve, "--max-staleness") || !strings.Contains(serve, "503") {
		t.Errorf("serve --help lacks --max-staleness and the 503:\n%s", serve)
	}
	if v := e.OK("verify", "--help").Stdout; !strings.Contains(v, "3 STALE") {
		t.Errorf("verify --help lacks exit status 3")
	}
}

// TestMasterKeyFlag: --master-key (or $KEYWARD_MASTER_KEY) names the file
// that seals the shared secret, created 0600 on first use; another node's
// file (here: another master key on the same database) is refused loudly
// for show and rotate, and secret info names the file in use.
func TestMasterKeyFlag(t *testing.T) {
	e := newEnv(t)
	e.OK("keys", "list") // creates the database
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	r := e.runEnv(nil, "--master-key", a, "secret", "show", "--json")
	if r.Code != 0 {
		t.Fatal(r)
	}
	secret := testkit.Decode[secretJSON](t, r).Secret
	if fi, err := os.Stat(a); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--master-key file: %v %v", fi, err)
	}
	if r := e.runEnv([]string{"KEYWARD_MASTER_KEY=" + a}, "secret", "show", "--json"); r.Code != 0 || testkit.Decode[secretJSON](t, r).Secret != secret {
		t.Fatalf("$KEYWARD_MASTER_KEY: %s", r)
	}
	// b: a master key of its own (made by rotating another database).
	other := newEnv(t)
	other.OK("keys", "list")
	if r := other.runEnv(nil, "--master-key", b, "secret", "show"); r.Code != 0 {
		t.Fatal(r)
	}
	for _, args := range [][]string{{"secret", "show"}, {"secret", "rotate"}} {
		r := e.runEnv(nil, append([]string{"--master-key", b}, args...)...)
		if r.Code != 1 || !strings.Contains(r.Stderr, "master key "+b+" is not the one the shared secret was sealed with") || strings.Contains(r.Stdout, "kws_") {
			t.Errorf("%v with another master key: %s", args, r)
		}
	}
	if r := e.runEnv(nil, "--master-key", b, "secret", "info"); r.Code != 0 || !strings.Contains(r.Stdout, b) {
		t.Errorf("secret info does not name the master key in use: %s", r)
	}
	if r := e.runEnv(nil, "--master-key", a, "secret", "show", "--json"); r.Code != 0 || testkit.Decode[secretJSON](t, r).Secret != secret {
		t.Fatalf("the refused rotation changed the secret: %s", r)
	}
}

// TestMigrateRefusals: migrate needs --etcd (usage error), refuses a
// missing FROM-DB without creating it, and one held by another keyward
// process (a serve, a TUI) as in use, naming the holder.
func TestMigrateRefusals(t *testing.T) {
	e := newEnv(t)
	e.OK("--create", "keys", "list")
	if r := e.runEnv(nil, "migrate", e.DB); r.Code != exitUsage || !strings.Contains(r.Stderr, "give --etcd") {
		t.Errorf("migrate without --etcd: %s", r)
	}
	missing := filepath.Join(e.Dir, "nope.db")
	if r := e.runEnv(nil, "--etcd", closedURL, "migrate", missing); r.Code != exitFailure || !strings.Contains(r.Stderr, "no keyward database at "+missing) {
		t.Errorf("migrate from a missing file: %s", r)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("migrate created its source: %v", err)
	}
	held, err := store.Open(e.DB, store.Options{Lock: store.LockInfo{Command: "keyward serve"}, Warn: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if r := e.runEnv(nil, "--etcd", closedURL, "migrate", e.DB); r.Code != exitFailure || !strings.Contains(r.Stderr, "is in use by another keyward process") {
		t.Errorf("migrate from a held database: %s", r)
	}
	if h := e.OK("--help").Stdout; !strings.Contains(h, "migrate") {
		t.Errorf("keyward --help does not list migrate")
	}
}
