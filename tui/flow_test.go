package tui

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Tests of the form and screen-refresh flows (issue 12 items 1, 2, 9).

// toLifetime walks a fresh form (create or edit of an EDITOR key) with
// enter from the name field to the Expires select.
func toLifetime(t *testing.T, d *driver, f *keyForm) {
	t.Helper()
	for i := 0; i < 8 && !strings.Contains(d.view(), "Lifetime"); i++ {
		if f.form.GetFocusedField().GetKey() == "scopes" && len(f.v.Scopes) == 0 {
			d.keys("x") // tick the first scope
		}
		d.keys("enter")
	}
	if !strings.Contains(d.view(), "Expires") {
		t.Fatalf("did not reach the Expires select:\n%s", d.view())
	}
}

// chooseExpiry moves the Expires select to option i (0 = top).
func chooseExpiry(d *driver, i int) {
	d.send(tea.KeyMsg{Type: tea.KeyHome})
	for ; i > 0; i-- {
		d.keys("down")
	}
}

// TestFormEveryExpiryChoice: every Expires option, in create and in
// edit, saves the expiry it names. "Custom date…" shows a date field after
// the select (before the fix the select refused enter with "enter a date
// as YYYY-MM-DD" and the field never appeared).
func TestFormEveryExpiryChoice(t *testing.T) {
	now := testNow // the form's clock
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	custom := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	type choice struct {
		name string
		idx  int
		want func(orig *model.Key) *time.Time
	}
	create := []choice{
		{"30d", 0, func(*model.Key) *time.Time { return at(day(30)) }},
		{"90d", 1, func(*model.Key) *time.Time { return at(day(90)) }},
		{"1y", 2, func(*model.Key) *time.Time { return at(model.DefaultLifetime) }},
		{"custom", 3, func(*model.Key) *time.Time { return &custom }},
		{"never", 4, func(*model.Key) *time.Time { return nil }},
	}
	edit := []choice{{"keep", 0, func(k *model.Key) *time.Time { return k.ExpiresAt }}}
	for _, c := range create {
		c.idx++
		edit = append(edit, c)
	}
	for _, mode := range []string{"create", "edit"} {
		list := create
		if mode == "edit" {
			list = edit
		}
		for _, c := range list {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				t.Parallel() // each waits out cursor blinks in the driver
				st, clk := newTestStore(t)
				keys := seedKeys(t, st, clk)
				d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
				var orig *model.Key
				if mode == "create" {
					d.keys("n")
					d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("expiry-" + c.name)})
				} else {
					orig = keys["ci-deploy"]
					d.send(pushMsg{newKeyForm(d.m.c, orig)})
					d.keys("ctrl+u")
					d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("expiry-" + c.name)})
				}
				f := d.m.top().(*keyForm)
				toLifetime(t, d, f)
				chooseExpiry(d, c.idx)
				d.keys("enter")
				if c.name == "custom" {
					v := ansi.Strip(d.view())
					if !strings.Contains(v, "Expiry date (UTC)") {
						t.Fatalf("Custom date… chosen, enter pressed: no date field:\n%s", v)
					}
					d.keys("ctrl+u")
					d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("2026-03-04")})
					d.keys("enter")
				}
				if v := ansi.Strip(d.view()); !strings.Contains(v, "Active?") {
					t.Fatalf("after the expiry the form is not on Active?:\n%s", v)
				}
				d.keys("enter")
				id, ok := st.KeyIDByName("expiry-" + c.name)
				if !ok {
					t.Fatalf("no key saved; view:\n%s", d.view())
				}
				k, _ := st.Key(id)
				if got, want := model.FormatTime(k.ExpiresAt, "never"), model.FormatTime(c.want(orig), "never"); got != want {
					t.Fatalf("expires %s, want %s", got, want)
				}
			})
		}
	}
}

