package tui

import (
	"bytes"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// layoutStore is a store for the layout goldens: keys with scopes of
// different lengths, last used long ago (a date, not "3d ago") and
// recently, a key made by the operator bob, and a long audit detail.
func layoutStore(t *testing.T) (*store.Store, map[string]*model.Key) {
	t.Helper()
	st, clk := newTestStore(t)
	if _, err := st.AddOperator("alice", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	keys := map[string]*model.Key{}
	tokens := map[string]string{}
	mk := func(actor string, spec model.KeySpec) {
		k, tok, err := st.CreateKey(actor, spec)
		if err != nil {
			t.Fatalf("create %s: %v", spec.Name, err)
		}
		keys[spec.Name], tokens[spec.Name] = k, tok
	}
	mk("alice", model.KeySpec{Name: "billing-sync", Description: "Nightly billing job", Role: model.RoleEditor,
		Scopes: []string{"analytics:read", "coupons:write", "exports:read"}, ExpiresAt: ptime(testNow.Add(day(200))), Active: true})
	mk("alice", model.KeySpec{Name: "ci-deploy", Description: "GitHub Actions deploys", Role: model.RoleEditor,
		Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}, ExpiresAt: ptime(testNow.Add(day(300))), Active: true})
	mk("bob", model.KeySpec{Name: "bob-cron", Description: "made by bob", Role: model.RoleReadonly,
		Scopes: []string{"coupons:read"}, ExpiresAt: ptime(testNow.Add(day(90))), Active: true})
	clk.Set(testNow.Add(-day(80))) // a last use older than 60 days shows as a date
	if r := st.Verify(tokens["billing-sync"], "", "", "10.0.0.1"); !r.Valid {
		t.Fatalf("verify: %+v", r)
	}
	clk.Set(testNow.Add(-3 * time.Hour))
	if r := st.Verify(tokens["ci-deploy"], "", "", "10.0.0.2"); !r.Valid {
		t.Fatalf("verify: %+v", r)
	}
	if err := st.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	clk.Set(testNow)
	return st, keys
}

var layoutSizes = []struct {
	name string
	w, h int
}{{"120x36", 120, 36}, {"80x24", 80, 24}}

// Issue 12.12 at 120x36 and 80x24: the ▲/▼ of a sorted Last used or
// Created by column shows whole, old last-used dates keep their day, the
// status bar's sort part is never cut, the help bar offers o and a at
// 120 columns, and a key of a disabled creator shows CREATOR_DISABLED
// (12.3) in a column wide enough for it.
func TestLayoutKeysSorted(t *testing.T) {
	for _, size := range layoutSizes {
		for _, sort := range []struct {
			name string
			keys []string
			wait string
		}{{"LastUsedDesc", []string{"L", "L"}, "sort Last used ▼"}, {"CreatedBy", []string{"C"}, "sort Created by ▲"}} {
			t.Run(size.name+"/"+sort.name, func(t *testing.T) {
				st, _ := layoutStore(t)
				if _, err := st.SetOperatorDisabled("alice", "bob", true); err != nil {
					t.Fatal(err)
				}
				runScreen(t, newTestOptions(st, "alice"), size.w, size.h, []step{{wait: "3 keys"}, {keys: sort.keys, wait: sort.wait}})
			})
		}
	}
}

// The operators screen keeps the "(you)" marker at 80 columns, and the
// key detail lines up scope descriptions and explains CREATOR_DISABLED.
func TestLayoutOperatorsAndDetail(t *testing.T) {
	for _, size := range layoutSizes {
		t.Run(size.name+"/Operators", func(t *testing.T) {
			st, _ := layoutStore(t)
			runScreen(t, newTestOptions(st, "alice"), size.w, size.h, []step{{wait: "3 keys"}, {keys: []string{"o"}, wait: "(you)"}})
		})
		t.Run(size.name+"/DetailCreatorDisabled", func(t *testing.T) {
			st, _ := layoutStore(t)
			if err := st.DeleteOperator("alice", "bob"); err != nil {
				t.Fatal(err)
			}
			// bob-cron is the first row sorted by Created by ▼.
			runScreen(t, newTestOptions(st, "alice"), size.w, size.h, []step{{wait: "3 keys"}, {keys: []string{"C", "C", "g"}, wait: "Created by ▼"},
				{keys: []string{"enter"}, wait: "key.create"}}) // once the history has loaded
		})
		t.Run(size.name+"/DetailScopes", func(t *testing.T) {
			st, _ := layoutStore(t)
			runScreen(t, newTestOptions(st, "alice"), size.w, size.h, []step{{wait: "3 keys"}, {keys: []string{"enter"}, wait: "key.create"}}) // once the history has loaded
		})
	}
}

// The audit list cuts a long detail to the line; enter opens the event
// whole, wrapped.
func TestLayoutAuditEventWhole(t *testing.T) {
	for _, size := range layoutSizes {
		t.Run(size.name, func(t *testing.T) {
			st, _ := layoutStore(t)
			// The third newest event: creating billing-sync, whose
			// detail (name, role, scopes, expiry) the list cuts.
			runScreen(t, newTestOptions(st, "alice"), size.w, size.h, []step{{wait: "3 keys"}, {keys: []string{"a"}, wait: "operator.add"}, // loaded
				{keys: []string{"j", "j", "enter"}, wait: "Sequence"}})
		})
	}
}

// One key is "1 key", not "1 keys".
func TestLayoutOneKey(t *testing.T) {
	st, _ := newTestStore(t)
	if _, _, err := st.CreateKey("alice", model.KeySpec{Name: "solo", Role: model.RoleAdmin, Active: true}); err != nil {
		t.Fatal(err)
	}
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{{wait: "1 key "}})
}

// Disabling, enabling and deleting an operator while the table is open
// changes the status of the keys it created, through the change feed and
// without a full reload (12.3).
func TestKeysTableFollowsOperator(t *testing.T) {
	st, _ := layoutStore(t)
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(120, 36))
	wait := func(what string) {
		t.Helper()
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte(what)) },
			teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
	}
	wait("3 active")
	if _, err := st.SetOperatorDisabled("alice", "bob", true); err != nil {
		t.Fatal(err)
	}
	wait("1 creator disabled")
	if _, err := st.SetOperatorDisabled("alice", "bob", false); err != nil {
		t.Fatal(err)
	}
	wait("3 active")
	if err := st.DeleteOperator("alice", "bob"); err != nil {
		t.Fatal(err)
	}
	wait("1 creator disabled")
	tm.Send(tea.KeyMsg{Type: tea.KeyCtrlC})
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*root)
	tbl := fm.stack[0].(*keysTable)
	if tbl.loads != 1 {
		t.Errorf("%d full loads: operator changes should patch the table", tbl.loads)
	}
	view := fm.View()
	if !strings.Contains(view, "CREATOR_DISABLED") {
		t.Errorf("no CREATOR_DISABLED row:\n%s", view)
	}
	requireGolden(t, view)
}

// At 80x24 the help does not fit: its last line says that more follows
// (it used to end mid-list with no sign that it scrolls).
func TestLayoutHelpScrolls(t *testing.T) {
	st, _ := layoutStore(t)
	runScreen(t, newTestOptions(st, "alice"), 80, 24, []step{{wait: "3 keys"}, {keys: []string{"?"}, wait: "more below"}})
}
