package keytable

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/keyward/keyward/model"
)

// oddKeys is testKeys past the address-sort threshold, with names that
// stress the name sort (non-ASCII, lengths around its 4-byte chunks,
// long shared prefixes, mixed case) and more distinct descriptions than
// are shared, so some stay in their keys' segments.
func oddKeys(n int, rng *rand.Rand) []*model.Key {
	keys := testKeys(n, rng)
	odd := []string{"Ärger", "ärger", "\u212Aelvin", "kelvin", "Kelvin", "café", "CAFE", "abc", "abcd", "abcde",
		"abcdefgh", "ABCDEFGH1", "shared-prefix-of-24-byte", "shared-prefix-of-24-bytes", "Shared-Prefix-Of-24-Bytes-and-more",
		strings.Repeat("Long-", 13) + "end", strings.Repeat("long-", 13) + "END", strings.Repeat("long-", 13) + "e", "Ünïcödé-" + strings.Repeat("x", 60)}
	for i, k := range keys {
		switch rng.IntN(6) {
		case 0:
			k.Name = odd[rng.IntN(len(odd))] + fmt.Sprint(rng.IntN(3)) // repeats: ties go to the id
			if rng.IntN(2) == 0 {
				k.Name = strings.TrimRight(k.Name, "0123456789")
			}
		case 1:
			k.Name = strings.ToUpper(k.Name)
		}
		switch rng.IntN(4) {
		case 0:
			k.Description = fmt.Sprintf("Unique note %d for ÉQUIPE %d", i, rng.IntN(1000))
		case 1:
			k.Description = ""
		}
	}
	return keys
}

func TestTableOrdersMatchReferenceLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	d := New(oddKeys(20000, rng), testOps, ColName, false, "", testNow)
	for c := range numColumns {
		if got, want := idsOf(d, d.order(c)), refOrder(d, c); !slices.Equal(got, want) {
			t.Errorf("Column %s: order differs from the reference", c)
		}
	}
}

// refFilter filters the way the filter promises: name, id or description
// contains the query, case-insensitively.
func refFilter(d *Data, q string) []string {
	q = strings.ToLower(q)
	var ids []string
	for _, j := range d.levels[0].idx {
		k := d.all[j]
		if strings.Contains(strings.ToLower(k.Name), q) || strings.Contains(strings.ToLower(k.ID), q) ||
			strings.Contains(strings.ToLower(k.Description), q) {
			ids = append(ids, k.ID)
		}
	}
	return ids
}

func TestTableFilterMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	keys := oddKeys(20000, rng)
	byID := map[string]*model.Key{}
	for _, k := range keys {
		byID[k.ID] = k
	}
	get := func(id string) *model.Key { return byID[id] }
	d := New(slices.Clone(keys), testOps, ColName, false, "", testNow)
	queries := []string{"u", "us", "used by", "USED BY THE", "note 1", "équipe", "ÉQUIPE 12", "key_0000001", "kelvin", "ärg",
		"ch", "check", "team", "bill", "unique", "searchable", "charm"}
	check := func(round int) {
		t.Helper()
		for _, q := range queries {
			d.SetQuery(q)
			if got, want := viewIDs(d), refFilter(d, q); !slices.Equal(got, want) {
				t.Fatalf("round %d, query %q: %d keys, want %d", round, q, len(got), len(want))
			}
		}
		d.SetQuery("")
	}
	check(0)
	next := 0
	for round := 1; round <= 4; round++ {
		d.SetQuery("us") // patched with a filter active, then refiltered
		var ids []string
		for range 500 {
			ids = append(ids, mutate(rng, byID, &next))
		}
		d, _ = d.Frozen().Patch(get, ids, nil, "")
		if got, want := viewIDs(d), refFilter(d, "us"); !slices.Equal(got, want) {
			t.Fatalf("round %d: patched filter gives %d keys, want %d", round, len(got), len(want))
		}
		check(round)
	}
}

