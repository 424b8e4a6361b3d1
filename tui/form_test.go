package tui

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/huh"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// openNewForm drives the root to the create form and fills the first page
// with role chosen by ups/downs from EDITOR.
func openNewForm(t *testing.T, d *driver, name string, roleMoves ...string) *keyForm {
	t.Helper()
	d.keys("n")
	f, ok := d.m.top().(*keyForm)
	if !ok {
		t.Fatalf("n opened %T, want the form", d.m.top())
	}
	d.typeText(name)
	d.keys("enter", "enter")
	d.keys(roleMoves...)
	d.keys("enter")
	return f
}

func TestFormAdminGraysOutPickers(t *testing.T) {
	st, _ := newTestStore(t)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	f := openNewForm(t, d, "admin-key", "up")
	if f.v.Role != model.RoleAdmin {
		t.Fatalf("role = %s, want ADMIN", f.v.Role)
	}
	v := ansi.Strip(d.view())
	if !strings.Contains(v, "Admins get every scope on every resource") {
		t.Fatalf("ADMIN page lacks the note:\n%s", v)
	}
	if strings.Contains(v, "None chosen means all resources") || strings.Contains(v, "[•]") {
		t.Fatalf("ADMIN page still shows the pickers:\n%s", v)
	}
	// Switching back to EDITOR brings the pickers back.
	d.keys("shift+tab")
	d.send(keyMsg("esc")) // esc cancels the whole form without writing
	if _, ok := d.m.top().(*keyForm); ok {
		t.Fatal("esc did not close the form")
	}
	if n := st.KeyCount(); n != 0 {
		t.Fatalf("cancelled form wrote %d keys", n)
	}
}

func TestFormPerResourceScopes(t *testing.T) {
	st, _ := newTestStore(t)
	cat := st.Catalog()
	v := &formValues{Role: model.RoleEditor}
	all := optionValues(scopeOptions(&cat, v))
	if !slices.Contains(all, "analytics:read") {
		t.Fatalf("no resources: account-wide scopes missing: %v", all)
	}
	v.Resources = []string{"web-shop"}
	per := optionValues(scopeOptions(&cat, v))
	for _, s := range per {
		sc, _ := cat.Scope(s)
		if !sc.PerResource {
			t.Errorf("with resources chosen, non-per-resource scope %q is offered", s)
		}
	}
	if len(per) == 0 || len(per) >= len(all) {
		t.Fatalf("per-resource scopes %v not a strict subset of %v", per, all)
	}

	// Through the UI: choose a resource, and account-wide scopes vanish.
	d := newDriver(t, newTestOptions(st, "alice"), 100, 40)
	f := openNewForm(t, d, "res-key")
	if !strings.Contains(d.view(), "analytics:read") {
		t.Fatalf("before choosing a resource, analytics:read should be offered:\n%s", d.view())
	}
	d.keys("x") // toggle web-shop
	d.send(keyMsg("enter"))
	if !slices.Equal(f.v.Resources, []string{"web-shop"}) {
		t.Fatalf("resources = %v", f.v.Resources)
	}
	view := d.view()
	if strings.Contains(view, "analytics:read") || !strings.Contains(view, "only per-resource scopes") {
		t.Fatalf("after choosing a resource the scopes page is wrong:\n%s", view)
	}
}

func TestFormReadonlyOffersOnlyReadScopes(t *testing.T) {
	st, _ := newTestStore(t)
	cat := st.Catalog()
	got := optionValues(scopeOptions(&cat, &formValues{Role: model.RoleReadonly}))
	if len(got) == 0 {
		t.Fatal("READONLY is offered no scopes")
	}
	for _, s := range got {
		if !strings.HasSuffix(s, ":read") {
			t.Errorf("READONLY offered %q", s)
		}
	}
	d := newDriver(t, newTestOptions(st, "alice"), 100, 40)
	openNewForm(t, d, "ro-key", "down")
	if v := d.view(); strings.Contains(v, ":write") || !strings.Contains(v, "READONLY: :read scopes only") {
		t.Fatalf("READONLY scopes page:\n%s", v)
	}
}

func TestFormInlineValidation(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	d.keys("n")
	d.typeText("CI-Deploy") // taken, case-insensitively
	d.keys("enter")
	v := d.view()
	if !strings.Contains(v, "already used by key") {
		t.Fatalf("taken name not flagged inline:\n%s", v)
	}
	f := d.m.top().(*keyForm)
	if err := f.fieldErr("name"); err == nil {
		t.Fatal("fieldErr(name) is nil for a taken name")
	}
	f.v.Expiry, f.v.Custom = expCustom, "2020-01-01"
	if err := f.fieldErr("expires"); err != nil {
		t.Fatalf("a custom date's error blocks the select: %v", err)
	}
	if err := f.fieldErr("custom"); err == nil || !strings.Contains(err.Error(), "not in the future") {
		t.Fatalf("past custom date: %v", err)
	}
	f.v.Custom = "next week"
	if err := f.fieldErr("custom"); err == nil || !strings.Contains(err.Error(), "YYYY-MM-DD") {
		t.Fatalf("bad custom date: %v", err)
	}
}

