package tui

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
)

// Sorting a million keys through *model.Key pointers costs seconds: every
// comparison chases two pointers into a heap far bigger than the cache.
// So each key's sort keys are laid out once, when the snapshot is built,
// in a compact row (keyRow), and every column's order is computed from
// those rows without comparisons where possible:
//
//   - Name: an LSD radix sort on the first 24 folded bytes of the name,
//     then a comparison sort of the rare runs that share those 24 bytes.
//   - Role, Status, Created by (a handful of distinct values): a counting
//     sort that walks the name order, so ties stay in name order.
//   - Expires, Last used: a stable LSD radix sort of (key, index) pairs
//     laid out in name order, so ties stay in name order too.
//
// Every column therefore orders by (column value, name rank), a total
// order that the live patches (tablepatch.go) keep with binary searches.

// keyRow holds one key's sort keys.
type keyRow struct {
	exp     uint64 // order-preserving expiry; math.MaxUint64 when it never expires
	used    uint64 // last use in unix nanos (offset); 0 when never used
	creator uint32 // index into tableData.creators
	role    uint8
	status  uint8
}

func makeRow(k *model.Key, now time.Time, creator uint32) keyRow {
	r := keyRow{exp: math.MaxUint64, creator: creator, role: uint8(roleRank(k.Role)), status: uint8(statusRank(k.Display(now)))}
	if k.ExpiresAt != nil {
		r.exp = uint64(k.ExpiresAt.Unix()) ^ (1 << 63) // signed → unsigned order
	}
	if k.LastUsedAt != nil {
		r.used = uint64(k.LastUsedAt.UnixNano()) ^ (1 << 63)
	}
	return r
}

// pair is what the radix sort moves: a key and a snapshot index.
type pair struct {
	k uint64
	i int32
}

// radixSort sorts a by k, stably, with 8-bit LSD passes, skipping the
// digits every key shares. It returns the sorted slice and the other
// one, free for reuse.
func radixSort(a, buf []pair) (sorted, free []pair) {
	var hist [8][256]int32
	for _, p := range a {
		k := p.k
		for d := range 8 {
			hist[d][byte(k>>(8*d))]++
		}
	}
	n := int32(len(a))
	for d := range 8 {
		h := &hist[d]
		if n == 0 || h[byte(a[0].k>>(8*d))] == n {
			continue // every key has the same digit here
		}
		var sum int32
		for b := range h {
			h[b], sum = sum, sum+h[b]
		}
		shift := 8 * d
		for _, p := range a {
			b := byte(p.k >> shift)
			buf[h[b]] = p
			h[b]++
		}
		a, buf = buf, a
	}
	return a, buf
}

// namePrefixes holds the first 24 folded bytes of each name, packed.
type namePrefixes struct{ p, q, r []uint64 }

func newNamePrefixes(n int) namePrefixes {
	return namePrefixes{make([]uint64, n), make([]uint64, n), make([]uint64, n)}
}

func (np namePrefixes) set(i int32, name string) {
	np.p[i], np.q[i], np.r[i] = prefix8(name), prefix8(tail(name, 8)), prefix8(tail(name, 16))
}

// sortByName returns the live keys' indices in name order (folded name,
// then id), given their packed prefixes.
func (d *tableData) sortByName(np namePrefixes) []int32 {
	live := make([]int32, 0, d.counts.total)
	for i, k := range d.all {
		if k != nil {
			live = append(live, int32(i))
		}
	}
	p, q, r := np.p, np.q, np.r
	a, buf := make([]pair, len(live)), make([]pair, len(live))
	for j, i := range live {
		a[j] = pair{k: r[i], i: i}
	}
	a, buf = radixSort(a, buf)
	for _, word := range [][]uint64{q, p} { // stable passes: r, then q, then p
		for j := range a {
			a[j].k = word[a[j].i]
		}
		a, buf = radixSort(a, buf)
	}
	out := make([]int32, len(a))
	for j := range a {
		out[j] = a[j].i
	}
	// Names that share their first 24 folded bytes: finish by comparison.
	for s := 0; s < len(out); {
		e := s + 1
		for e < len(out) && p[out[e]] == p[out[s]] && q[out[e]] == q[out[s]] && r[out[e]] == r[out[s]] {
			e++
		}
		if e-s > 1 {
			slices.SortFunc(out[s:e], func(x, y int32) int { return d.cmpName(x, y) })
		}
		s = e
	}
	return out
}

