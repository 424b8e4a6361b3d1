package server

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/model"
)

// TestSSHCommandRefused: "ssh -t host keys list" (a PTY and a command) is
// refused with a message and exit 1 instead of opening the TUI, and the
// command, which may hold a token, is not logged as given.
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
		var out bytes.Buffer
		sess.Stdout, sess.Stderr = &out, &out
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
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(srv.logs.String(), tok.Hint()+"…") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if logs := srv.logs.String(); strings.Contains(logs, tok.String()) || !strings.Contains(logs, tok.Hint()+"…") {
		t.Fatalf("the log does not show the command's token as its hint:\n%s", logs)
	}
}
