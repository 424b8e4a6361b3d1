package testkit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Result is one run of keyward: what it printed and its exit status.
type Result struct {
	Stdout, Stderr string
	Code           int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// CLIKey is a key as `keyward keys ... --json` prints it.
type CLIKey struct {
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

// Decode is r's stdout as JSON of type T; it fails the test otherwise.
func Decode[T any](t testing.TB, r Result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.Stdout), &v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%s", err, r)
	}
	return v
}

// CLI is one isolated keyward installation (its own HOME and database)
// and the way a test package runs keyward in it: in process (package
// cli) or as the built binary (package e2e).
type CLI struct {
	T   *testing.T
	Dir string // HOME
	DB  string // KEYWARD_DB, under Dir
	// Exec runs keyward with args and stdin in this installation and
	// waits for it.
	Exec func(stdin io.Reader, args ...string) Result
}

// NewCLI is a fresh installation in t.TempDir() whose keyward runs
// through exec.
func NewCLI(t *testing.T, exec func(c *CLI, stdin io.Reader, args ...string) Result) *CLI {
	t.Helper()
	dir := t.TempDir()
	return NewCLIAt(t, dir, filepath.Join(dir, "data", "keyward.db"), exec)
}

// NewCLIAt is an installation with HOME dir and database db.
func NewCLIAt(t *testing.T, dir, db string, exec func(c *CLI, stdin io.Reader, args ...string) Result) *CLI {
	c := &CLI{T: t, Dir: dir, DB: db}
	c.Exec = func(stdin io.Reader, args ...string) Result { return exec(c, stdin, args...) }
	return c
}

// Environ is the environment keyward sees: the test's, minus anything
// that could point keyward elsewhere, plus this installation's HOME and
// database.
func (c *CLI) Environ() []string { return Environ(c.Dir, c.DB) }

// Run runs keyward with stdin and waits for it.
func (c *CLI) Run(stdin string, args ...string) Result {
	c.T.Helper()
	return c.Exec(strings.NewReader(stdin), args...)
}

// OK runs keyward and fails the test unless it exits 0.
func (c *CLI) OK(args ...string) Result {
	c.T.Helper()
	r := c.Run("", args...)
	if r.Code != 0 {
		c.T.Fatalf("keyward %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// Create makes a key with --json and returns it with its token.
func (c *CLI) Create(args ...string) CLIKey {
	c.T.Helper()
	k := Decode[CLIKey](c.T, c.OK(append([]string{"keys", "create", "--json"}, args...)...))
	if k.ID == "" || k.Token == "" {
		c.T.Fatalf("create returned no id or token: %+v", k)
	}
	return k
}

// Keys is `keys list --json`.
func (c *CLI) Keys() []CLIKey {
	c.T.Helper()
	return Decode[[]CLIKey](c.T, c.OK("keys", "list", "--json"))
}

// Key is `keys show id --json`.
func (c *CLI) Key(id string) CLIKey {
	c.T.Helper()
	return Decode[CLIKey](c.T, c.OK("keys", "show", id, "--json"))
}

// RunCommand runs cmd (its stdin set by the caller, if any) and returns
// its output and exit code. A command that could not run at all (not
// found, killed by its context) fails the test.
func RunCommand(t testing.TB, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v: %v", cmd.Args, err)
	}
	return r
}