// TestFormCustomDateErrorsOnTheDateField: a bad or past custom date is
// refused on the date field (the form stays there), never on the select;
// no error shows before the admin has typed; and shift+tab leads back to
// the select (huh refuses to leave a group holding an error) to choose
// another expiry.
func TestFormCustomDateErrorsOnTheDateField(t *testing.T) {
	st, _ := newTestStore(t)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	d.keys("n")
	d.typeText("bad-date")
	f := d.m.top().(*keyForm)
	toLifetime(t, d, f)
	chooseExpiry(d, 3)
	d.keys("enter")
	if v := ansi.Strip(d.view()); !strings.Contains(v, "Expiry date (UTC)") || strings.Contains(v, "YYYY-MM-DD,") {
		t.Fatalf("date field missing, or an error before anything was typed:\n%s", v)
	}
	// The placeholder shows the format whole (huh narrows an input to its
	// character limit, which cut it to "YYYY-MM…").
	if v := ansi.Strip(d.view()); !strings.Contains(v, "> YYYY-MM-DD") {
		t.Fatalf("the date field's placeholder is not shown whole:\n%s", v)
	}
	for _, in := range []string{"next week", "2020-01-01"} {
		d.keys("ctrl+u")
		d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(in)})
		d.keys("enter")
		v := ansi.Strip(d.view())
		if !strings.Contains(v, "Expiry date (UTC)") || strings.Contains(v, "Active?") {
			t.Fatalf("date %q accepted or field left:\n%s", in, v)
		}
		if !strings.Contains(v, "YYYY-MM-DD,") && !strings.Contains(v, "not in the future") {
			t.Fatalf("date %q: no error shown:\n%s", in, v)
		}
	}
	d.keys("shift+tab")
	if v := ansi.Strip(d.view()); !strings.Contains(v, "> Custom date") {
		t.Fatalf("shift+tab did not lead back to the select:\n%s", v)
	}
	chooseExpiry(d, 1)
	d.keys("enter", "enter")
	if _, ok := d.m.top().(*reveal); !ok {
		t.Fatalf("not saved after choosing 90 days: %T\n%s", d.m.top(), d.view())
	}
	id, _ := st.KeyIDByName("bad-date")
	if k, _ := st.Key(id); k == nil || model.FormatTime(k.ExpiresAt, "never") != model.FormatTime(ptime(testNow.Add(day(90))), "never") {
		t.Fatalf("saved %+v", k)
	}
}

// TestFormNoErrorBeforeInput: arriving on the Access page shows no
// "choose at least one scope" before the admin has done anything, and
// shift+tab from an empty Scopes leads back to Resources.
func TestFormNoErrorBeforeInput(t *testing.T) {
	st, _ := newTestStore(t)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	d.keys("n")
	d.typeText("k")
	d.keys("enter", "enter", "enter")
	if v := ansi.Strip(d.view()); !strings.Contains(v, "None chosen means all resources") || strings.Contains(v, "choose at least one scope") {
		t.Fatalf("Access page on arrival:\n%s", v)
	}
	d.keys("enter", "enter") // no scope ticked: refused, on the field
	if v := ansi.Strip(d.view()); !strings.Contains(v, "choose at least one scope") {
		t.Fatalf("no scope chosen, no error:\n%s", v)
	}
	d.keys("shift+tab", "x") // back on Resources: tick web-shop
	f := d.m.top().(*keyForm)
	if len(f.v.Resources) != 1 {
		t.Fatalf("shift+tab did not lead back to Resources: resources %v\n%s", f.v.Resources, d.view())
	}
}

// TestFormCustomDateTeatest drives the custom date through a real
// program and goldens the date field.
func TestFormCustomDateTeatest(t *testing.T) {
	st, _ := newTestStore(t)
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(100, 30))
	waitText(t, tm, "Press n")
	step := func(want string, keys ...tea.Msg) {
		t.Helper()
		for _, k := range keys {
			tm.Send(k)
		}
		waitText(t, tm, want)
	}
	step("Description", keyMsg("n"))
	step("Role", tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("dated-key")}, keyMsg("enter"), keyMsg("enter"))
	step("None chosen means all resources", keyMsg("enter"))
	step("┃ Scopes", keyMsg("enter"))
	step("Lifetime", keyMsg("x"), keyMsg("enter"))
	step("> Custom date", keyMsg("down"))
	step("Expiry date (UTC)", keyMsg("enter"))
	step("2026-03-04", tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("2026-03-04")})
	step("Active?", keyMsg("enter"))
	step("expires 2026-03-04", keyMsg("enter"))
	tm.Send(keyMsg("ctrl+c"))
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	id, ok := st.KeyIDByName("dated-key")
	if !ok {
		t.Fatal("no key saved")
	}
	k, _ := st.Key(id)
	if model.FormatDate(k.ExpiresAt, "never") != "2026-03-04" {
		t.Fatalf("expires %s", model.FormatDate(k.ExpiresAt, "never"))
	}

	// The date field, as the admin sees it (edit form, prefilled).
	d := newDriver(t, newTestOptions(st, "alice"), 100, 24)
	d.send(pushMsg{newKeyForm(d.m.c, k)})
	toLifetime(t, d, d.m.top().(*keyForm))
	chooseExpiry(d, 4)
	d.keys("enter")
	requireGolden(t, d.view())
}

