package keytable

import (
	"cmp"
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
)

// Sorting a million keys through *model.Key pointers costs seconds: every
// comparison chases two pointers into a heap far bigger than the cache.
// So each key's sort keys are laid out once, when the snapshot is built,
// in compact per-column arrays (4 bytes a key each: Data.exp, used,
// meta), and every column's order is computed from those without
// comparisons where possible:
//
//   - Name: an MSD radix sort on the first 64 folded bytes of the name,
//     4 bytes a round, read from the filter's haystack (which holds the
//     lowercased names), then a comparison sort of the rare runs that
//     share those 64 bytes.
//   - Role, Status, Created by (a handful of distinct values): a counting
//     sort that walks the name order, so ties stay in name order.
//   - Expires, Last used: a stable LSD radix sort of (key << 32 | name
//     position) words, so ties stay in name order too.
//
// Every column therefore orders by (column value, name rank), a total
// order that the live patches (patch.go) keep with binary searches.
//
// Only the name order is built with the snapshot; another column is
// sorted when the admin picks it (10-45 ms at 1M) and cached until the
// next column is picked. Sorting all six in the background cost 96 bytes
// a key at 1M (the orders and their radix buffers, garbage until the
// next GC, which with a 1 GiB store heap is far away).

// Meta packs a key's small sort keys: creator << metaCreator | role <<
// 3 | status.
const (
	metaCreator = 5
	metaRole    = 3
	metaStatus  = 7 // mask
)

// Sort keys of the Expires and Last used columns are unix seconds in a
// uint32 (clamped to 1970..2106): neverExpires sorts last, neverUsed
// (0) first. Keys used in the same second order by name.
const neverExpires = math.MaxUint32

func clampUnix(t time.Time) uint32 {
	return uint32(min(max(t.Unix(), 0), math.MaxUint32-1))
}

// sortKeys returns key k's Expires, Last used and meta sort keys; st is
// its displayed status.
func sortKeys(k *model.Key, st model.DisplayStatus, creator uint32) (exp, used, meta uint32) {
	exp = neverExpires
	if k.ExpiresAt != nil {
		exp = clampUnix(*k.ExpiresAt)
	}
	if k.LastUsedAt != nil {
		used = clampUnix(*k.LastUsedAt) + 1
	}
	meta = creator<<metaCreator | uint32(roleRank(k.Role))<<metaRole | uint32(statusRank(st))
	return exp, used, meta
}

// setSortKeys fills key j's sort keys.
func (d *Data) setSortKeys(j int32, k *model.Key, st model.DisplayStatus) {
	d.exp[j], d.used[j], d.meta[j] = sortKeys(k, st, d.creatorOf(k.CreatedBy))
}

// radixSort sorts a by its bits from byte digit lo up, stably, with
// 8-bit LSD passes, skipping the digits every element shares. It returns
// the sorted slice, which is a or buf.
func radixSort(a, buf []uint64, lo int) []uint64 {
	var hist [8][256]int32
	for _, k := range a {
		for d := lo; d < 8; d++ {
			hist[d][byte(k>>(8*d))]++
		}
	}
	n := int32(len(a))
	for d := lo; d < 8; d++ {
		h := &hist[d]
		if n == 0 || h[byte(a[0]>>(8*d))] == n {
			continue // every key has the same digit here
		}
		var sum int32
		for b := range h {
			h[b], sum = sum, sum+h[b]
		}
		shift := 8 * d
		for _, k := range a {
			b := byte(k >> shift)
			buf[h[b]] = k
			h[b]++
		}
		a, buf = buf, a
	}
	return a
}

// nameChunks is how many 4-byte rounds the name sort makes at most (64
// bytes). A round reads only the keys whose group is still open, so long
// shared prefixes ("Ünïcödé-billing-bot-00…", 24 bytes) cost a few more
// rounds instead of a comparison sort through the key pointers (6.5 s at
// 1M with 24 bytes).
const nameChunks = 16

// sortByName returns the keys' indices in name order (folded name, then
// id). Only for a fresh build: every key live, key i owns segment i. a
// and b are scratch of len(d.all); odd marks the names whose haystack
// text is not their ASCII-folded bytes (non-ASCII), read from the key.
//
// Most significant chunk first: a round sorts each group of keys that
// share the chunks so far by its next 4 bytes (packed above the key
// index in a uint64), splitting it; after 64 bytes the groups left are
// sorted by comparison. A round reads its chunk of every name in index
// order, which is haystack order, so the haystack streams by instead of
// being read at random.
func (d *Data) sortByName(a, b []uint64, odd []uint64) []int32 {
	n := len(d.all)
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i)
	}
	if n < 2 {
		return out
	}
	g := &nameGroups{
		out:   out,
		chunk: make([]uint32, n),
		split: make([]uint64, (n+64)/64), // bit p: position p starts a group; bit n ends the last
		done:  make([]uint64, (n+63)/64), // keys alone in their group: no more chunks to read
	}
	g.split[0] = 1
	g.split[n>>6] |= 1 << (uint(n) & 63)
	for round := range nameChunks {
		d.readChunks(g, odd, round)
		open := false
		for s := 0; s < n; {
			e := g.next(s)
			if e-s > 1 {
				open = g.sort(s, e, a[s:e], b[s:e]) || open
			}
			s = e
		}
		if !open {
			break
		}
	}
	// Names that share their first 64 folded bytes: finish by comparison.
	for s := 0; s < n; {
		e := g.next(s)
		if e-s > 1 {
			slices.SortFunc(out[s:e], func(x, y int32) int { return d.cmpName(x, y) })
		}
		s = e
	}
	return out
}