func optionValues(opts []huh.Option[string]) []string {
	var out []string
	for _, o := range opts {
		out = append(out, o.Value)
	}
	return out
}

func teaSize(w, h int) tea.WindowSizeMsg { return tea.WindowSizeMsg{Width: w, Height: h} }

func waitText(t *testing.T, tm *teatest.TestModel, text string) {
	t.Helper()
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return strings.Contains(string(b), text) },
		teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
}

// The edit form carries the loaded version. A change made meanwhile by
// someone else makes the save fail with a conflict shown in the form; the
// other change survives; a second, deliberate save applies over it.
func TestFormEditConflict(t *testing.T) {
	st, clk := newTestStore(t)
	keys := seedKeys(t, st, clk)
	if _, err := st.AddOperator("alice", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	k := keys["ci-deploy"]
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	d.send(pushMsg{newKeyForm(d.m.c, k)})
	f := d.m.top().(*keyForm)
	d.keys("enter", "ctrl+u") // to the description, and clear it
	d.typeText("alice's description")

	other := model.SpecOf(k)
	other.Description = "bob's description"
	if _, err := st.EditKey("bob", k.ID, k.Version, other); err != nil {
		t.Fatal(err)
	}
	// Walk through every page with enter to save.
	for i := 0; i < 10 && d.m.top() == screen(f) && f.banner == ""; i++ {
		d.keys("enter")
	}
	if !strings.Contains(f.banner, "Conflict") || !strings.Contains(f.banner, "description") {
		t.Fatalf("no conflict banner; banner=%q view:\n%s", f.banner, d.view())
	}
	if d.m.top() != screen(f) {
		t.Fatal("the form closed after a conflict")
	}
	if !strings.Contains(ansi.Strip(d.view()), "Conflict") {
		t.Fatal("the conflict is not on screen")
	}
	cur, _ := st.Key(k.ID)
	if cur.Description != "bob's description" {
		t.Fatalf("lost update: description is %q", cur.Description)
	}
	if f.v.Description != "alice's description" {
		t.Fatalf("the form lost the admin's input: %q", f.v.Description)
	}
	// Saving again is now a deliberate overwrite of the version shown.
	for i := 0; i < 10 && d.m.top() == screen(f); i++ {
		d.keys("enter")
	}
	cur, _ = st.Key(k.ID)
	if cur.Description != "alice's description" {
		t.Fatalf("second save did not apply: %q", cur.Description)
	}
}

func TestConfirmDefaultsToCancel(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
	}{{"delete", "d"}, {"toggle", "t"}, {"regenerate", "r"}} {
		t.Run(tc.name, func(t *testing.T) {
			st, clk := newTestStore(t)
			seedKeys(t, st, clk)
			d := newDriver(t, newTestOptions(st, "alice"), 80, 24)
			sel := d.m.stack[0].(*keysTable).selected()
			before, _ := st.Key(sel.ID)
			d.keys(tc.key)
			if _, ok := d.m.top().(*confirmDialog); !ok {
				t.Fatalf("%s opened %T", tc.key, d.m.top())
			}
			if !strings.Contains(d.view(), clean(sel.Name)) {
				t.Fatalf("dialog does not name the key:\n%s", d.view())
			}
			d.keys("enter") // a fresh dialog: enter presses Cancel
			if len(d.m.stack) != 1 {
				t.Fatal("enter on a fresh dialog did not close it")
			}
			after, err := st.Key(sel.ID)
			if err != nil || after.Version != before.Version {
				t.Fatalf("enter on a fresh dialog changed the key: %v", err)
			}
			d.keys(tc.key, "n")
			d.keys(tc.key, "esc")
			if after, err := st.Key(sel.ID); err != nil || after.Version != before.Version {
				t.Fatal("n or esc changed the key")
			}
			d.keys(tc.key, "y")
			after, err = st.Key(sel.ID)
			switch tc.name {
			case "delete":
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("y did not delete: %v", err)
				}
			default:
				if err != nil || after.Version == before.Version {
					t.Fatalf("y did not %s", tc.name)
				}
			}
			if tc.name == "regenerate" {
				if _, ok := d.m.top().(*reveal); !ok {
					t.Fatalf("regenerate did not reveal the new secret: %T", d.m.top())
				}
			}
		})
	}
}

