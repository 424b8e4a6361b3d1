package tui

import (
	"slices"
	"sort"

	"github.com/keyward/keyward/model"
)

// Live refresh without reloading: the store's change feed names the keys
// that changed (created, updated, deleted, last used), and patch builds a
// new tableData from the current one with just those keys updated. Each
// sort order is patched by removing the changed keys and inserting them
// back at binary-searched positions, which costs O(n) copying plus
// O(m log n) comparisons instead of a full load and sort (about a second
// of CPU at 1M keys). The base is never written: every slice a patch
// changes is copied, so the UI keeps using the base meanwhile.

// frozen returns a copy of d's UI-mutable fields (sort, filter levels,
// cached orders), safe to read on another goroutine while the UI goes on
// changing d.
func (d *tableData) frozen() *tableData {
	c := *d
	c.levels = slices.Clip(slices.Clone(d.levels))
	return &c
}

// buildIDs maps every live key's id to its index.
func (d *tableData) buildIDs() {
	d.ids = make(map[string]int32, d.counts.total)
	for i, k := range d.all {
		if k != nil {
			d.ids[k.ID] = int32(i)
		}
	}
}

// change is one key a patch updates.
type change struct {
	j        int32
	old, new *model.Key // nil old: created; nil new: deleted
}

// patch returns a new tableData with the keys ids re-read through get (nil
// means the key no longer exists). b must be a frozen copy. It also
// returns the index of focusID, or -1.
func (b *tableData) patch(get func(id string) *model.Key, ids []string, focusID string) (*tableData, int32) {
	if b.ids == nil {
		b.buildIDs()
	}
	n := &tableData{now: b.now, col: b.col, desc: b.desc, counts: b.counts, ids: b.ids,
		creators: b.creators, creatorN: b.creatorN, hay: b.hay, segs: b.segs, segKey: b.segKey, keySeg: b.keySeg,
		descs: b.descs, descSegs: b.descSegs, descOf: b.descOf}
	n.all = slices.Clone(b.all)
	n.exp, n.used, n.meta = slices.Clone(b.exp), slices.Clone(b.used), slices.Clone(b.meta)
	ownCreators := false
	var chs []change
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		k := get(id)
		j, ok := n.ids[id]
		switch {
		case ok && n.all[j] == k:
			continue // already current
		case ok:
			chs = append(chs, change{j: j, old: n.all[j], new: k})
			n.counts.add(n.all[j], n.now, -1)
			n.all[j] = k
			if k == nil {
				delete(n.ids, id)
			}
		case k != nil:
			j = int32(len(n.all))
			n.all = append(n.all, k)
			n.exp, n.used, n.meta = append(n.exp, 0), append(n.used, 0), append(n.meta, 0)
			n.ids[id] = j
			chs = append(chs, change{j: j, new: k})
		default:
			continue // created and deleted since
		}
		if k != nil {
			n.counts.add(k, n.now, 1)
			if _, known := n.creatorN[k.CreatedBy]; !known && !ownCreators {
				n.creators, n.creatorN, ownCreators = slices.Clone(n.creators), cloneMap(n.creatorN), true
			}
			n.setSortKeys(j, k)
		}
	}
	focus := int32(-1)
	if j, ok := n.ids[focusID]; ok {
		focus = j
	}
	if len(chs) == 0 {
		n.orders, n.nameRank, n.levels = b.orders, b.nameRank, b.levels
		n.exp, n.used, n.meta = b.exp, b.used, b.meta
		return n, focus
	}
	n.patchText(chs)

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
			case moved || c == colName:
			case c == colCreated: // creator indexes, not ranks: the same in b and n
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
	if marks[colName] != nil {
		n.orders[colName] = mergeOrder(b.orders[colName], marks[colName], adds[colName], n.cmpName)
	} else {
		n.orders[colName], n.nameRank = b.orders[colName], b.nameRank
	}
	ranks := creatorRanks(n.creators)
	for c := colName + 1; c < numColumns; c++ {
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
	n.patchLevels(b.levels, chs)
	return n, focus
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
func (n *tableData) patchText(chs []change) {
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
func (n *tableData) segmentMaps() (segKey, keySeg []int32) {
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
func (n *tableData) patchLevels(old []filterLevel, chs []change) {
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
// the positions cmp gives them.
func mergeOrder(order []int32, marked []uint64, add []int32, cmp func(x, y int32) int) []int32 {
	kept := make([]int32, 0, len(order))
	for _, i := range order {
		if int(i>>6) >= len(marked) || marked[i>>6]&(1<<(uint(i)&63)) == 0 {
			kept = append(kept, i)
		}
	}
	add = slices.Clone(add)
	slices.SortFunc(add, cmp)
	out := make([]int32, 0, len(kept)+len(add))
	lo := 0
	for _, a := range add {
		pos := lo + sort.Search(len(kept)-lo, func(x int) bool { return cmp(kept[lo+x], a) > 0 })
		out = append(out, kept[lo:pos]...)
		out = append(out, a)
		lo = pos
	}
	return append(out, kept[lo:]...)
}
