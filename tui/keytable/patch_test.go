package keytable

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// refOrder sorts the live keys of d by col the slow, obvious way.
func refOrder(d *Data, col Column) []string {
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
		case ColRole:
			return int64(roleRank(k.Role))
		case ColStatus:
			return int64(statusRank(d.status(k)))
		case ColExpires:
			if k.ExpiresAt == nil {
				return 1<<63 - 1
			}
			return k.ExpiresAt.Unix()
		case ColLastUsed:
			if k.LastUsedAt == nil {
				return -1 << 63
			}
			return k.LastUsedAt.Unix() // to the second; ties by name
		}
		return 0
	}
	slices.SortFunc(live, func(a, b *model.Key) int {
		if col == ColCreated {
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
func sortAll(d *Data) {
	for c := range numColumns {
		d.order(c)
	}
}

func idsOf(d *Data, order []int32) []string {
	ids := make([]string, len(order))
	for i, j := range order {
		ids[i] = d.all[j].ID
	}
	return ids
}

func viewIDs(d *Data) []string {
	ids := make([]string, d.Len())
	for i := range ids {
		ids[i] = d.At(i).ID
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
	d := New(testKeys(3000, rng), testOps, ColName, false, "", testNow)
	for c := range numColumns {
		if got, want := idsOf(d, d.order(c)), refOrder(d, c); !slices.Equal(got, want) {
			t.Errorf("Column %s: order differs from the reference", c)
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
		for _, col := range []Column{ColName, ColLastUsed, ColStatus, ColCreated} {
			byID = map[string]*model.Key{}
			for _, k := range keys {
				byID[k.ID] = k
			}
			d := New(slices.Clone(keys), testOps, col, false, query, testNow)
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
				d, j = d.Frozen().Patch(get, ids, nil, focus)
				if focus != "" && byID[focus] != nil && (j < 0 || d.all[j].ID != focus) {
					t.Fatalf("focus %s resolved to %d", focus, j)
				}
				var live []*model.Key
				for _, k := range byID {
					live = append(live, k)
				}
				want := New(live, testOps, col, false, query, testNow)
				for c := range numColumns {
					if d.orders[c] == nil {
						continue
					}
					if got, exp := idsOf(d, d.orders[c]), idsOf(want, want.order(c)); !slices.Equal(got, exp) {
						t.Fatalf("q=%q col=%s round %d: Column %s differs after patch (%d vs %d keys)", query, col, round, c, len(got), len(exp))
					}
				}
				if got, exp := viewIDs(d), viewIDs(want); !slices.Equal(got, exp) {
					t.Fatalf("q=%q col=%s round %d: filtered view differs (%d vs %d)", query, col, round, len(got), len(exp))
				}
				if d.counts != want.counts {
					t.Fatalf("counts %+v, want %+v", d.counts, want.counts)
				}
				// The patched data keeps filtering and sorting correctly.
				d2 := d.Frozen()
				d2.SetQuery(query + "a")
				w2 := want.Frozen()
				w2.SetQuery(query + "a")
				d2.SetSort(ColExpires)
				w2.SetSort(ColExpires)
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
		d := New(slices.Clone(keys), testOps, ColStatus, false, query, testNow)
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
			ids := d.KeysOfChangedCreators(next)
			d, _ = d.Frozen().Patch(get, ids, next, "")
			ops = next
			want := New(slices.Clone(keys), ops, ColStatus, false, query, testNow)
			for c := range numColumns {
				if d.orders[c] == nil {
					continue
				}
				if got, exp := idsOf(d, d.orders[c]), idsOf(want, want.order(c)); !slices.Equal(got, exp) {
					t.Fatalf("q=%q step %d: Column %s differs after the operator patch", query, i, c)
				}
			}
			if got, exp := viewIDs(d), viewIDs(want); !slices.Equal(got, exp) {
				t.Fatalf("q=%q step %d: filtered view differs", query, i)
			}
			if d.counts != want.counts {
				t.Fatalf("q=%q step %d: counts %+v, want %+v", query, i, d.counts, want.counts)
			}
			for r := range d.Len() {
				k := d.At(r)
				if got, exp := d.status(k), model.StatusOf(k, ops[k.CreatedBy], testNow); got != exp {
					t.Fatalf("step %d: %s shown %s, want %s", i, k.ID, got, exp)
				}
			}
		}
		if d.counts.CreatorOff == 0 {
			t.Fatal("no key ended CREATOR_DISABLED: the test proves nothing")
		}
	}
}
