package server

import (
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// Keys as a terminal sends them.
const (
	keyEnter = "\r"
	keyUp    = "\x1b[A"
)

var tokenRE = regexp.MustCompile(`kw_[0-9A-Za-z]{49}`)

// createViaForm drives the TUI's create form in v: an ADMIN key named
// name with the default expiry, active. It returns the revealed token.
func createViaForm(t *testing.T, v *vt, name string) string {
	t.Helper()
	m := v.mark()
	v.send("n")
	v.waitText(5*time.Second, m, "New key", "Name")
	// huh moves between fields through commands, so keys are paced as a
	// person would type them rather than sent in one burst.
	v.keys(name,
		keyEnter, // -> description
		keyEnter, // -> role (EDITOR preselected)
		keyUp,    // ADMIN
		keyEnter, // -> the ADMIN access note
		keyEnter, // -> lifetime (1 year)
		keyEnter, // -> status (Active? Yes)
		keyEnter) // submit
	var tok string
	deadline := time.Now().Add(5 * time.Second)
	for tok == "" {
		tok = tokenRE.FindString(v.since(m))
		if time.Now().After(deadline) {
			t.Fatalf("no token revealed after the create form; screen:\n%s\nraw tail: %q", tail(v.since(m), 2500), tail(v.raw(), 1500))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tok
}

// TestSSHCreateCopyVerify: over a real SSH session an ADMIN creates a key
// through the form; `c` on the reveal sends the token as OSC 52 through
// the session; the token verifies over HTTP; the audit names the operator.
func TestSSHCreateCopyVerify(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{})
	v := openTerm(t, mustDial(t, env, srv, "alice", k))
	v.waitText(10*time.Second, 0, "Name")
	tok := createViaForm(t, v, "ssh-made")
	m := v.mark()
	v.send("c")
	osc := "\x1b]52;c;" + base64.StdEncoding.EncodeToString([]byte(tok)) + "\a"
	waitFor(t, 3*time.Second, "the OSC 52 copy in the session output", func() bool {
		return strings.Contains(v.raw()[m:], osc)
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
	a := openTerm(t, mustDial(t, env, srv, "alice", ka))
	b := openTerm(t, mustDial(t, env, srv, "bob", kb))
	a.waitText(10*time.Second, 0, "Name")
	b.waitText(10*time.Second, 0, "Name")

	mb := b.mark()
	createViaForm(t, a, "shared-key")
	created := time.Now()
	b.waitText(3*time.Second, mb, "shared-key")
	if d := time.Since(created); d > time.Second {
		t.Errorf("the new key took %s to appear in the other session", d)
	}

	// Leave alice's reveal: enter asks "Stored it?", y leaves.
	ma := a.mark()
	a.send(keyEnter)
	a.waitText(3*time.Second, ma, "Stored it?")
	a.send("y")
	a.waitText(3*time.Second, ma, "shared-key")

	// Both open the edit form on the only key.
	ma, mb = a.mark(), b.mark()
	a.send("e")
	b.send("e")
	a.waitText(5*time.Second, ma, "Edit shared-key")
	b.waitText(5*time.Second, mb, "Edit shared-key")
	// Alice renames the key and saves.
	saveEdit := func(v *vt, suffix string) {
		v.keys(suffix)
		for range 6 { // name -> description -> role -> note -> lifetime -> status -> submit
			v.keys(keyEnter)
		}
	}
	saveEdit(a, "-alice")
	waitFor(t, 5*time.Second, "alice's edit saved", func() bool {
		keys := env.st.Keys()
		return len(keys) == 1 && keys[0].Name == "shared-key-alice"
	})
	mb = b.mark()
	saveEdit(b, "-bob")
	b.waitText(5*time.Second, mb, "Conflict")
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

// keys sends each key after a short pause.
func (v *vt) keys(keys ...string) {
	v.t.Helper()
	for _, k := range keys {
		time.Sleep(120 * time.Millisecond)
		v.send(k)
	}
}
