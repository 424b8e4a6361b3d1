package tui

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	tea "github.com/charmbracelet/bubbletea"
	"strings"
	"testing"

	"github.com/keyward/keyward/model"
)

// fixedKeyLine is a deterministic ssh-ed25519 authorized_keys line (so
// goldens hold a stable fingerprint).
func fixedKeyLine(seed byte, comment string) string {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	pub := ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
	var blob []byte
	for _, part := range [][]byte{[]byte("ssh-ed25519"), pub} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(part)))
		blob = append(blob, part...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " " + comment
}

// TestOperatorKeysScreen (issue 12.7): the bootstrap ADMIN opens its own
// operator (enter), sees it has no key, adds one through the form, and the
// list shows its fingerprint.
func TestOperatorKeysScreen(t *testing.T) {
	st, _ := newTestStore(t)
	line := fixedKeyLine(7, "alice@laptop")
	runScreen(t, newTestOptions(st, "alice"), 100, 24, []step{
		{wait: "Press n"},
		{keys: []string{"o"}, wait: "READONLY"},
		{keys: []string{"enter"}, wait: "has no SSH key"},
		{keys: []string{"n"}, wait: "Add an SSH key to alice"},
		{text: line},
		{keys: []string{"enter"}, wait: "SHA256:"}, // the list, not the input (which shows the comment too)
	})
	op, _ := st.Operator("alice")
	if len(op.PublicKeys) != 1 || op.PublicKeys[0] != line {
		t.Fatalf("alice's keys after the form: %q", op.PublicKeys)
	}
}

// TestOperatorKeysRemoveAndSelf: an ADMIN removes another operator's key
// behind a confirm; an SSH session cannot remove the key it logged in
// with (no binding, and the store refuses).
func TestOperatorKeysRemoveAndSelf(t *testing.T) {
	st, _ := newTestStore(t)
	bobKey := fixedKeyLine(9, "bob@old-laptop")
	if _, err := st.AddOperator("alice", "bob", model.OperatorAdmin, []string{bobKey}); err != nil {
		t.Fatal(err)
	}
	aliceKey := fixedKeyLine(8, "alice@laptop")
	if _, _, err := st.AddOperatorKey("alice", "alice", aliceKey); err != nil {
		t.Fatal(err)
	}
	alice, _ := st.Operator("alice")
	pk, _ := model.ParsePublicKey(aliceKey)
	sess := model.Actor{Name: "alice", ID: alice.ID, KeyFingerprint: pk.Fingerprint()}.String()

	d := newDriver(t, newTestOptions(st, sess), 110, 30)
	if v := d.view(); !strings.Contains(v, "alice") || strings.Contains(v, "#") {
		t.Fatalf("header should name the operator only:\n%s", v)
	}
	d.keys("o", "enter") // alice, the first row
	if !strings.Contains(d.view(), "(this session)") {
		t.Fatalf("own session key not marked:\n%s", d.view())
	}
	// At 80 columns the marker still shows; only the comment is cut.
	d.send(tea.WindowSizeMsg{Width: 80, Height: 24})
	if !strings.Contains(d.view(), "(this session)") {
		t.Fatalf("own session key not marked at 80 columns:\n%s", d.view())
	}
	d.send(tea.WindowSizeMsg{Width: 110, Height: 30})
	d.keys("d")
	if _, ok := d.m.top().(*opKeysScreen); !ok {
		t.Fatalf("d on the session's own key opened %s", d.m.top().Title())
	}
	if strings.Contains(footer(d.view()), "remove key") {
		t.Errorf("footer offers to remove the session's own key:\n%s", footer(d.view()))
	}
	d.keys("esc", "down", "enter") // bob
	if !strings.Contains(d.view(), "bob@old-laptop") {
		t.Fatalf("bob's keys:\n%s", d.view())
	}
	d.keys("d")
	v := d.view()
	if !strings.Contains(v, "Remove key SHA256:") || !strings.Contains(v, "sessions that logged in with it end") {
		t.Fatalf("remove dialog:\n%s", v)
	}
	d.keys("y")
	if op, _ := st.Operator("bob"); len(op.PublicKeys) != 0 {
		t.Fatalf("bob's keys after removal: %q", op.PublicKeys)
	}
}

// TestOperatorsSelfAndConsequence (issue 12.4): on the Operators screen an
// ADMIN's own row offers no disable, role or delete (the store refuses
// them too: they could not be undone); disabling or deleting another
// operator names how many keys stop verifying.
func TestOperatorsSelfAndConsequence(t *testing.T) {
	st, _ := newTestStore(t)
	if _, err := st.AddOperator("alice", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"bob-1", "bob-2"} {
		if _, _, err := st.CreateKey("bob", model.KeySpec{Name: n, Role: model.RoleAdmin, Active: true}); err != nil {
			t.Fatal(err)
		}
	}
	d := newDriver(t, newTestOptions(st, "alice"), 110, 30)
	d.keys("o") // the cursor is on alice, first
	for _, bad := range []string{"disable", "change role", "delete"} {
		if strings.Contains(footer(d.view()), bad) {
			t.Errorf("own row offers %q:\n%s", bad, footer(d.view()))
		}
	}
	for _, k := range []string{"t", "p", "d"} {
		d.keys(k)
		if _, ok := d.m.top().(*operatorsScreen); !ok {
			t.Fatalf("%s on the own row opened %s", k, d.m.top().Title())
		}
	}
	d.keys("down") // bob
	d.keys("t")
	if v := d.view(); !strings.Contains(v, "2 keys created by bob stop verifying (CREATOR_DISABLED)") {
		t.Fatalf("disable dialog does not name the consequence:\n%s", v)
	}
	d.keys("esc", "d")
	if v := d.view(); !strings.Contains(v, "2 keys created by bob stop verifying (CREATOR_DISABLED)") {
		t.Fatalf("delete dialog does not name the consequence:\n%s", v)
	}
	d.keys("y")
	if _, err := st.Operator("bob"); err == nil {
		t.Fatal("bob was not deleted")
	}
	if op, err := st.Operator("alice"); err != nil || op.Disabled || op.Role != model.OperatorAdmin {
		t.Fatalf("alice changed: %+v %v", op, err)
	}
}

func footer(view string) string { return view[strings.LastIndex(view, "\n")+1:] }

// TestOperatorKeysTopBottom: the SSH keys list moves like every other
// list (g/G did nothing there).
func TestOperatorKeysTopBottom(t *testing.T) {
	st, _ := newTestStore(t)
	for i, c := range []string{"alice@laptop", "alice@desktop", "alice@phone"} {
		if _, _, err := st.AddOperatorKey("alice", "alice", fixedKeyLine(byte(20+i), c)); err != nil {
			t.Fatal(err)
		}
	}
	d := newDriver(t, newTestOptions(st, "alice"), 110, 30)
	d.keys("o", "enter")
	k, ok := d.m.top().(*opKeysScreen)
	if !ok || len(k.keys) != 3 {
		t.Fatalf("SSH keys screen with 3 keys: %T", d.m.top())
	}
	for _, c := range []struct {
		key  string
		want int
	}{{"G", 2}, {"g", 0}, {"pgdown", 2}, {"up", 1}, {"pgup", 0}} {
		d.keys(c.key)
		if k.cursor != c.want {
			t.Fatalf("after %s the cursor is on row %d, want %d", c.key, k.cursor, c.want)
		}
	}
}