func (d *tableData) cmpName(x, y int32) int {
	a, b := d.all[x], d.all[y]
	if c := compareFold(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// creatorRanks ranks the creator names in folded order.
func creatorRanks(creators []string) []uint32 {
	idx := make([]int, len(creators))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if c := compareFold(creators[a], creators[b]); c != 0 {
			return c
		}
		return strings.Compare(creators[a], creators[b])
	})
	ranks := make([]uint32, len(creators))
	for r, i := range idx {
		ranks[i] = uint32(r)
	}
	return ranks
}

// colKey returns key i's value in column col (not Name); ranks are the
// creator ranks for colCreated.
func (d *tableData) colKey(col column, i int32, ranks []uint32) uint64 {
	r := &d.rows[i]
	switch col {
	case colRole:
		return uint64(r.role)
	case colStatus:
		return uint64(r.status)
	case colExpires:
		return r.exp
	case colLastUsed:
		return r.used
	case colCreated:
		return uint64(ranks[r.creator])
	}
	return 0
}

// sortColumn computes col's order from the rows and the name order.
func (d *tableData) sortColumn(col column) []int32 {
	byName := d.orders[colName]
	if col == colName {
		return byName
	}
	var ranks []uint32
	buckets := 8
	if col == colCreated {
		ranks = creatorRanks(d.creators)
		buckets = len(d.creators)
	}
	out := make([]int32, len(byName))
	if col == colRole || col == colStatus || col == colCreated {
		// Counting sort over the name order: stable, O(n). The keys are
		// gathered first, so the random reads of rows happen once.
		keys := make([]uint32, len(byName))
		start := make([]int32, buckets+1)
		for pos, i := range byName {
			k := uint32(d.colKey(col, i, ranks))
			keys[pos] = k
			start[k+1]++
		}
		for b := 1; b <= buckets; b++ {
			start[b] += start[b-1]
		}
		for pos, k := range keys {
			out[start[k]] = byName[pos]
			start[k]++
		}
		return out
	}
	a := make([]pair, len(byName))
	for j, i := range byName {
		a[j] = pair{k: d.colKey(col, i, nil), i: i}
	}
	a, _ = radixSort(a, make([]pair, len(a)))
	for j := range a {
		out[j] = a[j].i
	}
	return out
}

// colCmp returns the comparison that col's order follows: the column
// value, then the name rank (ranks must be the creator ranks).
func (d *tableData) colCmp(col column, ranks []uint32) func(x, y int32) int {
	if col == colName {
		return d.cmpName
	}
	return func(x, y int32) int {
		if c := cmp.Compare(d.colKey(col, x, ranks), d.colKey(col, y, ranks)); c != 0 {
			return c
		}
		return cmp.Compare(d.nameRank[x], d.nameRank[y])
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return ""
	}
	return s[n:]
}

// prefix8 packs the first 8 bytes of s, ASCII-lowercased, big-endian, so
// integer order matches compareFold order on those bytes.
func prefix8(s string) uint64 {
	var b [8]byte
	for i := 0; i < 8 && i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return binary.BigEndian.Uint64(b[:])
}

// compareFold compares with ASCII case folding, byte-wise otherwise.
func compareFold(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return cmp.Compare(x, y)
		}
	}
	return cmp.Compare(len(a), len(b))
}

func roleRank(r model.Role) int {
	switch r {
	case model.RoleAdmin:
		return 0
	case model.RoleEditor:
		return 1
	case model.RoleReadonly:
		return 2
	}
	return 3
}

func statusRank(s model.DisplayStatus) int {
	switch s {
	case model.ShowActive:
		return 0
	case model.ShowExpiring:
		return 1
	case model.ShowExpired:
		return 2
	case model.ShowDisabled:
		return 3
	}
	return 4
}
