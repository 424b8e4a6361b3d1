package keytable

import (
	"hash/maphash"
	"slices"
	"sort"

	"github.com/keyward/keyward/model"
)

// Live refresh without reloading: the store's change feed names the keys
// that changed (created, updated, deleted, last used), and patch builds a
// new Data from the current one with just those keys updated. Each
// sort order is patched by removing the changed keys and inserting them
// back at binary-searched positions, which costs O(n) copying plus
// O(m log n) comparisons instead of a full load and sort (about a second
// of CPU at 1M keys). The base is never written: every slice a patch
// changes is copied, so the UI keeps using the base meanwhile.

// Frozen returns a copy of d's UI-mutable fields (sort, filter levels,
// cached orders), safe to read on another goroutine while the UI goes on
// changing d.
func (d *Data) Frozen() *Data {
	c := *d
	c.levels = slices.Clip(slices.Clone(d.levels))
	return &c
}

// buildIDs indexes every live key by id.
func (d *Data) buildIDs() {
	d.ids = newIDIndex(d.all, d.counts.Total)
}

// idIndex finds a key's index by id: an open-addressing table over a
// Data's all, linear probing, 4 bytes a slot and at most half full
// (8 MB at 1M keys; a map[string]int32 took 56). A slot holds index+1,
// 0 when empty; a slot whose key is nil in all (deleted) is a tombstone.
// Like the map it replaces, one patch job at a time changes it in place
// for the Data it builds.
type idIndex struct {
	slots []int32
	taken int // slots not empty, tombstones included
	seed  maphash.Seed
}

func newIDIndex(all []*model.Key, live int) *idIndex {
	size := 64
	for size < 2*live+2 {
		size *= 2
	}
	x := &idIndex{slots: make([]int32, size), seed: maphash.MakeSeed()}
	for i, k := range all {
		if k != nil {
			x.insert(all, k.ID, int32(i))
		}
	}
	return x
}

// find returns the index of the live key with id in all.
func (x *idIndex) find(all []*model.Key, id string) (int32, bool) {
	mask := uint64(len(x.slots) - 1)
	for h := maphash.String(x.seed, id) & mask; ; h = (h + 1) & mask {
		s := x.slots[h]
		if s == 0 {
			return -1, false
		}
		if j := s - 1; int(j) < len(all) && all[j] != nil && all[j].ID == id {
			return j, true
		}
	}
}

// insert adds key j, whose id is not in the table yet; all[j] is the key
// (or about to be). It returns the table to use from now on: a bigger
// one when this one filled up.
func (x *idIndex) insert(all []*model.Key, id string, j int32) *idIndex {
	mask := uint64(len(x.slots) - 1)
	for h := maphash.String(x.seed, id) & mask; ; h = (h + 1) & mask {
		s := x.slots[h]
		if s != 0 && int(s-1) < len(all) && all[s-1] != nil {
			continue
		}
		if s == 0 {
			x.taken++
		}
		x.slots[h] = j + 1
		break
	}
	if 2*x.taken > len(x.slots) {
		live := 0
		for _, k := range all {
			if k != nil {
				live++
			}
		}
		return newIDIndex(all, live)
	}
	return x
}

// change is one key a patch updates.
type change struct {
	j        int32
	old, new *model.Key // nil old: created; nil new: deleted
}

// KeysOfChangedCreators returns the ids of the keys whose creator's
// account differs between d.ops and ops (added, deleted, disabled,
// enabled or re-added): their status may differ (model.StatusOf). It
// scans the packed creator indexes, not the keys.
func (d *Data) KeysOfChangedCreators(ops map[string]*model.Operator) []string {
	changed := make([]bool, len(d.creators))
	some := false
	for x, name := range d.creators {
		a, b := d.ops[name], ops[name]
		changed[x] = (a == nil) != (b == nil) || a != nil && (a.Disabled != b.Disabled || !a.CreatedAt.Equal(b.CreatedAt))
		some = some || changed[x]
	}
	if !some {
		return nil
	}
	var ids []string
	for j, m := range d.meta {
		if changed[m>>metaCreator] && d.all[j] != nil {
			ids = append(ids, d.all[j].ID)
		}
	}
	return ids
}

