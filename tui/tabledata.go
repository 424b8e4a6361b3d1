package tui

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward/model"
)

// column is a sortable column of the keys table.
type column int

const (
	colName column = iota
	colRole
	colStatus
	colExpires
	colLastUsed
	colCreated
	numColumns
)

func (c column) String() string {
	return [...]string{"Name", "Role", "Status", "Expires", "Last used", "Created by"}[c]
}

// tableData is the keys table's data without any UI: a snapshot, its sort
// orders and the filtered view. Everything a keypress touches is cheap:
//   - reversing the sort flips a flag (the view is read backwards);
//   - a column's order is computed once per snapshot and cached;
//   - a filter keystroke that extends the query filters the previous
//     result, and backspace pops back to it, so typing narrows instead of
//     rescanning every key.
//
// Key pointers are immutable store snapshots, so tableData may be built on
// a background goroutine and handed to the UI.
type tableData struct {
	now    time.Time
	all    []*model.Key // the snapshot, in store order
	hay    []byte       // lowercased "name\x00id\x00description\x01" of every key, in store order
	offs   []int32      // offs[i] is where key i starts in hay; offs[len(all)] == len(hay)
	orders [numColumns][]int32
	col    column
	desc   bool
	levels []filterLevel // levels[0] is the unfiltered order
	counts counts
}

// filterLevel is one step of the incremental filter: the matching keys'
// indices in the current order, and the match set as a bitmap over all.
type filterLevel struct {
	query string // lowercased
	bits  []uint64
	idx   []int32
}

type counts struct {
	total, active, disabled, expired, expiring, unused int
}

// UnusedAfter is how long without use makes a key stale in the counts.
const UnusedAfter = 90 * 24 * time.Hour

func newTableData(all []*model.Key, col column, desc bool, query string, now time.Time) *tableData {
	d := &tableData{now: now, all: all, col: col, desc: desc}
	d.counts = countKeys(all, now)
	d.buildHaystack()
	d.levels = []filterLevel{{idx: d.order(col)}}
	d.setQuery(query)
	return d
}

// buildHaystack lays every key's searchable text out contiguously, so a
// filter keystroke scans memory sequentially instead of chasing a million
// pointers.
func (d *tableData) buildHaystack() {
	size := 0
	for _, k := range d.all {
		size += len(k.Name) + len(k.ID) + len(k.Description) + 3
	}
	d.hay = make([]byte, 0, size)
	d.offs = make([]int32, 0, len(d.all)+1)
	for _, k := range d.all {
		d.offs = append(d.offs, int32(len(d.hay)))
		d.hay = appendLower(d.hay, k.Name)
		d.hay = append(d.hay, 0)
		d.hay = appendLower(d.hay, k.ID)
		d.hay = append(d.hay, 0)
		d.hay = appendLower(d.hay, k.Description)
		d.hay = append(d.hay, 1)
	}
	d.offs = append(d.offs, int32(len(d.hay)))
}

func appendLower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return append(b, strings.ToLower(s)...)
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

func countKeys(all []*model.Key, now time.Time) counts {
	c := counts{total: len(all)}
	for _, k := range all {
		switch k.Display(now) {
		case model.ShowActive:
			c.active++
		case model.ShowDisabled:
			c.disabled++
		case model.ShowExpired:
			c.expired++
		case model.ShowExpiring:
			c.expiring++
			c.active++ // still works
		}
		last := k.CreatedAt
		if k.LastUsedAt != nil {
			last = *k.LastUsedAt
		}
		if now.Sub(last) >= UnusedAfter {
			c.unused++
		}
	}
	return c
}

// order returns the snapshot's indices sorted ascending by col, cached.
func (d *tableData) order(col column) []int32 {
	if d.orders[col] == nil {
		d.orders[col] = sortKeys(d.all, col, d.now)
	}
	return d.orders[col]
}

// precompute sorts every column not sorted yet (run off the UI goroutine
// so later sort keys are instant).
func precomputeOrders(all []*model.Key, now time.Time, have [numColumns][]int32) [numColumns][]int32 {
	for c := range numColumns {
		if have[c] == nil {
			have[c] = sortKeys(all, c, now)
		}
	}
	return have
}

// setSort sorts by col; the same column again reverses.
func (d *tableData) setSort(col column) {
	if col == d.col {
		d.desc = !d.desc
		return
	}
	d.col, d.desc = col, false
	order := d.order(col)
	levels := []filterLevel{{idx: order}}
	// Re-apply each filter level to the new order using its bitmap.
	for _, l := range d.levels[1:] {
		levels = append(levels, filterLevel{query: l.query, bits: l.bits, idx: filterByBits(levels[len(levels)-1].idx, l.bits)})
	}
	d.levels = levels
}

func filterByBits(src []int32, bits []uint64) []int32 {
	out := make([]int32, 0, min(len(src), 1024))
	for _, j := range src {
		if bits[j>>6]&(1<<(uint(j)&63)) != 0 {
			out = append(out, j)
		}
	}
	return slices.Clip(out)
}

func (d *tableData) query() string { return d.levels[len(d.levels)-1].query }

// view is the filtered indices in ascending order; at reads it in display
// order.
func (d *tableData) view() []int32 { return d.levels[len(d.levels)-1].idx }
func (d *tableData) len() int      { return len(d.view()) }

