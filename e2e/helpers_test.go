// Package e2e holds every test that runs the built keyward binary (built
// once per test process by testkit.Binary): as a child process that
// serves, is signalled, flooded or killed, runs in tmux (the TUI
// journeys, first-frame timing) or behind the real OpenSSH client, on a
// full or read-only disk. Commands that need only a database and
// stdin/stdout are tested in process, in package cli; no other package
// runs the binary (server's opt-in load comparison excepted, see
// TestLoadVerify).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

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

// environ is the subprocess environment: the test's, minus anything that
// could point keyward elsewhere, plus this env's HOME and database.
func (e *env) environ() []string { return testkit.Environ(e.dir, e.db) }

// command is keyward (the binary, built once per test process) in this
// env.
func (e *env) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, testkit.Binary(e.t), args...)
	cmd.Env = e.environ()
	cmd.Dir = e.dir
	return cmd
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs keyward with stdin and waits for it.
func (e *env) run(stdin string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := e.command(ctx, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running keyward %v: %v", args, err)
	}
	return r
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

var tokenRE = testkit.TokenRE

// testPublicKey returns a fresh "ssh-ed25519 AAAA..." line.
func testPublicKey(t *testing.T) string {
	t.Helper()
	return testkit.NewSSHKey(t).Line
}

// serveProc is a running keyward serve, HTTP only, on a free port.
type serveProc struct {
	e        *env
	cmd      *exec.Cmd
	httpAddr string
	logPath  string
}

// startServe starts serve with an HTTP listener on a free port plus args,
// and waits until it says it listens there and /healthz answers. (The
// port was free a moment ago; another test's serve may have taken it
// since, and answer /healthz in its place: the log says whose it is.)
func (e *env) startServe(args ...string) *serveProc {
	e.t.Helper()
	addr := testkit.FreeAddr(e.t)
	s := &serveProc{e: e, httpAddr: addr, logPath: filepath.Join(e.dir, "serve.log")}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer logFile.Close() // the child has its own descriptor
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
		if strings.Contains(s.logs(), "http listening on "+addr) {
			resp, err := http.Get("http://" + addr + "/healthz")
			if err == nil {
				resp.Body.Close()
				return s
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("serve never answered /healthz: %s", s.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *serveProc) logs() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// stop sends SIGINT and expects a clean exit.
func (s *serveProc) stop() {
	s.e.t.Helper()
	if err := s.cmd.Process.Signal(os.Interrupt); err != nil {
		s.e.t.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil {
		s.e.t.Fatalf("serve did not stop cleanly on SIGINT: %v\n%s", err, s.logs())
	}
}
