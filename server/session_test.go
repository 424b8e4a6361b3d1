package server

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// TestSSHCreateCopyVerify: over a real SSH session an ADMIN creates a key
// through the form; `c` on the reveal sends the token as OSC 52 through
// the session; the token verifies over HTTP; the audit names the operator.
func TestSSHCreateCopyVerify(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{})
	v := testkit.OpenTerm(t, mustDial(t, env, srv, "alice", k))
	v.WaitText(10*time.Second, 0, "Name")
	tok := v.CreateViaForm("ssh-made")
	m := v.Mark()
	v.Send("c")
	osc := "\x1b]52;c;" + base64.StdEncoding.EncodeToString([]byte(tok)) + "\a"
	testkit.WaitFor(t, 3*time.Second, "the OSC 52 copy in the session output", func() bool {
		return strings.Contains(v.Raw()[m:], osc)
	})
	c := &httpClient{t: t, base: "http://" + srv.httpAddr, c: &http.Client{Timeout: 5 * time.Second}}
	res := c.verify(env.secret(), tok, "coupons:write", "web-shop")
	if !res.Valid || res.Role != model.RoleAdmin {
		t.Fatalf("token from the SSH form: %+v", res)
	}
	key, err := env.st.Key(res.KeyID)
	if err != nil || key.Name != "ssh-made" || key.CreatedBy != "alice" {
		t.Fatalf("key %+v, %v: want ssh-made created by alice", key, err)
	}
}

// TestSSHTwoSessions: a key created in one session shows in the other
// within a second (the store's change feed), and when both edit the same
// key the second save gets the conflict message and nothing is lost.
func TestSSHTwoSessions(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	ka := env.addOperator("alice", model.OperatorAdmin)
	kb := env.addOperator("bob", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	a := testkit.OpenTerm(t, mustDial(t, env, srv, "alice", ka))
	b := testkit.OpenTerm(t, mustDial(t, env, srv, "bob", kb))
	a.WaitText(10*time.Second, 0, "Name")
	b.WaitText(10*time.Second, 0, "Name")

	mb := b.Mark()
	a.CreateViaForm("shared-key")
	created := time.Now()
	b.WaitText(3*time.Second, mb, "shared-key")
	if d := time.Since(created); d > time.Second {
		t.Errorf("the new key took %s to appear in the other session", d)
	}

	// Leave alice's reveal: enter asks "Stored it?", y leaves.
	ma := a.Mark()
	a.Send(testkit.KeyEnter)
	a.WaitText(3*time.Second, ma, "Stored it?")
	a.Send("y")
	a.WaitText(3*time.Second, ma, "shared-key")

	// Both open the edit form on the only key.
	ma, mb = a.Mark(), b.Mark()
	a.Send("e")
	b.Send("e")
	a.WaitText(5*time.Second, ma, "Edit shared-key")
	b.WaitText(5*time.Second, mb, "Edit shared-key")
	// Alice renames the key and saves.
	saveEdit := func(v *testkit.Term, suffix string) {
		v.Keys(suffix)
		for range 6 { // name -> description -> role -> note -> lifetime -> status -> submit
			v.Keys(testkit.KeyEnter)
		}
	}
	saveEdit(a, "-alice")
	testkit.WaitFor(t, 5*time.Second, "alice's edit saved", func() bool {
		keys := env.st.Keys()
		return len(keys) == 1 && keys[0].Name == "shared-key-alice"
	})
	mb = b.Mark()
	saveEdit(b, "-bob")
	b.WaitText(5*time.Second, mb, "Conflict")
	keys := env.st.Keys()
	if len(keys) != 1 || keys[0].Name != "shared-key-alice" || keys[0].Version != 2 {
		t.Fatalf("after the conflicting save: %+v (alice's edit must stand, version 2)", keys[0])
	}
	ev, _ := env.st.Audit(storeAuditFor(keys[0].ID))
	var editors []string
	for _, e := range ev {
		if e.Action == model.ActKeyEdit {
			editors = append(editors, e.Actor)
		}
	}
	if strings.Join(editors, ",") != "alice" {
		t.Fatalf("edit audit actors %v, want [alice]", editors)
	}
}