// TestFormSelectIgnoresSlash: "/" on a select never opens huh's hidden
// filter (it re-enabled itself after an enter), whose esc then cancelled
// the whole form and lost the input.
func TestFormSelectIgnoresSlash(t *testing.T) {
	st, _ := newTestStore(t)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	d.keys("n")
	d.typeText("keep-me")
	f := d.m.top().(*keyForm)
	toLifetime(t, d, f)
	chooseExpiry(d, 3)
	d.keys("enter", "shift+tab") // an enter on the select, then back to it
	if v := ansi.Strip(d.view()); !strings.Contains(v, "Expires") {
		t.Fatalf("not back on the select:\n%s", v)
	}
	d.keys("/")
	if v := ansi.Strip(d.view()); strings.Contains(v, "┃ /") || !strings.Contains(v, "Expires") {
		t.Fatalf("/ opened the select's filter:\n%s", v)
	}
	d.keys("esc") // esc still cancels the form, as the footer says
	if d.m.top() == screen(f) {
		t.Fatal("esc did not cancel the form")
	}

	// The operator form's role select, the same way.
	d.keys("o", "n")
	d.typeText("eve")
	d.keys("enter", "enter", "shift+tab", "/")
	if v := ansi.Strip(d.view()); strings.Contains(v, "┃ /") || !strings.Contains(v, "Role") {
		t.Fatalf("/ opened the role select's filter:\n%s", v)
	}
	d.keys("shift+tab") // "/" went nowhere: the name is intact
	if v := ansi.Strip(d.view()); !strings.Contains(v, "eve") {
		t.Fatalf("input lost:\n%s", v)
	}
}

// TestRegenerateEveryGraceChoice: each grace choice of the regenerate
// dialog gives the old secret that long.
func TestRegenerateEveryGraceChoice(t *testing.T) {
	for i, g := range graceChoices {
		t.Run(fmtGrace(g), func(t *testing.T) {
			st, clk := newTestStore(t)
			keys := seedKeys(t, st, clk)
			k := keys["ci-deploy"]
			d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
			d.send(pushMsg{newDetail(d.m.c, k)})
			d.keys("r")
			for j := 0; j < i; j++ {
				d.keys("down")
			}
			d.keys("y")
			if _, ok := d.m.top().(*reveal); !ok {
				t.Fatalf("no reveal after regenerate: %T", d.m.top())
			}
			nk, _ := st.Key(k.ID)
			var want *time.Time
			if g > 0 {
				x := clk.Now().Add(g)
				want = &x
			}
			if model.FormatTime(nk.GraceUntil, "never") != model.FormatTime(want, "never") || nk.Hint == k.Hint {
				t.Fatalf("grace until %s, want %s (hint %s → %s)", model.FormatTime(nk.GraceUntil, "never"), model.FormatTime(want, "never"), k.Hint, nk.Hint)
			}
			note := "stopped working now"
			if g > 0 {
				note = "keeps working until " + model.FormatTime(want, "never")
			}
			if v := ansi.Strip(d.view()); !strings.Contains(v, note) {
				t.Fatalf("reveal does not say %q:\n%s", note, v)
			}
		})
	}
}

// teaSteps drives a teatest model: send keys, then wait for text that
// the step newly draws (the output is a stream: waited-for text is gone).
func teaSteps(t *testing.T, tm *teatest.TestModel) func(want string, keys ...string) {
	return func(want string, keys ...string) {
		t.Helper()
		for _, k := range keys {
			tm.Send(keyMsg(k))
		}
		waitText(t, tm, want)
	}
}