// The id index finds live keys through deletions (tombstones, reused)
// and growth.
func TestIDIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var all []*model.Key
	for i := range 40 {
		all = append(all, &model.Key{ID: fmt.Sprintf("key_%d", i)})
	}
	x := newIDIndex(all, len(all))
	for round := range 2000 {
		if rng.IntN(3) == 0 && len(all) > 0 {
			all[rng.IntN(len(all))] = nil
		} else {
			k := &model.Key{ID: fmt.Sprintf("new_%d", round)}
			all = append(all, k)
			x = x.insert(all, k.ID, int32(len(all)-1))
		}
	}
	live := 0
	for i, k := range all {
		if k == nil {
			continue
		}
		live++
		if j, ok := x.find(all, k.ID); !ok || j != int32(i) {
			t.Fatalf("%s: found %d %v, want %d", k.ID, j, ok, i)
		}
	}
	for _, id := range []string{"key_1000", "new_x", ""} {
		if j, ok := x.find(all, id); ok {
			t.Fatalf("%q found at %d", id, j)
		}
	}
	if len(x.slots) < 2*live || len(x.slots) > 8*live+128 {
		t.Fatalf("%d slots for %d live keys", len(x.slots), live)
	}
}

func TestHayChunk(t *testing.T) {
	for _, h := range []string{"", "a", "ab", "abc", "abcd", "abcde", "a\x00cd", "\x00bcd", "ab\x00\x01", "\x01\x00\x01\x01", "abc\x00", "\xff\xfe\x00\x80"} {
		var want uint32
		for i := range 4 {
			if i >= len(h) || h[i] == 0 {
				want <<= 8 * (4 - i)
				break
			}
			want = want<<8 | uint32(h[i])
		}
		if got := hayChunk([]byte(h)); got != want {
			t.Errorf("hayChunk(%q) = %#x, want %#x", h, got, want)
		}
	}
}

func TestInMemoryOrder(t *testing.T) {
	keys := make([]*model.Key, 10000)
	for i := range keys {
		keys[i] = &model.Key{ID: fmt.Sprint(i)}
	}
	rand.New(rand.NewPCG(11, 12)).Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	want := slices.Clone(keys)
	got := inMemoryOrder(keys, make([]uint64, len(keys)), make([]uint64, len(keys)))
	if !slices.IsSortedFunc(got, func(a, b *model.Key) int {
		return cmp.Compare(uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(b)))
	}) {
		t.Fatal("not in address order")
	}
	slices.SortFunc(want, func(a, b *model.Key) int { return cmp.Compare(uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(b))) })
	if !slices.Equal(got, want) {
		t.Fatal("not a permutation of the keys")
	}
}

func TestMergeOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for round := range 300 {
		n := rng.IntN(50)
		val := make([]int, n+20) // index -> sort value, ties by index
		for i := range val {
			val[i] = rng.IntN(10)
		}
		cmpIdx := func(x, y int32) int {
			if c := cmp.Compare(val[x], val[y]); c != 0 {
				return c
			}
			return cmp.Compare(x, y)
		}
		var order []int32
		for i := range int32(n) {
			order = append(order, i)
		}
		slices.SortFunc(order, cmpIdx)
		marked := make([]uint64, 1)
		var add, want []int32
		for i := range int32(n) {
			if rng.IntN(3) == 0 {
				marked[0] |= 1 << i
				if rng.IntN(2) == 0 {
					val[i] = rng.IntN(10) // moved
					add = append(add, i)
				}
			}
		}
		for i := int32(n); i < int32(n)+int32(rng.IntN(20)); i++ {
			add = append(add, i) // created
		}
		for i := range int32(len(val)) {
			if (i < int32(n) && marked[0]&(1<<i) == 0) || slices.Contains(add, i) {
				want = append(want, i)
			}
		}
		slices.SortFunc(want, cmpIdx)
		if got := mergeOrder(order, marked, add, cmpIdx); !slices.Equal(got, want) {
			t.Fatalf("round %d: %v, want %v", round, got, want)
		}
	}
}
