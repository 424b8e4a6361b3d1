package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// The CLI's commands run in process through run, each test with its own
// HOME and database (testkit.Environ, read through app.getenv).

// env is one isolated keyward installation: its own HOME and database.
type env struct {
	t   *testing.T
	dir string
	db  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	return &env{t: t, dir: dir, db: filepath.Join(dir, "data", "keyward.db")}
}

// environ is the environment keyward sees: the test's, minus anything
// that could point keyward elsewhere, plus this env's HOME and database.
func (e *env) environ() []string { return testkit.Environ(e.dir, e.db) }

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs keyward in process with stdin, the way main does but with
// this env's environment, and waits for it.
func (e *env) run(stdin string, args ...string) result {
	e.t.Helper()
	return e.runFrom(strings.NewReader(stdin), args...)
}

// runFrom is run with any stdin: a pipe the test writes to later.
func (e *env) runFrom(stdin io.Reader, args ...string) result {
	e.t.Helper()
	var out, errb bytes.Buffer
	code := run(args, stdin, &out, &errb, testkit.Getenv(e.environ()))
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// ok runs keyward and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run("", args...)
	if r.code != 0 {
		e.t.Fatalf("keyward %s: %s", strings.Join(args, " "), r)
	}
	return r
}

type cliKey struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Role         string     `json:"role"`
	Scopes       []string   `json:"scopes"`
	Resources    []string   `json:"resources"`
	Status       string     `json:"status"`
	CreatedBy    string     `json:"created_by"`
	ExpiresAt    *time.Time `json:"expires_at"`
	LastUsedAt   *time.Time `json:"last_used_at"`
	LastUsedFrom string     `json:"last_used_from"`
	Token        string     `json:"token"`
}

func decode[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%s", err, r)
	}
	return v
}

// create makes a key with --json and returns it with its token.
func (e *env) create(args ...string) cliKey {
	e.t.Helper()
	k := decode[cliKey](e.t, e.ok(append([]string{"keys", "create", "--json"}, args...)...))
	if k.ID == "" || k.Token == "" {
		e.t.Fatalf("create returned no id or token: %+v", k)
	}
	return k
}

func (e *env) keys() []cliKey {
	e.t.Helper()
	return decode[[]cliKey](e.t, e.ok("keys", "list", "--json"))
}

func (e *env) key(id string) cliKey {
	e.t.Helper()
	return decode[cliKey](e.t, e.ok("keys", "show", id, "--json"))
}

func (e *env) verify(token string, args ...string) result {
	e.t.Helper()
	return e.run(token+"\n", append([]string{"verify"}, args...)...)
}

// expectCode checks a human verify result: its code on stdout and the exit
// status that goes with it.
func expectCode(t *testing.T, r result, code model.Code) {
	t.Helper()
	wantExit := 1
	if code == model.CodeValid {
		wantExit = 0
	}
	first, _, _ := strings.Cut(strings.TrimSpace(r.stdout), ":")
	if first != string(code) || r.code != wantExit {
		t.Fatalf("want %s (exit %d), got: %s", code, wantExit, r)
	}
}

var tokenRE = regexp.MustCompile(`kw_[0-9A-Za-z]{49}`)

// auditLen counts audit events.
func (e *env) auditLen() int {
	e.t.Helper()
	return len(decode[[]model.AuditEvent](e.t, e.ok("audit", "--json")))
}

// testPublicKey returns a fresh "ssh-ed25519 AAAA..." line.
func testPublicKey(t *testing.T) string {
	t.Helper()
	return testkit.NewSSHKey(t).Line
}