// TestDetailRefreshesAfterRegenerate: after r on the key detail, the
// detail shows the new hint and version, the regenerate in its history
// and a change another admin made while the reveal screen was open; the
// next e edits that version: no conflict with oneself. (Before, a reload's
// result went to whatever screen was on top, the reveal, and was dropped:
// always for the feed's reload, and by a race for the reload after r.)
func TestDetailRefreshesAfterRegenerate(t *testing.T) {
	st, clk := newTestStore(t)
	keys := seedKeys(t, st, clk)
	k := keys["ci-deploy"]
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(100, 36))
	step := teaSteps(t, tm)
	step("5 keys")
	step("(version 1)", "down", "enter")
	step("Regenerate the secret", "r")
	step("Your new API key", "y")
	// Meanwhile another admin edits the key: the change feed reloads the
	// detail under the reveal screen.
	if _, err := st.AddOperator("alice", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	cur, _ := st.Key(k.ID)
	spec := model.SpecOf(cur)
	spec.Description = "edited by bob"
	if _, err := st.EditKey("bob", k.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * feedCoalesce) // the feed's reload lands while the reveal is on top
	step("Stored it?", "enter")
	step("edited by bob", "y")
	nk, _ := st.Key(k.ID)
	step("Edit ci-deploy", "e")
	for _, field := range []string{"Description", "Role", "Resources", "Scopes", "Expires", "Active?"} {
		step("┃ "+field, "enter")
	}
	step("Saved key", "enter")
	tm.Send(keyMsg("ctrl+c"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*root)
	d, ok := fm.top().(*detail)
	if !ok {
		t.Fatalf("top screen is %T, want the detail", fm.top())
	}
	if d.key.Version != nk.Version || d.key.Hint != nk.Hint {
		t.Fatalf("detail shows version %d hint %s, store has %d %s", d.key.Version, d.key.Hint, nk.Version, nk.Hint)
	}
	if len(d.events) < 2 || d.events[1].Action != model.ActKeyRegenerate {
		t.Fatalf("history does not start with the regenerate: %+v", d.events)
	}
	if strings.Contains(ansi.Strip(fm.View()), "Conflict") {
		t.Fatalf("false conflict:\n%s", fm.View())
	}
}

// TestSecretScreenRefreshesAfterRevealAndRotate: the reveal that
// generates the first secret, a rotate elsewhere while the reveal screen
// is open, and a rotate here all show on the secret screen once the
// reveal screen is left.
func TestSecretScreenRefreshesAfterRevealAndRotate(t *testing.T) {
	st, _ := newTestStore(t)
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(100, 30))
	step := teaSteps(t, tm)
	step("Press n")
	step("No shared secret yet", "s")
	step("Reveal the shared secret?", "v")
	step("Services send it as", "y")
	// Meanwhile the secret is rotated elsewhere (the CLI, another session):
	// the feed reloads the secret screen under the reveal screen.
	if _, _, err := st.RotateSecret("alice", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * feedCoalesce)
	step("Stored it?", "enter")
	m1, _ := st.SecretInfo()
	step(clean(m1.Hint)+"…", "y")
	step("Rotate the shared secret?", "r")
	step("New shared secret", "down", "y") // grace: 1 hour
	step("Stored it?", "enter")
	m2, _ := st.SecretInfo()
	if m2.Hint == m1.Hint {
		t.Fatal("rotate did not change the hint")
	}
	step(clean(m2.Hint)+"…", "y")
	tm.Send(keyMsg("ctrl+c"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*root)
	if _, ok := fm.top().(*secretScreen); !ok {
		t.Fatalf("top screen is %T", fm.top())
	}
	v := ansi.Strip(fm.View())
	if strings.Contains(v, "No shared secret yet") || strings.Contains(v, "Rotated       never") {
		t.Fatalf("stale secret screen:\n%s", v)
	}
	requireGolden(t, fm.View())
}

// readOnlyStore reopens a seeded database after making its file
// unwritable: chmod 0400, or chattr +i where permissions do not bind
// (root). It fails, never skips, if neither gives a read-only store.
func readOnlyStore(t *testing.T) *store.Store {
	t.Helper()
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	path := st.Path()
	st.Close()
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	open := func() *store.Store {
		ro, err := store.Open(path, store.Options{Now: clk.Now, FlushInterval: time.Hour, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ro.Close() })
		return ro
	}
	ro := open()
	if !ro.ReadOnly() {
		ro.Close()
		if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
			t.Fatalf("chmod 0400 does not bind (root) and chattr +i failed: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", path).Run() })
		if ro = open(); !ro.ReadOnly() {
			t.Fatal("the store did not open read-only")
		}
	}
	return ro
}

