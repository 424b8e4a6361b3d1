package tui

import (
	"bytes"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/keyward/keyward/model"
)

// runScreen drives the real program (teatest) through keys, waits for
// want to appear in the output, quits with ctrl+c and goldens the final
// View().
func runScreen(t *testing.T, opts Options, w, h int, steps []step) {
	t.Helper()
	tm := teatest.NewTestModel(t, New(opts), teatest.WithInitialTermSize(w, h))
	for _, s := range steps {
		for _, k := range s.keys {
			tm.Send(keyMsg(k))
		}
		if s.text != "" {
			tm.Type(s.text)
		}
		if s.wait != "" {
			want := []byte(s.wait)
			teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, want) },
				teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
		}
	}
	tm.Send(tea.KeyMsg{Type: tea.KeyCtrlC})
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second))
	requireGolden(t, fm.View())
}

type step struct {
	keys []string
	text string
	wait string // text to wait for in the output
}

func TestKeysTable(t *testing.T) {
	for _, size := range []struct {
		name string
		w, h int
	}{{"80x24", 80, 24}, {"120x40", 120, 40}} {
		t.Run(size.name, func(t *testing.T) {
			st, clk := newTestStore(t)
			seedKeys(t, st, clk)
			runScreen(t, newTestOptions(st, "alice"), size.w, size.h, []step{{wait: "5 keys"}})
		})
	}
}

func TestKeysTableSortAndFilter(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{
		{wait: "5 keys"},
		{keys: []string{"E"}, wait: "Expires ▲"},
		{keys: []string{"E"}, wait: "Expires ▼"},
		{keys: []string{"/"}, text: "app", wait: "1 of 5"},
	})
}

func TestKeysEmpty(t *testing.T) {
	st, _ := newTestStore(t)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{{wait: "Press n"}})
}

func TestDetailScreen(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	runScreen(t, newTestOptions(st, "alice"), 80, 30, []step{{wait: "5 keys"}, {keys: []string{"enter"}, wait: "key.create"}})
}

func TestFormScreen(t *testing.T) {
	st, _ := newTestStore(t)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{{wait: "Press n"}, {keys: []string{"n"}, wait: "Description"}, {text: "ci-bot", wait: "ci-bot"}})
}

func TestRevealScreen(t *testing.T) {
	st, _ := newTestStore(t)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{
		{wait: "Press n"}, {keys: []string{"n"}, wait: "Description"},
		{text: "ci-bot", wait: "ci-bot"}, {keys: []string{"enter"}, wait: "> optional"},
		{keys: []string{"enter"}, wait: "READONLY  like"}, {keys: []string{"up"}, wait: "> ADMIN"},
		{keys: []string{"enter"}, wait: "Admins get every scope"},
		{keys: []string{"enter"}, wait: "Expires"}, {keys: []string{"enter"}, wait: "Active?"},
		{keys: []string{"enter"}, wait: "Your new API key"},
		{keys: []string{"c"}, wait: "Copied with"},
	})
}

func TestConfirmDeleteScreen(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{{wait: "5 keys"}, {keys: []string{"d"}, wait: "lose access"}})
}

func TestRegenerateScreen(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{{wait: "5 keys"}, {keys: []string{"r"}, wait: "Grace: 7 days"}, {keys: []string{"down"}, wait: "(•) Grace: 1 hour"}})
}

func TestSecretScreen(t *testing.T) {
	st, _ := newTestStore(t)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{{wait: "Press n"}, {keys: []string{"s"}, wait: "No shared secret yet"}})
}

func TestSecretReveal(t *testing.T) {
	st, _ := newTestStore(t)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{
		{wait: "Press n"}, {keys: []string{"s"}, wait: "No shared secret yet"},
		{keys: []string{"v"}, wait: "Reveal the shared secret?"},
		{keys: []string{"y"}, wait: "Bearer"},
	})
}

func TestAuditScreen(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	runScreen(t, newTestOptions(st, "alice"), 100, 24, []step{{wait: "5 keys"}, {keys: []string{"a"}, wait: "events, newest first"}, {keys: []string{"/"}, wait: "actor, action"}, {text: "rob", wait: "rob"}, {keys: []string{"enter"}, wait: "1 of"}})
}

func TestOperatorsScreen(t *testing.T) {
	st, _ := newTestStore(t)
	runScreen(t, newTestOptions(st, "alice"), 100, 24, []step{{wait: "Press n"}, {keys: []string{"o"}, wait: "READONLY"}})
}

func TestHelpScreen(t *testing.T) {
	for _, who := range []string{"alice", "rob"} {
		t.Run(who, func(t *testing.T) {
			st, clk := newTestStore(t)
			seedKeys(t, st, clk)
			runScreen(t, newTestOptions(st, who), 100, 40, []step{{wait: "5 keys"}, {keys: []string{"?"}, wait: "Everywhere"}})
		})
	}
}

// A READONLY operator sees no state-changing binding, and the keys do
// nothing (the store would refuse them too).
func TestReadonlyHidesDangerousBindings(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	d := newDriver(t, newTestOptions(st, "rob"), 100, 30)
	view := d.view()
	footer := view[strings.LastIndex(view, "\n")+1:]
	for _, bad := range []string{"new key", "edit", "disable", "regenerate", "delete"} {
		if strings.Contains(footer, bad) {
			t.Errorf("READONLY footer offers %q:\n%s", bad, footer)
		}
	}
	for _, k := range []string{"n", "e", "t", "r", "d"} {
		d.keys(k)
		if len(d.m.stack) != 1 {
			t.Fatalf("READONLY key %q opened %s", k, d.m.top().Title())
		}
	}
	d.keys("s")
	d.keys("v")
	if _, ok := d.m.top().(*secretScreen); !ok {
		t.Fatalf("READONLY v on the secret screen opened %s", d.m.top().Title())
	}
	if !strings.Contains(d.view(), "READONLY operators see metadata only") {
		t.Error("secret screen does not explain READONLY limits")
	}
	// The store refuses as well.
	if _, _, err := st.CreateKey("rob", model.KeySpec{Name: "x", Role: model.RoleAdmin, Active: true}); err == nil {
		t.Fatal("store let a READONLY operator create a key")
	}
}

// TestHelpDoesNotDependOnHistory: the ? screen lists what works on the
// screen it was opened from, whatever screens were open before. The
// keymap used to be one set of bindings that each screen's Help enabled
// and disabled while drawing, so a delete dialog (nothing to choose) left
// "↑/↓ choose" hidden from the next ? screen opened from the table.
func TestHelpDoesNotDependOnHistory(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 40)
	d.keys("?")
	fresh := d.view()
	if !strings.Contains(fresh, "choose") {
		t.Fatalf("help lacks the dialogs' choose:\n%s", fresh)
	}
	d.keys("esc", "d") // a delete dialog: no choices
	if _, ok := d.m.top().(*confirmDialog); !ok {
		t.Fatalf("d opened %s", d.m.top().Title())
	}
	d.view() // drawn, as a program draws every frame
	d.keys("n", "?")
	if after := d.view(); after != fresh {
		t.Errorf("help after a dialog differs from a fresh one:\n%s\nfresh:\n%s", after, fresh)
	}
}