// Patch returns a new Data with the keys ids re-read through get (nil
// means the key no longer exists). b must be a frozen copy. ops, unless
// nil, replaces the operators (see KeysOfChangedCreators): a key in ids
// whose status it changes is patched even when the key itself did not
// change. It also returns the index of focusID, or -1.
func (b *Data) Patch(get func(id string) *model.Key, ids []string, ops map[string]*model.Operator, focusID string) (*Data, int32) {
	if b.ids == nil {
		b.buildIDs()
	}
	if ops == nil {
		ops = b.ops
	}
	n := &Data{now: b.now, ops: ops, col: b.col, desc: b.desc, counts: b.counts, ids: b.ids,
		creators: b.creators, creatorN: b.creatorN, hay: b.hay, segs: b.segs, segKey: b.segKey, keySeg: b.keySeg,
		descs: b.descs, descSegs: b.descSegs, descOf: b.descOf}
	n.all = slices.Clone(b.all)
	// The sort key arrays are copied on first write: a last-used flush
	// changes only used (4 of 12 bytes a key to copy).
	n.exp, n.used, n.meta = b.exp, b.used, b.meta
	chs := n.applyChanges(b, get, ids)
	focus := int32(-1)
	if j, ok := n.ids.find(n.all, focusID); ok {
		focus = j
	}
	if len(chs) == 0 {
		n.orders, n.nameRank, n.levels = b.orders, b.nameRank, b.levels
		return n, focus
	}
	n.patchText(chs)
	n.patchOrders(b, chs)
	n.patchLevels(b.levels, chs)
	return n, focus
}

// applyChanges re-reads the keys ids through get into n, a patch of b
// still sharing b's slices: it updates the keys, the id index, the counts
// and the sort keys (copying each array on its first write), and returns
// the keys that changed.
func (n *Data) applyChanges(b *Data, get func(id string) *model.Key, ids []string) []change {
	var owned [3]bool
	ownCreators := false
	var chs []change
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		k := get(id)
		j, ok := n.ids.find(n.all, id)
		switch {
		case ok && n.all[j] == k && b.status(k) == n.status(k):
			continue // already current
		case ok:
			old := n.all[j]
			chs = append(chs, change{j: j, old: old, new: k})
			n.counts.add(old, b.status(old), n.now, -1)
			n.all[j] = k // nil: a tombstone in ids
		case k != nil:
			j = int32(len(n.all))
			n.all = append(n.all, k)
			n.exp, n.used, n.meta = grown(n.exp, &owned[0]), grown(n.used, &owned[1]), grown(n.meta, &owned[2])
			n.ids = n.ids.insert(n.all, id, j)
			chs = append(chs, change{j: j, new: k})
		default:
			continue // created and deleted since
		}
		if k != nil {
			st := n.status(k)
			n.counts.add(k, st, n.now, 1)
			if _, known := n.creatorN[k.CreatedBy]; !known && !ownCreators {
				n.creators, n.creatorN, ownCreators = slices.Clone(n.creators), cloneMap(n.creatorN), true
			}
			exp, used, meta := sortKeys(k, st, n.creatorOf(k.CreatedBy))
			n.exp, n.used, n.meta = written(n.exp, j, exp, &owned[0]), written(n.used, j, used, &owned[1]), written(n.meta, j, meta, &owned[2])
		}
	}
	return chs
}

// patchOrders gives n b's sort orders with the changed keys moved: in
// every column a change moves them in, which are removed and inserted
// back (mergeOrder); a column b never sorted stays unsorted.
func (n *Data) patchOrders(b *Data, chs []change) {
	// Which columns does each change move? A renamed, new or deleted key
	// moves in every column (name order breaks the ties).
	words := (len(n.all) + 63) / 64
	var marks [numColumns][]uint64
	var adds [numColumns][]int32
	for _, ch := range chs {
		everywhere := ch.old == nil || ch.new == nil || ch.old.Name != ch.new.Name || ch.old.ID != ch.new.ID
		for c := range numColumns {
			moved := everywhere
			switch {
			case moved || c == ColName:
			case c == ColCreated: // creator indexes, not ranks: the same in b and n
				moved = b.meta[ch.j]>>metaCreator != n.meta[ch.j]>>metaCreator
			default:
				moved = b.colKey(c, ch.j, nil) != n.colKey(c, ch.j, nil)
			}
			if !moved {
				continue
			}
			if marks[c] == nil {
				marks[c] = make([]uint64, words)
			}
			n.setBit(marks[c], ch.j)
			if ch.new != nil {
				adds[c] = append(adds[c], ch.j)
			}
		}
	}
	if marks[ColName] != nil {
		n.orders[ColName] = mergeOrder(b.orders[ColName], marks[ColName], adds[ColName], n.cmpName)
	} else {
		n.orders[ColName], n.nameRank = b.orders[ColName], b.nameRank
	}
	ranks := creatorRanks(n.creators)
	for c := ColName + 1; c < numColumns; c++ {
		switch {
		case b.orders[c] == nil:
			// not sorted: computed on demand from the sort keys
		case marks[c] == nil:
			n.orders[c] = b.orders[c]
		default:
			if n.nameRank == nil {
				n.rankNames()
			}
			n.orders[c] = mergeOrder(b.orders[c], marks[c], adds[c], n.colCmp(c, ranks))
		}
	}
}