func (d *tableData) at(i int) *model.Key {
	v := d.view()
	if i < 0 || i >= len(v) {
		return nil
	}
	if d.desc {
		return d.all[v[len(v)-1-i]]
	}
	return d.all[v[i]]
}

// indexOf finds k (by pointer) in display order, or -1. O(view).
func (d *tableData) indexOf(k *model.Key) int {
	return d.find(func(x *model.Key) bool { return x == k && k != nil })
}

// indexOfID finds a key by id in display order, or -1. O(view).
func (d *tableData) indexOfID(id string) int {
	return d.find(func(x *model.Key) bool { return x.ID == id && id != "" })
}

func (d *tableData) find(match func(*model.Key) bool) int {
	v := d.view()
	for i, j := range v {
		if match(d.all[j]) {
			if d.desc {
				return len(v) - 1 - i
			}
			return i
		}
	}
	return -1
}

// setQuery filters the current order by name, id or description
// (case-insensitive substring). Extending the query narrows the last
// result; shortening it pops back to a saved one.
func (d *tableData) setQuery(q string) {
	q = strings.ToLower(strings.TrimSpace(q))
	for len(d.levels) > 1 && !strings.HasPrefix(q, d.query()) {
		d.levels = d.levels[:len(d.levels)-1]
	}
	if q == d.query() {
		return
	}
	prev := d.levels[len(d.levels)-1]
	bits := make([]uint64, (len(d.all)+63)/64)
	needle := []byte(q)
	if prev.bits != nil && len(prev.idx) < len(d.all)/8 {
		// Few candidates: check only their segments.
		for _, j := range prev.idx {
			if bytes.Contains(d.hay[d.offs[j]:d.offs[j+1]], needle) {
				bits[j>>6] |= 1 << (uint(j) & 63)
			}
		}
	} else {
		// Many candidates: one sequential scan of the whole haystack.
		pos, k := 0, 0
		for {
			i := bytes.Index(d.hay[pos:], needle)
			if i < 0 {
				break
			}
			p := int32(pos + i)
			for d.offs[k+1] <= p {
				k++
			}
			bits[k>>6] |= 1 << (uint(k) & 63)
			pos = int(d.offs[k+1]) // next key
			if pos >= len(d.hay) {
				break
			}
		}
		if prev.bits != nil {
			for i := range bits {
				bits[i] &= prev.bits[i]
			}
		}
	}
	d.levels = append(d.levels, filterLevel{query: q, bits: bits, idx: filterByBits(prev.idx, bits)})
}

// containsFold reports whether h contains the lowercased needle n, folding
// ASCII without allocating; non-ASCII needles take the slow path.
func containsFold(h, n string) bool {
	if len(n) == 0 {
		return true
	}
	for i := 0; i < len(n); i++ {
		if n[i] >= utf8.RuneSelf {
			return strings.Contains(strings.ToLower(h), n)
		}
	}
	first := n[0]
	upper := first
	if first >= 'a' && first <= 'z' {
		upper = first - 'a' + 'A'
	}
	for i := 0; i+len(n) <= len(h); i++ {
		if c := h[i]; c != first && c != upper {
			continue
		}
		j := 1
		for ; j < len(n); j++ {
			c := h[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != n[j] {
				break
			}
		}
		if j == len(n) {
			return true
		}
	}
	return false
}

// sortItem carries precomputed sort keys: p and q are packed keys that
// decide almost every comparison with integer compares; the strings of
// the key itself break the remaining ties.
type sortItem struct {
	p, q, r uint64
	i       int32
}

func sortKeys(all []*model.Key, col column, now time.Time) []int32 {
	items := make([]sortItem, len(all))
	for i, k := range all {
		it := sortItem{i: int32(i), q: prefix8(k.Name), r: prefix8(tail(k.Name, 8))}
		switch col {
		case colName:
			it.p, it.q, it.r = prefix8(k.Name), prefix8(tail(k.Name, 8)), prefix8(tail(k.Name, 16))
		case colRole:
			it.p = uint64(roleRank(k.Role))
		case colStatus:
			it.p = uint64(statusRank(k.Display(now)))
		case colExpires:
			it.p = math.MaxUint64
			if k.ExpiresAt != nil {
				it.p = uint64(k.ExpiresAt.Unix() + 1<<40)
			}
		case colLastUsed:
			if k.LastUsedAt != nil {
				it.p = uint64(k.LastUsedAt.UnixNano())
			}
		case colCreated:
			it.p, it.q, it.r = prefix8(k.CreatedBy), prefix8(tail(k.CreatedBy, 8)), prefix8(tail(k.CreatedBy, 16))
		}
		items[i] = it
	}
	slices.SortFunc(items, func(x, y sortItem) int {
		if c := cmp.Compare(x.p, y.p); c != 0 {
			return c
		}
		if c := cmp.Compare(x.q, y.q); c != 0 {
			return c
		}
		if c := cmp.Compare(x.r, y.r); c != 0 {
			return c
		}
		a, b := all[x.i], all[y.i]
		if col == colCreated {
			if c := compareFold(a.CreatedBy, b.CreatedBy); c != 0 {
				return c
			}
			if c := cmp.Compare(prefix8(a.Name), prefix8(b.Name)); c != 0 {
				return c
			}
		}
		if c := compareFold(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := make([]int32, len(items))
	for i := range items {
		out[i] = items[i].i
	}
	return out
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
