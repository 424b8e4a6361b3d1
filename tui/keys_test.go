package tui

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// With a real store: last use, an edit, a delete and a create reach the
// table as patches (no full reload), rows move in the current sort, and
// the cursor stays on its key.
func TestLiveRefreshPatches(t *testing.T) {
	st, clk := newTestStore(t)
	keys := seedKeys(t, st, clk)
	used, tok, err := st.CreateKey("alice", model.KeySpec{Name: "zz-used", Role: model.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	sub := st.Subscribe()
	defer sub.Close()
	feed := func(d *driver) {
		t.Helper()
		select {
		case <-sub.Ready():
		case <-time.After(2 * time.Second):
			t.Fatal("no change published")
		}
		d.send(feedMsg{changes: sub.Next()})
	}
	d := newDriver(t, newTestOptions(st, "alice"), 120, 30)
	tbl := d.m.stack[0].(*keysTable)
	d.keys("L", "L") // last used, newest first: "Never" keys last
	d.keys("down", "down")
	sel := tbl.selected()
	row := func(name string) string {
		for _, l := range strings.Split(d.view(), "\n") {
			if strings.Contains(l, name) {
				return l
			}
		}
		return ""
	}
	if !strings.Contains(row("zz-used"), "Never") {
		t.Fatalf("zz-used before use: %q", row("zz-used"))
	}

	// Last use: the row moves to the top and shows it; the cursor stays.
	if r := st.Verify(tok, "", "", "10.0.0.9"); !r.Valid {
		t.Fatalf("verify: %+v", r)
	}
	if err := st.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	feed(d)
	if tbl.d.At(0).ID != used.ID || strings.Contains(row("zz-used"), "Never") {
		t.Fatalf("zz-used after use: first row %q, row %q", tbl.d.At(0).Name, row("zz-used"))
	}
	if got := tbl.selected(); got == nil || got.ID != sel.ID {
		t.Fatalf("cursor moved from %s to %v", sel.Name, got)
	}

	// Rename the selected key, delete another, create one elsewhere.
	cur, _ := st.Key(sel.ID)
	spec := model.SpecOf(cur)
	spec.Name = "renamed-" + cur.Name
	if _, err := st.EditKey("alice", cur.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteKey("alice", keys["root-admin"].ID); err != nil && keys["root-admin"].ID != sel.ID {
		t.Fatal(err)
	}
	if _, _, err := st.CreateKey("alice", model.KeySpec{Name: "brand-new", Role: model.RoleAdmin, Active: true}); err != nil {
		t.Fatal(err)
	}
	feed(d)
	if got := tbl.selected(); got == nil || got.ID != sel.ID || got.Name != spec.Name {
		t.Fatalf("cursor after rename: %v, want %s", got, spec.Name)
	}
	v := d.view()
	if !strings.Contains(v, "renamed-") || !strings.Contains(v, "brand-new") || strings.Contains(v, "root-admin") || !strings.Contains(v, "6 keys") {
		t.Fatalf("view after changes:\n%s", v)
	}
	if tbl.loads != 1 {
		t.Errorf("%d full loads; changes should patch", tbl.loads)
	}
	// A filter typed meanwhile still applies to the patched data.
	d.keys("/")
	d.typeText("brand")
	if tbl.d.Len() != 1 || tbl.selected().Name != "brand-new" {
		t.Fatalf("filter after patches: %d rows", tbl.d.Len())
	}
}