// written returns a with a[j] = v, copied first unless owned already
// (or unless a[j] is v).
func written(a []uint32, j int32, v uint32, owned *bool) []uint32 {
	if a[j] == v {
		return a
	}
	if !*owned {
		a, *owned = slices.Clone(a), true
	}
	a[j] = v
	return a
}

// grown returns a with one more element, copied first unless owned.
func grown(a []uint32, owned *bool) []uint32 {
	if !*owned {
		a, *owned = slices.Grow(slices.Clone(a), 1), true
	}
	return append(a, 0)
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// patchText gives every changed key whose searchable text changed a new
// haystack segment, and orphans its old one. The haystack and segment
// starts only grow, so the base's view of them stays valid; the per-key
// and per-segment maps are copied.
func (n *Data) patchText(chs []change) {
	var copied bool
	for _, ch := range chs {
		if ch.old != nil && ch.new != nil && ch.old.Name == ch.new.Name && ch.old.ID == ch.new.ID && ch.old.Description == ch.new.Description {
			continue
		}
		if !copied {
			n.segKey, n.keySeg = n.segmentMaps()
			if n.descOf != nil {
				n.descOf = slices.Clone(n.descOf)
			}
			copied = true
		}
		if ch.old != nil {
			n.segKey[n.keySeg[ch.j]] = -1
		}
		for int(ch.j) >= len(n.keySeg) {
			n.keySeg = append(n.keySeg, -1)
		}
		if int(ch.j) < len(n.descOf) {
			n.descOf[ch.j] = noDesc // the new segment holds the description
		}
		if ch.new == nil {
			n.keySeg[ch.j] = -1
			continue
		}
		s := int32(len(n.segs) - 1) // the old end is the new segment's start
		n.hay = appendSegment(n.hay, ch.new)
		n.segs = append(n.segs, int32(len(n.hay)))
		n.segKey = append(n.segKey, ch.j)
		n.keySeg[ch.j] = s
	}
}

// segmentMaps returns copies of segKey and keySeg to change, made from
// the identity when they are nil.
func (n *Data) segmentMaps() (segKey, keySeg []int32) {
	if n.segKey != nil {
		return slices.Clone(n.segKey), slices.Clone(n.keySeg)
	}
	segKey = make([]int32, len(n.segs)-1)
	for s := range segKey {
		segKey[s] = int32(s)
	}
	return segKey, slices.Clone(segKey)
}

// patchLevels rebuilds the filter levels for n's order: each level's
// bitmap is re-evaluated for the changed keys only.
func (n *Data) patchLevels(old []filterLevel, chs []change) {
	n.levels = []filterLevel{{idx: n.order(n.col)}}
	words := (len(n.all) + 63) / 64
	for _, l := range old[1:] {
		prev := n.levels[len(n.levels)-1]
		bits := make([]uint64, words)
		copy(bits, l.bits)
		needle := []byte(l.query)
		hits := n.descHits(needle)
		for _, ch := range chs {
			bits[ch.j>>6] &^= 1 << (uint(ch.j) & 63)
			inPrev := prev.bits == nil || prev.bits[ch.j>>6]&(1<<(uint(ch.j)&63)) != 0
			if ch.new != nil && inPrev && n.matches(ch.j, needle, hits) {
				n.setBit(bits, ch.j)
			}
		}
		n.levels = append(n.levels, filterLevel{query: l.query, bits: bits, idx: filterByBits(prev.idx, bits)})
	}
}

// mergeOrder removes the marked indices from order and inserts add at
// the positions cmp gives them. The kept indices are compacted into the
// result itself and the additions merged in from the back, so a patch
// allocates one order per column it changes, not two.
func mergeOrder(order []int32, marked []uint64, add []int32, cmp func(x, y int32) int) []int32 {
	out := make([]int32, 0, len(order)+len(add))
	for _, i := range order {
		if int(i>>6) >= len(marked) || marked[i>>6]&(1<<(uint(i)&63)) == 0 {
			out = append(out, i)
		}
	}
	kept := len(out)
	add = slices.Clone(add)
	slices.SortFunc(add, cmp)
	pos := make([]int, len(add)) // where add[x] goes among the kept
	lo := 0
	for x, a := range add {
		lo += sort.Search(kept-lo, func(y int) bool { return cmp(out[lo+y], a) > 0 })
		pos[x] = lo
	}
	out = out[:kept+len(add)]
	end := kept // out[:end] holds the kept not moved yet
	for x := len(add) - 1; x >= 0; x-- {
		p := pos[x]
		copy(out[p+x+1:end+x+1], out[p:end])
		out[p+x] = add[x]
		end = p
	}
	return out
}
