package tui

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// refOrder sorts the live keys of d by col the slow, obvious way.
func refOrder(d *tableData, col column) []string {
	var live []*model.Key
	for _, k := range d.all {
		if k != nil {
			live = append(live, k)
		}
	}
	byName := func(a, b *model.Key) int {
		if c := compareFold(a.Name, b.Name); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	}
	val := func(k *model.Key) int64 {
		switch col {
		case colRole:
			return int64(roleRank(k.Role))
		case colStatus:
			return int64(statusRank(d.status(k)))
		case colExpires:
			if k.ExpiresAt == nil {
				return 1<<63 - 1
			}
			return k.ExpiresAt.Unix()
		case colLastUsed:
			if k.LastUsedAt == nil {
				return -1 << 63
			}
			return k.LastUsedAt.Unix() // to the second; ties by name
		}
		return 0
	}
	slices.SortFunc(live, func(a, b *model.Key) int {
		if col == colCreated {
			if c := compareFold(a.CreatedBy, b.CreatedBy); c != 0 {
				return c
			}
		}
		if c := cmp.Compare(val(a), val(b)); c != 0 {
			return c
		}
		return byName(a, b)
	})
	ids := make([]string, len(live))
	for i, k := range live {
		ids[i] = k.ID
	}
	return ids
}

// sortAll caches every column's order, as a session that visited all
// columns without switching the others out would have.
func sortAll(d *tableData) {
	for c := range numColumns {
		d.order(c)
	}
}

func idsOf(d *tableData, order []int32) []string {
	ids := make([]string, len(order))
	for i, j := range order {
		ids[i] = d.all[j].ID
	}
	return ids
}

func viewIDs(d *tableData) []string {
	ids := make([]string, d.len())
	for i := range ids {
		ids[i] = d.at(i).ID
	}
	return ids
}

func testKeys(n int, rng *rand.Rand) []*model.Key {
	keys := benchKeys(n)
	creators := []string{"alice", "Bob", "carol", "dave"}
	for _, k := range keys {
		k.CreatedBy = creators[rng.IntN(len(creators))]
		switch rng.IntN(5) {
		case 0:
			k.ExpiresAt = nil
		case 1:
			t := testNow.Add(time.Duration(rng.IntN(40)-20) * 24 * time.Hour)
			k.ExpiresAt = &t
		}
		if rng.IntN(7) == 0 {
			k.Name = fmt.Sprintf("%s-with-a-very-long-shared-prefix-%d", k.Name[:4], rng.IntN(50))
			k.Name += "-" + k.ID
		}
	}
	return keys
}

func TestTableSortsMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	d := newTableData(testKeys(3000, rng), testOps, colName, false, "", testNow)
	for c := range numColumns {
		if got, want := idsOf(d, d.order(c)), refOrder(d, c); !slices.Equal(got, want) {
			t.Errorf("column %s: order differs from the reference", c)
		}
	}
}

// Patching a snapshot must give exactly what a full reload gives: every
// column's order, the filtered view and the counts.
func TestTablePatchMatchesReload(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	keys := testKeys(3000, rng)
	var byID map[string]*model.Key
	get := func(id string) *model.Key { return byID[id] }
	for _, query := range []string{"", "ch", "with"} {
		for _, col := range []column{colName, colLastUsed, colStatus, colCreated} {
			byID = map[string]*model.Key{}
			for _, k := range keys {
				byID[k.ID] = k
			}
			d := newTableData(slices.Clone(keys), testOps, col, false, query, testNow)
			sortAll(d)
			next := 0
			for round := range 6 {
				var ids []string
				for range 1 + rng.IntN(300) {
					ids = append(ids, mutate(rng, byID, &next))
				}
				var focus string
				if round%2 == 0 {
					focus = ids[0]
				}
				var j int32
				d, j = d.frozen().patch(get, ids, nil, focus)
				if focus != "" && byID[focus] != nil && (j < 0 || d.all[j].ID != focus) {
					t.Fatalf("focus %s resolved to %d", focus, j)
				}
				var live []*model.Key
				for _, k := range byID {
					live = append(live, k)
				}
				want := newTableData(live, testOps, col, false, query, testNow)
				for c := range numColumns {
					if d.orders[c] == nil {
						continue
					}
					if got, exp := idsOf(d, d.orders[c]), idsOf(want, want.order(c)); !slices.Equal(got, exp) {
						t.Fatalf("q=%q col=%s round %d: column %s differs after patch (%d vs %d keys)", query, col, round, c, len(got), len(exp))
					}
				}
				if got, exp := viewIDs(d), viewIDs(want); !slices.Equal(got, exp) {
					t.Fatalf("q=%q col=%s round %d: filtered view differs (%d vs %d)", query, col, round, len(got), len(exp))
				}
				if d.counts != want.counts {
					t.Fatalf("counts %+v, want %+v", d.counts, want.counts)
				}
				// The patched data keeps filtering and sorting correctly.
				d2 := d.frozen()
				d2.setQuery(query + "a")
				w2 := want.frozen()
				w2.setQuery(query + "a")
				d2.setSort(colExpires)
				w2.setSort(colExpires)
				if got, exp := viewIDs(d2), viewIDs(w2); !slices.Equal(got, exp) {
					t.Fatalf("q=%q col=%s round %d: refiltered view differs", query, col, round)
				}
			}
		}
	}
}

