package server

import (
	"errors"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// TestSSHCommandRefused: "ssh -t host keys list" (a PTY and a command) is
// refused with a message and exit 1 instead of opening the TUI, and the
// command, which may hold a token, is not logged at all.
func TestSSHCommandRefused(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	tok, err := model.GenerateToken("")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"keys list", "verify " + tok.String()} {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.RequestPty("xterm-256color", 40, 120, gossh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		out := &testkit.SyncBuffer{} // stdout and stderr are copied by two goroutines
		sess.Stdout, sess.Stderr = out, out
		done := make(chan error, 1)
		go func() { done <- sess.Run(cmd) }()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			sess.Close()
			t.Fatalf("ssh %q did not end within 10 s (the TUI opened?); output %q", cmd, out.String())
		}
		var ee *gossh.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 1 || !strings.Contains(out.String(), "commands are not supported over SSH") {
			t.Fatalf("ssh %q: %v %q", cmd, err, out.String())
		}
		if strings.Contains(out.String(), "\x1b[?1049h") {
			t.Fatalf("ssh %q opened the TUI", cmd)
		}
		sess.Close()
	}
	// The refusal is logged by its reason; the command itself never is.
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(srv.logs.String(), "reason=command") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if logs := srv.logs.String(); strings.Count(logs, "reason=command") < 2 || strings.Contains(logs, tok.String()) || strings.Contains(logs, tok.Hint()) || strings.Contains(logs, "keys list") {
		t.Fatalf("the log must show both refusals and no command:\n%s", logs)
	}
}

// TestSSHLastUsedFollowsVerify: an open SSH TUI's Last used column shows a
// verification within about a second, not at the next flush (an hour in
// these tests).
func TestSSHLastUsedFollowsVerify(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	_, tok := env.createKey(model.KeySpec{Name: "checkout-service"})
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	v := testkit.OpenTerm(t, c)
	v.WaitText(10*time.Second, 0, "checkout-service", "Never")
	m := v.Mark()
	if res := env.st.Verify(tok, "", "", "10.1.2.3"); !res.Valid {
		t.Fatalf("verify: %+v", res)
	}
	start := time.Now()
	v.WaitText(3*time.Second, m, "just now")
	t.Logf("the Last used column changed %s after the verification", time.Since(start).Round(10*time.Millisecond))
	v.Send("\x03")
	_ = v.WaitExit(5 * time.Second)
}
