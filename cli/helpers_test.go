package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// The CLI's commands run in process through run, each test with its own
// HOME and database (testkit.Environ, read through app.getenv).

// env is one isolated keyward installation, its keyward run in process.
type env struct{ *testkit.CLI }

type (
	result = testkit.Result
	cliKey = testkit.CLIKey
)

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{testkit.NewCLI(t, runInProcess)}
}

// runInProcess runs keyward in process with stdin, the way main does but
// with c's environment, and waits for it.
func runInProcess(c *testkit.CLI, stdin io.Reader, args ...string) result {
	var out, errb bytes.Buffer
	code := run(args, stdin, &out, &errb, testkit.Getenv(c.Environ()))
	return result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

func (e *env) verify(token string, args ...string) result {
	e.T.Helper()
	return e.Run(token+"\n", append([]string{"verify"}, args...)...)
}

// expectCode checks a human verify result: its code on stdout and the exit
// status that goes with it.
func expectCode(t *testing.T, r result, code model.Code) {
	t.Helper()
	wantExit := 1
	if code == model.CodeValid {
		wantExit = 0
	}
	first, _, _ := strings.Cut(strings.TrimSpace(r.Stdout), ":")
	if first != string(code) || r.Code != wantExit {
		t.Fatalf("want %s (exit %d), got: %s", code, wantExit, r)
	}
}

var tokenRE = testkit.TokenRE

// auditLen counts audit events.
func (e *env) auditLen() int {
	e.T.Helper()
	return len(testkit.Decode[[]model.AuditEvent](e.T, e.OK("audit", "--json")))
}

// testPublicKey returns a fresh "ssh-ed25519 AAAA..." line.
func testPublicKey(t *testing.T) string {
	t.Helper()
	return testkit.NewSSHKey(t).Line
}
