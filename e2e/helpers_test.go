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
	"context"
	"io"
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

// env is one isolated keyward installation, its keyward the built
// binary.
type env struct{ *testkit.CLI }

type (
	result = testkit.Result
	cliKey = testkit.CLIKey
)

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{}
	e.CLI = testkit.NewCLI(t, func(_ *testkit.CLI, stdin io.Reader, args ...string) result { return e.runBinary(stdin, args...) })
	return e
}

// command is keyward (the binary, built once per test process) in this
// env.
func (e *env) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, testkit.Binary(e.T), args...)
	cmd.Env = e.Environ()
	cmd.Dir = e.Dir
	return cmd
}

// runBinary runs keyward with stdin and waits for it.
func (e *env) runBinary(stdin io.Reader, args ...string) result {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := e.command(ctx, args...)
	cmd.Stdin = stdin
	return testkit.RunCommand(e.T, cmd)
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
	e.T.Helper()
	addr := testkit.FreeAddr(e.T)
	s := &serveProc{e: e, httpAddr: addr, logPath: filepath.Join(e.Dir, "serve.log")}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		e.T.Fatal(err)
	}
	defer logFile.Close() // the child has its own descriptor
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.T.Cleanup(cancel)
	s.cmd = e.command(ctx, append([]string{"serve", "--http", addr}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
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
			e.T.Fatalf("serve never answered /healthz: %s", s.logs())
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
	s.e.T.Helper()
	if err := s.cmd.Process.Signal(os.Interrupt); err != nil {
		s.e.T.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil {
		s.e.T.Fatalf("serve did not stop cleanly on SIGINT: %v\n%s", err, s.logs())
	}
}