// nameGroups is the name sort's state: the order so far, split into
// groups of keys that share every chunk read so far.
type nameGroups struct {
	out   []int32  // key indexes in name order so far
	chunk []uint32 // each key's chunk of this round
	split []uint64 // bit p: position p of out starts a group; bit n ends the last
	done  []uint64 // bit i: key i is alone in its group
}

// next returns the first group start after position p.
func (g *nameGroups) next(p int) int {
	p++
	w := g.split[p>>6] >> (uint(p) & 63)
	if w != 0 {
		return p + bits.TrailingZeros64(w)
	}
	for i := p>>6 + 1; ; i++ {
		if g.split[i] != 0 {
			return i<<6 + bits.TrailingZeros64(g.split[i])
		}
	}
}

// readChunks reads chunk round (bytes 4*round to 4*round+3 of the folded
// name) of every key still in a group with others, in index order, which
// is haystack order.
func (d *Data) readChunks(g *nameGroups, odd []uint64, round int) {
	for i := range g.chunk {
		switch {
		case g.done[i>>6]&(1<<(uint(i)&63)) != 0:
		case odd != nil && odd[i>>6]&(1<<(uint(i)&63)) != 0:
			g.chunk[i] = uint32(prefix8(tail(d.all[i].Name, 4*round)) >> 32)
		case round > 0 && g.chunk[i]&0xff == 0:
			g.chunk[i] = 0 // the name ended in the last chunk
		default:
			g.chunk[i] = hayChunk(d.hay[int(d.segs[i])+4*round:])
		}
	}
}

// sort sorts the group at positions s to e by this round's chunk (packed
// above the key index; w and buf are scratch of its length), splitting it
// where the chunk changes and marking the keys left alone. It reports
// whether some keys still share a group.
func (g *nameGroups) sort(s, e int, w, buf []uint64) (open bool) {
	for p, i := range g.out[s:e] {
		w[p] = uint64(g.chunk[i])<<32 | uint64(uint32(i))
	}
	if len(w) < 256 {
		slices.Sort(w)
	} else {
		w = radixSort(w, buf, 4)
	}
	run := 0
	for p, x := range w {
		g.out[s+p] = int32(uint32(x))
		if p > 0 && x>>32 != w[p-1]>>32 {
			g.split[(s+p)>>6] |= 1 << (uint(s+p) & 63)
			if p-run == 1 {
				i := uint32(w[run])
				g.done[i>>6] |= 1 << (i & 63)
			}
			run = p
		}
		open = open || p-run > 0
	}
	if len(w)-run == 1 {
		i := uint32(w[run])
		g.done[i>>6] |= 1 << (i & 63)
	}
	return open
}

// hayChunk packs the first 4 bytes of h before a 0 byte (the end of the
// name in a segment), big-endian, zero-padded.
func hayChunk(h []byte) uint32 {
	if len(h) < 4 {
		var b [4]byte
		copy(b[:], h)
		h = b[:]
	}
	w := binary.BigEndian.Uint32(h)
	// The high bit of each zero byte, exactly (no borrow between bytes).
	z := ^((w&0x7f7f7f7f + 0x7f7f7f7f) | w | 0x7f7f7f7f)
	if z == 0 {
		return w
	}
	return w &^ (math.MaxUint32 >> (bits.LeadingZeros32(z) &^ 7))
}

func (d *Data) cmpName(x, y int32) int {
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
// creator ranks for ColCreated.
func (d *Data) colKey(col Column, i int32, ranks []uint32) uint32 {
	switch col {
	case ColRole:
		return d.meta[i] >> metaRole & 3
	case ColStatus:
		return d.meta[i] & metaStatus
	case ColExpires:
		return d.exp[i]
	case ColLastUsed:
		return d.used[i]
	case ColCreated:
		return ranks[d.meta[i]>>metaCreator]
	}
	return 0
}

// sortColumn computes col's order from the sort keys and the name order.
func (d *Data) sortColumn(col Column) []int32 {
	byName := d.orders[ColName]
	if col == ColName {
		return byName
	}
	var ranks []uint32
	buckets := 8
	if col == ColCreated {
		ranks = creatorRanks(d.creators)
		buckets = len(d.creators)
	}
	out := make([]int32, len(byName))
	if col == ColRole || col == ColStatus || col == ColCreated {
		// Counting sort over the name order: stable, O(n). The keys are
		// gathered first, so the random reads of the sort keys happen once.
		keys := make([]uint32, len(byName))
		start := make([]int32, buckets+1)
		for pos, i := range byName {
			k := d.colKey(col, i, ranks)
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
	// (key, name position) in one word: the sort moves 8 bytes, not a
	// 16-byte pair, and only over the key's 4 bytes.
	a := make([]uint64, len(byName))
	for pos, i := range byName {
		a[pos] = uint64(d.colKey(col, i, nil))<<32 | uint64(pos)
	}
	a = radixSort(a, make([]uint64, len(a)), 4)
	for j, w := range a {
		out[j] = byName[uint32(w)]
	}
	return out
}

// colCmp returns the comparison that col's order follows: the column
// value, then the name rank (ranks must be the creator ranks, and
// d.nameRank set).
func (d *Data) colCmp(col Column, ranks []uint32) func(x, y int32) int {
	if col == ColName {
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
	case model.ShowCreatorDisabled:
		return 2
	case model.ShowExpired:
		return 3
	case model.ShowDisabled:
		return 4
	}
	return 5
}
