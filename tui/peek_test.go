package tui

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// peekOptions returns options that start the TUI on the first n keys (in
// name order) of st, with Open waiting until release is closed.
func peekOptions(t *testing.T, st *store.Store, n int, release <-chan struct{}) Options {
	t.Helper()
	keys := st.Keys()
	slices.SortFunc(keys, func(a, b *model.Key) int { return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)) })
	opts := newTestOptions(nil, "alice")
	opts.First, opts.FirstTotal, opts.FirstOperators = keys[:n], len(keys), st.Operators()
	opts.Open = func() (*store.Store, error) {
		<-release
		return st, nil
	}
	return opts
}

// TestPeekFirstPage: before the store is open the table paints the peeked
// page and the total, moves work, everything else says it is loading; once
// Open returns, the full table replaces the page, the cursor stays on the
// key it was on, and writes work for an ADMIN.
func TestPeekFirstPage(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	d := &driver{t: t, m: newRoot(peekOptions(t, st, 3, release))}
	d.send(tea.WindowSizeMsg{Width: 100, Height: 16})
	d.run(d.m.Init(), 0) // Open blocks: the driver gives up on it after 150 ms

	v := d.view()
	requireGolden(t, v)
	for _, want := range []string{"5 keys · loading… (showing the first 3)", "analytics-export", "ci-deploy", "mobile-app"} {
		if !strings.Contains(v, want) {
			t.Errorf("peeked table lacks %q:\n%s", want, v)
		}
	}
	if strings.Contains(v, "old-partner") {
		t.Errorf("peeked table shows a key beyond the first page:\n%s", v)
	}

	d.keys("down", "down")
	d.keys("n")
	if v := d.view(); !strings.Contains(v, "Still loading 5 keys") || len(d.m.stack) != 1 {
		t.Fatalf("n before the store is open: want the loading notice and no form, got %d screens:\n%s", len(d.m.stack), v)
	}
	if k := d.m.stack[0].(*keysTable).selected(); k == nil || k.Name != "mobile-app" {
		t.Fatalf("down, down on the peeked page selected %v, want mobile-app", k)
	}

	close(release)
	d.send(storeOpenedMsg{st: st})
	v = d.view()
	if !strings.Contains(v, "5 keys  3 active") || strings.Contains(v, "keys · loading") || !strings.Contains(v, "old-partner") {
		t.Fatalf("after Open the full table should replace the page:\n%s", v)
	}
	if k := d.m.stack[0].(*keysTable).selected(); k == nil || k.Name != "mobile-app" {
		t.Fatalf("the full load moved the cursor to %v, want mobile-app", k)
	}
	d.keys("n")
	if _, ok := d.m.top().(*keyForm); !ok {
		t.Fatalf("n after Open should open the new-key form for an ADMIN, top is %T", d.m.top())
	}
}

// TestPeekReadonlyOperator: rights are settled when the store arrives: a
// READONLY operator gets the read-only bindings then.
func TestPeekReadonlyOperator(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	release := make(chan struct{})
	close(release)
	opts := peekOptions(t, st, 2, release)
	opts.Actor = "rob"
	tm := teatest.NewTestModel(t, New(opts), teatest.WithInitialTermSize(100, 16))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("(read-only)")) },
		teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
	tm.Send(keyMsg("n"))
	tm.Send(tea.KeyMsg{Type: tea.KeyCtrlC})
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*root)
	if len(fm.stack) != 1 || !fm.c.readonly {
		t.Fatalf("READONLY operator after Open: readonly=%v, %d screens (n must not open a form)", fm.c.readonly, len(fm.stack))
	}
}

// TestPeekOpenFails: when Open fails the program ends and the error is
// returned, so keyward prints it and exits non-zero.
func TestPeekOpenFails(t *testing.T) {
	st, clk := newTestStore(t)
	seedKeys(t, st, clk)
	boom := errors.New("database is in use by another keyward process")
	opts := peekOptions(t, st, 2, nil)
	opts.Open = func() (*store.Store, error) { return nil, boom }
	m := newRoot(opts)
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(100, 16))
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	if !errors.Is(m.openErr, boom) {
		t.Fatalf("openErr = %v, want %v", m.openErr, boom)
	}
}