// The reveal screen needs y after "Stored it?" and then forgets the token.
func TestRevealLeaveForgetsToken(t *testing.T) {
	st, _ := newTestStore(t)
	opts := newTestOptions(st, "alice")
	clip := opts.Clipboard.(*fakeClipboard)
	d := newDriver(t, opts, 80, 24)
	k, token, err := st.CreateKey("alice", model.KeySpec{Name: "x", Role: model.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	r := newReveal(d.m.c, revealKey(k, token, 0))
	d.send(pushMsg{r})
	if !strings.Contains(d.view(), token) {
		t.Fatal("token not shown")
	}
	d.keys("c")
	if clip.get() != token {
		t.Fatalf("clipboard = %q", clip.get())
	}
	d.keys("enter")
	if !strings.Contains(d.view(), "Stored it? It will not be shown again") {
		t.Fatalf("enter did not ask:\n%s", d.view())
	}
	d.keys("n")
	if d.m.top() != screen(r) || r.info.secret != token {
		t.Fatal("n left the reveal")
	}
	d.keys("esc", "y")
	if d.m.top() == screen(r) {
		t.Fatal("y did not leave")
	}
	if r.info.secret != "" || strings.Contains(d.view(), token) {
		t.Fatal("the token survived leaving the reveal screen")
	}
}

// A key name holding OSC 52 and clear-screen sequences must render inert.
func TestEscapeInjection(t *testing.T) {
	evil := "pwn\x1b]52;c;aGFja2Vk\x07\x1b[2J\x1b[H\u202eevil\x9b31m"
	k := &model.Key{ID: "key_aaaaaaaaaaaa", Name: evil, Description: evil, Role: model.RoleEditor,
		Scopes: []string{evil}, Resources: []string{evil}, Status: model.StatusActive,
		CreatedAt: testNow, CreatedBy: evil, LastUsedFrom: evil, LastUsedAt: ptime(testNow), Hint: evil, Version: 1}
	st, _ := newTestStore(t)
	opts := newTestOptions(st, "alice")
	m := newRoot(opts)
	m.Update(teaSize(120, 30))
	tbl := newKeysTable(m.c, []*model.Key{k}, nil)
	views := map[string]string{"table": tbl.View(), "detail": newDetail(m.c, k).View(),
		"delete": deleteDialog(m.c, k).View(), "form": newKeyForm(m.c, k).View()}
	for name, v := range views {
		if strings.ContainsAny(v, "\x1b\x07\x9b\u202e") {
			t.Errorf("%s view leaks a control sequence: %q", name, v)
		}
		if !strings.Contains(v, "pwn") {
			t.Errorf("%s view lost the printable part of the name", name)
		}
	}
}

// Live refresh: a key created elsewhere (another session) shows up, and
// the cursor stays on the key it was on.
func TestLiveRefreshKeepsCursor(t *testing.T) {
	st, clk := newTestStore(t)
	keys := seedKeys(t, st, clk)
	m := New(newTestOptions(st, "alice"))
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(100, 30))
	waitText(t, tm, "5 keys")
	tm.Send(keyMsg("down")) // ci-deploy
	tm.Send(keyMsg("down")) // mobile-app
	waitText(t, tm, "› mobile-app")
	// "aaa-first" sorts before everything: without care the cursor would
	// slide to another key.
	if _, _, err := st.CreateKey("alice", model.KeySpec{Name: "aaa-first", Role: model.RoleAdmin, Active: true}); err != nil {
		t.Fatal(err)
	}
	waitText(t, tm, "6 keys")
	tm.Send(keyMsg("ctrl+c"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*root)
	tbl := fm.stack[0].(*keysTable)
	if sel := tbl.selected(); sel == nil || sel.ID != keys["mobile-app"].ID {
		t.Fatalf("cursor moved to %v after a live refresh", sel)
	}
}

// TestTypedEscapesNeverEcho: control, escape and bidi characters typed or
// pasted into a text field are dropped before the field sees them, so the
// operator's own terminal never gets them back; printable text survives.
func TestTypedEscapesNeverEcho(t *testing.T) {
	st, _ := newTestStore(t)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	d.keys("n")
	d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("pay\u202eroll"), Paste: true})
	d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("\u202e")})
	d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("-\x1b]52;c;aGk=\x07x\u009b2J")})
	v := d.view()
	for _, bad := range []string{"\u202e", "\x1b]52", "52;c;aGk=", "\x07", "\u009b"} {
		if strings.Contains(v, bad) {
			t.Fatalf("typed %q reached the view:\n%q", bad, v)
		}
	}
	if !strings.Contains(v, "payroll-x") {
		t.Fatalf("printable text was lost:\n%s", v)
	}
}