// TestReadOnlyStoreHidesWrites: on a database file that cannot be
// written, even an ADMIN is offered no change (n e t r d, secret,
// operators), and is told why, instead of a refusal after a filled form.
func TestReadOnlyStoreHidesWrites(t *testing.T) {
	st := readOnlyStore(t)
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(100, 30))
	step := teaSteps(t, tm)
	step("The database file is read-only (not writable)") // at start
	step("n: not available. The database file is read-only", "n")
	step("(version 1)", "e", "t", "r", "d", "enter")
	step("e: not available", "t", "r", "d", "e")
	step("5 keys", "esc")
	step("Only the metadata is shown", "s")
	step("r: not available", "v", "r")
	step("5 keys", "esc")
	step("Key fingerprints", "o")
	step("p: not available", "n", "t", "d", "p")
	step("Keys table", "?")
	tm.Send(keyMsg("ctrl+c"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*root)
	if len(fm.stack) != 3 {
		var titles []string
		for _, s := range fm.stack {
			titles = append(titles, s.Title())
		}
		t.Fatalf("screens opened on a read-only file: %v", titles)
	}
	v := fm.View()
	for _, bad := range []string{"new key", "edit", "delete", "regenerate", "reveal", "rotate", "add operator"} {
		if strings.Contains(v, bad) {
			t.Errorf("help offers %q on a read-only file", bad)
		}
	}
	requireGolden(t, v)
}

// TestOperatorsTopBottom: g and G move to the first and last operator.
func TestOperatorsTopBottom(t *testing.T) {
	st, _ := newTestStore(t)
	for _, n := range []string{"carol", "zed"} {
		if _, err := st.AddOperator("alice", n, model.OperatorReadonly, nil); err != nil {
			t.Fatal(err)
		}
	}
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(100, 30))
	step := teaSteps(t, tm)
	step("Press n")
	step("› alice", "o")
	step("› zed", "G")
	step("› alice", "g")
	tm.Send(keyMsg("ctrl+c"))
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
}

// TestDetailAfterDeleteShowsTheDelete: deleting from the key detail
// leaves the detail saying so, with the delete in its history.
func TestDetailAfterDeleteShowsTheDelete(t *testing.T) {
	st, clk := newTestStore(t)
	keys := seedKeys(t, st, clk)
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(100, 30))
	step := teaSteps(t, tm)
	step("5 keys")
	step("(version 1)", "down", "enter")
	step("lose access at once", "d")
	step("no longer exists", "y")
	tm.Send(keyMsg("ctrl+c"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*root)
	d := fm.top().(*detail)
	if !d.gone || len(d.events) == 0 || d.events[0].Action != model.ActKeyDelete || d.id != keys["ci-deploy"].ID {
		t.Fatalf("gone %v, history %+v", d.gone, d.events)
	}
	if !strings.Contains(fm.View(), "key.delete") {
		t.Fatalf("the delete is not in the history on screen:\n%s", fm.View())
	}
}

// TestFormKeepNeverWarns: editing a key that never expires, "Keep" warns
// as "Never" does.
func TestFormKeepNeverWarns(t *testing.T) {
	st, clk := newTestStore(t)
	keys := seedKeys(t, st, clk)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	k := keys["root-admin"] // ADMIN, never expires
	d.send(pushMsg{newKeyForm(d.m.c, k)})
	toLifetime(t, d, d.m.top().(*keyForm))
	if v := ansi.Strip(d.view()); !strings.Contains(v, "Keep: never") || !strings.Contains(v, "never expires stays valid") {
		t.Fatalf("Keep: never without the warning:\n%s", v)
	}
}
