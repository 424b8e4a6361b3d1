package tui

import (
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
	orders [numColumns][]*model.Key
	col    column
	desc   bool
	levels []filterLevel // levels[0] is the unfiltered order
	counts counts
}

type filterLevel struct {
	query string // lowercased
	keys  []*model.Key
}

type counts struct {
	total, active, disabled, expired, expiring, unused int
}

// UnusedAfter is how long without use makes a key stale in the counts.
const UnusedAfter = 90 * 24 * time.Hour

func newTableData(all []*model.Key, col column, desc bool, query string, now time.Time) *tableData {
	d := &tableData{now: now, all: all, col: col, desc: desc}
	d.counts = countKeys(all, now)
	d.levels = []filterLevel{{keys: d.order(col)}}
	d.setQuery(query)
	return d
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

// order returns the snapshot sorted ascending by col, cached.
func (d *tableData) order(col column) []*model.Key {
	if d.orders[col] == nil {
		d.orders[col] = sortKeys(d.all, col, d.now)
	}
	return d.orders[col]
}

// setSort sorts by col; the same column again reverses.
func (d *tableData) setSort(col column) {
	if col == d.col {
		d.desc = !d.desc
		return
	}
	d.col, d.desc = col, false
	q := d.query()
	d.levels = []filterLevel{{keys: d.order(col)}}
	d.setQuery(q)
}

func (d *tableData) query() string { return d.levels[len(d.levels)-1].query }

// view is the filtered keys in ascending order; at reads it in display order.
func (d *tableData) view() []*model.Key { return d.levels[len(d.levels)-1].keys }
func (d *tableData) len() int           { return len(d.view()) }

func (d *tableData) at(i int) *model.Key {
	v := d.view()
	if i < 0 || i >= len(v) {
		return nil
	}
	if d.desc {
		return v[len(v)-1-i]
	}
	return v[i]
}

// indexOf finds k (by pointer) in display order, or -1. O(view).
func (d *tableData) indexOf(k *model.Key) int {
	if k == nil {
		return -1
	}
	v := d.view()
	for i, x := range v {
		if x == k {
			if d.desc {
				return len(v) - 1 - i
			}
			return i
		}
	}
	return -1
}

// indexOfID finds a key by id in display order, or -1. O(view).
func (d *tableData) indexOfID(id string) int {
	if id == "" {
		return -1
	}
	v := d.view()
	for i, x := range v {
		if x.ID == id {
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
	src := d.view()
	out := make([]*model.Key, 0, min(len(src), 1024))
	for _, k := range src {
		if matchKey(k, q) {
			out = append(out, k)
		}
	}
	d.levels = append(d.levels, filterLevel{query: q, keys: slices.Clip(out)})
}

func matchKey(k *model.Key, q string) bool {
	return containsFold(k.Name, q) || containsFold(k.ID, q) || containsFold(k.Description, q)
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

// sortItem carries precomputed sort keys: p is a packed primary key that
// decides most comparisons with one integer compare; a and b break ties.
type sortItem struct {
	p    uint64
	a, b string
	k    *model.Key
}

func sortKeys(all []*model.Key, col column, now time.Time) []*model.Key {
	items := make([]sortItem, len(all))
	for i, k := range all {
		it := sortItem{k: k, a: k.Name}
		switch col {
		case colName:
			it.p = prefix8(k.Name)
		case colRole:
			it.p = uint64(roleRank(k.Role))<<56 | prefix8(k.Name)>>8
		case colStatus:
			it.p = uint64(statusRank(k.Display(now)))<<56 | prefix8(k.Name)>>8
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
			it.p, it.a, it.b = prefix8(k.CreatedBy), k.CreatedBy, k.Name
		}
		items[i] = it
	}
	slices.SortFunc(items, func(x, y sortItem) int {
		if c := cmp.Compare(x.p, y.p); c != 0 {
			return c
		}
		if c := compareFold(x.a, y.a); c != 0 {
			return c
		}
		if c := compareFold(x.b, y.b); c != 0 {
			return c
		}
		return strings.Compare(x.k.ID, y.k.ID)
	})
	out := make([]*model.Key, len(items))
	for i := range items {
		out[i] = items[i].k
	}
	return out
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