// mutate changes, deletes or creates one key in byID and returns its id.
func mutate(rng *rand.Rand, byID map[string]*model.Key, next *int) string {
	var pick *model.Key
	for _, k := range byID { // map order: a random key
		pick = k
		break
	}
	switch r := rng.IntN(10); {
	case r == 0 || pick == nil:
		*next++
		exp := testNow.Add(time.Duration(rng.IntN(100)) * time.Hour)
		k := &model.Key{ID: fmt.Sprintf("new_%06d", *next), Name: fmt.Sprintf("zz-new-%d-charlie", *next), Role: model.RoleEditor,
			Status: model.StatusActive, CreatedAt: testNow, CreatedBy: []string{"erin", "alice"}[rng.IntN(2)], ExpiresAt: &exp}
		byID[k.ID] = k
		return k.ID
	case r == 1:
		delete(byID, pick.ID)
		return pick.ID
	default:
		k := *pick
		switch rng.IntN(5) {
		case 0:
			k.Name = fmt.Sprintf("renamed-%d-%s", rng.IntN(1000), k.ID)
		case 1:
			k.Description = "now searchable with charm"
		case 2:
			k.Status = model.StatusDisabled
			k.Role = model.RoleAdmin
		default:
			at := testNow.Add(-time.Duration(rng.IntN(1000)) * time.Minute)
			k.LastUsedAt = &at
		}
		byID[k.ID] = &k
		return k.ID
	}
}

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
	if tbl.d.at(0).ID != used.ID || strings.Contains(row("zz-used"), "Never") {
		t.Fatalf("zz-used after use: first row %q, row %q", tbl.d.at(0).Name, row("zz-used"))
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
	if tbl.d.len() != 1 || tbl.selected().Name != "brand-new" {
		t.Fatalf("filter after patches: %d rows", tbl.d.len())
	}
}

// testOperators are the creators of the test keys, all active since
// before any key; testOps indexes them.
var (
	testOperators = func() []model.Operator {
		var ops []model.Operator
		for _, n := range []string{"alice", "bob", "Bob", "carol", "dave", "erin"} {
			ops = append(ops, model.Operator{Name: n, Role: model.OperatorAdmin})
		}
		return ops
	}()
	testOps = operatorMap(testOperators)
)

// An operator disabled, enabled, deleted or re-added changes the status
// of the keys it created (model.StatusOf): the patch that the change
// feed's OperatorsChanged starts must give what a full reload gives, in
// the Status order, the counts and a status-sorted filtered view (issue
// 12.3: the table kept showing ACTIVE).
func TestTablePatchOperatorChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	keys := testKeys(2000, rng)
	byID := map[string]*model.Key{}
	for _, k := range keys {
		byID[k.ID] = k
	}
	get := func(id string) *model.Key { return byID[id] }
	for _, query := range []string{"", "ch"} {
		d := newTableData(slices.Clone(keys), testOps, colStatus, false, query, testNow)
		sortAll(d)
		ops := testOps
		steps := []func(m map[string]*model.Operator){
			func(m map[string]*model.Operator) { c := *m["alice"]; c.Disabled = true; m["alice"] = &c },
			func(m map[string]*model.Operator) { delete(m, "carol") },
			func(m map[string]*model.Operator) { c := *m["alice"]; c.Disabled = false; m["alice"] = &c },
			// Re-added after its keys were made: they stay refused.
			func(m map[string]*model.Operator) { m["carol"] = &model.Operator{Name: "carol", CreatedAt: testNow} },
			func(m map[string]*model.Operator) {}, // nothing changed
		}
		for i, step := range steps {
			next := cloneMap(ops)
			step(next)
			ids := d.keysOfChangedCreators(next)
			d, _ = d.frozen().patch(get, ids, next, "")
			ops = next
			want := newTableData(slices.Clone(keys), ops, colStatus, false, query, testNow)
			for c := range numColumns {
				if d.orders[c] == nil {
					continue
				}
				if got, exp := idsOf(d, d.orders[c]), idsOf(want, want.order(c)); !slices.Equal(got, exp) {
					t.Fatalf("q=%q step %d: column %s differs after the operator patch", query, i, c)
				}
			}
			if got, exp := viewIDs(d), viewIDs(want); !slices.Equal(got, exp) {
				t.Fatalf("q=%q step %d: filtered view differs", query, i)
			}
			if d.counts != want.counts {
				t.Fatalf("q=%q step %d: counts %+v, want %+v", query, i, d.counts, want.counts)
			}
			for r := range d.len() {
				k := d.at(r)
				if got, exp := d.status(k), model.StatusOf(k, ops[k.CreatedBy], testNow); got != exp {
					t.Fatalf("step %d: %s shown %s, want %s", i, k.ID, got, exp)
				}
			}
		}
		if d.counts.creatorOff == 0 {
			t.Fatal("no key ended CREATOR_DISABLED: the test proves nothing")
		}
	}
}
