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

// TestSSHSessionEndsWhenAuthorityGoes (issue 11.3): a session's authority
// is its operator account and the key that signed, not its login name.
// Deleting the operator and adding a new one of the same name, disabling
// it, demoting it, or removing the key the session logged in with each
// end the open session (with a message and exit status 1) within a
// second; sessions whose authority stands are untouched.
func TestSSHSessionEndsWhenAuthorityGoes(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	keys := map[string]testkit.SSHKey{}
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin"} {
		keys[name] = env.addOperator(name, model.OperatorAdmin)
	}
	carol2 := testkit.NewSSHKey(t)
	if _, _, err := env.st.AddOperatorKey(rootOp, "carol", carol2.Line); err != nil {
		t.Fatal(err)
	}
	srv := env.serve(Config{HTTPAddr: "-"})
	terms := map[string]*testkit.Term{}
	for name, k := range keys {
		terms[name] = testkit.OpenTerm(t, mustDial(t, env, srv, name, k))
	}
	terms["carol2"] = testkit.OpenTerm(t, mustDial(t, env, srv, "carol", carol2))
	for _, v := range terms {
		v.WaitText(10*time.Second, 0, "Name")
	}

	ends := func(who, why string, change func() error) {
		// why may list alternatives, "a|b".
		t.Helper()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		v := terms[who]
		start := time.Now()
		err := v.WaitExit(3 * time.Second)
		if d := time.Since(start); d > time.Second+500*time.Millisecond {
			t.Errorf("%s: the session took %s to end", who, d)
		}
		var ee *gossh.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
			t.Errorf("%s: want exit status 1, got %v", who, err)
		}
		said := false
		for _, w := range strings.Split(why, "|") {
			said = said || strings.Contains(v.ErrText(), w)
		}
		if !said || !strings.Contains(v.ErrText(), "session was closed") {
			t.Errorf("%s: stderr %q does not say %q", who, v.ErrText(), why)
		}
	}
	// dave is deleted and a new dave, with another key, added at once:
	// whichever the watch sees first, the old session ends.
	ends("dave", "not an operator|deleted", func() error {
		if err := env.st.DeleteOperator(rootOp, "dave"); err != nil {
			return err
		}
		_, err := env.st.AddOperator(rootOp, "dave", model.OperatorAdmin, []string{testkit.NewSSHKey(t).Line})
		return err
	})
	ends("alice", "disabled", func() error { _, err := env.st.SetOperatorDisabled(rootOp, "alice", true); return err })
	ends("bob", "READONLY", func() error { _, err := env.st.SetOperatorRole(rootOp, "bob", model.OperatorReadonly); return err })
	ends("carol", "removed", func() error {
		_, _, err := env.st.RemoveOperatorKey(rootOp, "carol", keys["carol"].Line)
		return err
	})

	// carol's other key and erin were never touched.
	time.Sleep(300 * time.Millisecond)
	for _, who := range []string{"carol2", "erin"} {
		select {
		case <-terms[who].Done():
			t.Fatalf("%s's session ended though its authority stands:\n%s", who, terms[who].ErrText())
		default:
		}
		m := terms[who].Mark()
		terms[who].Send("?")
		terms[who].WaitText(3*time.Second, m, "help")
	}
	for _, who := range []string{"dave", "alice", "bob", "carol"} {
		if !strings.Contains(srv.logs.String(), "ssh session ended user="+who) {
			t.Errorf("no log line for %s's ended session:\n%s", who, srv.logs.String())
		}
	}
	// Nothing was created on the old sessions' authority.
	if n := env.st.KeyCount(); n != 0 {
		t.Fatalf("%d keys exist", n)
	}
}
