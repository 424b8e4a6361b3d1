// Package keytable is the keys table's engine, without any UI: a
// snapshot of keys with its sort orders, its incremental filter, its
// status counts and live patches, built to stay fast at a million keys.
// It imports only model and the standard library; the TUI's keys screen
// (tui/keys.go) draws it.
package keytable

import (
	"bytes"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/keyward/keyward/model"
)

// Column is a sortable column of the keys table.
type Column int

const (
	ColName Column = iota
	ColRole
	ColStatus
	ColExpires
	ColLastUsed
	ColCreated
	numColumns
)

func (c Column) String() string {
	return [...]string{"Name", "Role", "Status", "Expires", "Last used", "Created by"}[c]
}

// Data is the keys table's data without any UI: a snapshot, its sort
// orders and the filtered view. Everything a keypress touches is cheap:
//   - reversing the sort flips a flag (the view is read backwards);
//   - a column's order is computed from compact rows (sort.go) once
//     per snapshot and cached;
//   - a filter keystroke that extends the query filters the previous
//     result, and backspace pops back to it, so typing narrows instead of
//     rescanning every key.
//
// A key keeps its index for the life of the snapshot: store changes are
// patched in (patch.go), deleted keys leave a nil behind. Key
// pointers are immutable store snapshots, and the slices below are never
// written once the Data is handed to the UI (patches copy them), so a
// Data may be built or patched on a background goroutine.
type Data struct {
	now time.Time
	all []*model.Key // index space; nil once deleted
	// ops is the operators at the snapshot, by name: a key's status
	// depends on its creator's account (model.StatusOf). Never written;
	// an operator change patches in a new map (patchOps).
	ops map[string]*model.Operator
	// Sort keys of all[i] (sort.go): Expires, Last used, and the
	// creator, role and status packed in meta.
	exp, used, meta []uint32
	creators        []string // distinct creators; meta's creator indexes it
	creatorN        map[string]uint32
	// The filter's haystack: lowercased "name\x00id\x00description\x01"
	// segments laid out contiguously, so a keystroke scans memory
	// sequentially instead of chasing a million pointers. A patched key
	// gets a new segment at the end; its old one is orphaned.
	hay  []byte
	segs []int32 // segs[s] is where segment s starts; the last entry is len(hay)
	// segKey is the key index of segment s (-1 when orphaned) and keySeg
	// the segment of key i; both nil while segment i is key i's (until a
	// patch changes some key's text), which saves 8 bytes a key.
	segKey []int32
	keySeg []int32
	// Descriptions are mostly a few texts shared by many keys ("Nightly
	// billing job"): up to maxShared distinct ones are kept once, in
	// descs (lowercased, each ending in \x01, descSegs[x] where text x
	// starts, then len(descs)), and descOf[i] names key i's, or is noDesc:
	// no description, or one kept in the key's segment. A filter scans the
	// shared texts, then descOf for the ones that matched.
	descs    []byte
	descSegs []int32
	descOf   []uint16
	orders   [numColumns][]int32
	nameRank []int32 // position of key i in orders[ColName]; built by the patches that need it
	col      Column
	desc     bool
	levels   []filterLevel // levels[0] is the unfiltered order
	counts   Counts
	// ids finds a key's index by id. Only patch jobs use it (one at a
	// time, off the UI goroutine); the first one builds it.
	ids *idIndex
}

// maxShared bounds the shared descriptions; noDesc marks a key without one.
const (
	maxShared = 4096
	noDesc    = math.MaxUint16
)

// filterLevel is one step of the incremental filter: the matching keys'
// indices in the current order, and the match set as a bitmap over all.
type filterLevel struct {
	query string // lowercased
	bits  []uint64
	idx   []int32
}

// Counts are the keys of a snapshot by displayed status, for the status
// bar: Active includes the expiring keys (they still verify); Unused
// counts the keys model.Key.Unused calls stale.
type Counts struct {
	Total, Active, Disabled, Expired, Expiring, CreatorOff, Unused int
}

// New builds the table's data with the name order and col's.
// It may keep all (under 4096 keys it does, as its index space).
//
// At 1M keys its memory is most of the TUI's: what it keeps, and the
// garbage it leaves, which stays RSS until the next GC (far away behind
// a 1 GiB store heap). So two scratch buffers serve the address sort and
// then the name sort, and only those two orders are made here.
func New(all []*model.Key, ops map[string]*model.Operator, col Column, desc bool, query string, now time.Time) *Data {
	n := len(all)
	scratchA, scratchB := make([]uint64, n), make([]uint64, n)
	all = inMemoryOrder(all, scratchA, scratchB)
	d := &Data{now: now, all: all, ops: ops, col: col, desc: desc, creatorN: map[string]uint32{}}
	d.exp, d.used, d.meta = make([]uint32, n), make([]uint32, n), make([]uint32, n)
	// First pass: share the descriptions and size the haystack.
	d.descOf = make([]uint16, n)
	shared := map[string]uint16{}
	size := 0
	for i, k := range all {
		size += len(k.Name) + len(k.ID) + 3
		x, ok := shared[k.Description]
		switch {
		case k.Description == "":
			x = noDesc
		case ok:
		case len(shared) < maxShared:
			x = uint16(len(d.descSegs))
			shared[k.Description] = x
			d.descSegs = append(d.descSegs, int32(len(d.descs)))
			d.descs, _ = appendLower(d.descs, k.Description)
			d.descs = append(d.descs, 1)
		default:
			x = noDesc
			size += len(k.Description)
		}
		d.descOf[i] = x
	}
	d.descSegs = append(d.descSegs, int32(len(d.descs)))
	d.hay = make([]byte, 0, size)
	d.segs = make([]int32, 0, n+1)
	// One pass over the keys (each a cache miss at 1M) fills the rest.
	var odd []uint64 // names whose haystack text is not ASCII-folded bytes
	for i, k := range all {
		st := d.status(k)
		d.setSortKeys(int32(i), k, st)
		d.counts.add(k, st, now, 1)
		d.segs = append(d.segs, int32(len(d.hay)))
		var ascii bool
		if d.hay, ascii = appendLower(d.hay, k.Name); !ascii {
			if odd == nil {
				odd = make([]uint64, (n+63)/64)
			}
			odd[i>>6] |= 1 << (uint(i) & 63)
		}
		d.hay = append(d.hay, 0)
		d.hay, _ = appendLower(d.hay, k.ID)
		d.hay = append(d.hay, 0)
		if d.descOf[i] == noDesc {
			d.hay, _ = appendLower(d.hay, k.Description)
		}
		d.hay = append(d.hay, 1)
	}
	d.segs = append(d.segs, int32(len(d.hay)))
	d.orders[ColName] = d.sortByName(scratchA, scratchB, odd)
	d.levels = []filterLevel{{idx: d.order(col)}}
	d.SetQuery(query)
	return d
}

// inMemoryOrder returns the keys sorted by address. The store hands them
// over in map order, which is random with respect to where they live;
// visiting a million keys (and their strings, allocated beside them)
// that way is one cache miss after another. In address order the
// hardware prefetcher keeps up: the load pass at 1M took 1.6 s before,
// about 0.5 s after. The index order means nothing else, so the sort
// may be coarse: it sorts (address offset << index bits | index) words
// in a and buf (scratch of len(all)), dropping low address bits only if
// the heap spans more than the rest of the word.
//
// The result is a new slice: permuting all in place (saving the 8 MB at
// 1M that the caller's slice becomes) follows the permutation's cycles,
// one dependent cache miss after another, and took 130 ms at 1M where
// this gather, whose loads are independent, takes a fraction of that.
func inMemoryOrder(all []*model.Key, a, buf []uint64) []*model.Key {
	if len(all) < 4096 {
		return all
	}
	lo, hi := uintptr(math.MaxUint), uintptr(0)
	for _, k := range all {
		p := uintptr(unsafe.Pointer(k))
		lo, hi = min(lo, p), max(hi, p)
	}
	idxBits := bits.Len(uint(len(all)))
	shift := max(0, bits.Len64(uint64(hi-lo))-(64-idxBits))
	for i, k := range all {
		a[i] = uint64(uintptr(unsafe.Pointer(k))-lo)>>shift<<idxBits | uint64(i)
	}
	a = radixSort(a, buf, idxBits/8) // the digits below hold only index bits, in order
	out := make([]*model.Key, len(all))
	mask := uint64(1)<<idxBits - 1
	for i, w := range a {
		out[i] = all[w&mask]
	}
	return out
}

// creatorOf interns a creator name (only while d is private to its
// builder: construction or a patch job).
func (d *Data) creatorOf(name string) uint32 {
	if n, ok := d.creatorN[name]; ok {
		return n
	}
	n := uint32(len(d.creators))
	d.creators = append(d.creators, name)
	d.creatorN[name] = n
	return n
}

// rankNames fills nameRank from the name order.
func (d *Data) rankNames() {
	d.nameRank = make([]int32, len(d.all))
	for pos, i := range d.orders[ColName] {
		d.nameRank[i] = int32(pos)
	}
}

// appendSegment appends key k's whole segment (description included).
func appendSegment(b []byte, k *model.Key) []byte {
	b, _ = appendLower(b, k.Name)
	b = append(b, 0)
	b, _ = appendLower(b, k.ID)
	b = append(b, 0)
	b, _ = appendLower(b, k.Description)
	return append(b, 1)
}

// appendLower appends s lowercased: ASCII in place after one copy, the
// rare non-ASCII string through strings.ToLower (ascii false).
func appendLower(b []byte, s string) (_ []byte, ascii bool) {
	start := len(b)
	b = append(b, s...)
	for i := start; i < len(b); i++ {
		c := b[i]
		if c >= utf8.RuneSelf {
			return append(b[:start], strings.ToLower(s)...), false
		}
		if c-'A' < 26 {
			b[i] = c + 'a' - 'A'
		}
	}
	return b, true
}

// OperatorMap indexes operators by name, for model.StatusOf.
func OperatorMap(ops []model.Operator) map[string]*model.Operator {
	m := make(map[string]*model.Operator, len(ops))
	for i := range ops {
		m[ops[i].Name] = &ops[i]
	}
	return m
}

// status is key k's displayed status at the snapshot's time.
func (d *Data) status(k *model.Key) model.DisplayStatus {
	return model.StatusOf(k, d.ops[k.CreatedBy], d.now)
}

// add counts k, whose status is st, into c (sign 1) or takes it out
// (sign -1).
func (c *Counts) add(k *model.Key, st model.DisplayStatus, now time.Time, sign int) {
	c.Total += sign
	switch st {
	case model.ShowActive:
		c.Active += sign
	case model.ShowDisabled:
		c.Disabled += sign
	case model.ShowExpired:
		c.Expired += sign
	case model.ShowExpiring:
		c.Expiring += sign
		c.Active += sign // still works
	case model.ShowCreatorDisabled:
		c.CreatorOff += sign
	}
	if k.Unused(now) {
		c.Unused += sign
	}
}

// order returns the snapshot's indices sorted ascending by col, cached.
func (d *Data) order(col Column) []int32 {
	if d.orders[col] == nil {
		d.orders[col] = d.sortColumn(col)
	}
	return d.orders[col]
}

// SetSort sorts by col; the same column again reverses. Besides the name
// order, only the current column's is kept: sorting a column again costs
// 10-45 ms at 1M, keeping every order 20 bytes a key.
func (d *Data) SetSort(col Column) {
	if col == d.col {
		d.desc = !d.desc
		return
	}
	if d.col != ColName {
		d.orders[d.col] = nil
	}
	d.col, d.desc = col, false
	d.rebuildLevels()
}

// rebuildLevels re-applies every filter level to the current order using
// its bitmap.
func (d *Data) rebuildLevels() {
	levels := []filterLevel{{idx: d.order(d.col)}}
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

// Query is the current filter, lowercased and trimmed.
func (d *Data) Query() string { return d.levels[len(d.levels)-1].query }

// Col is the column sorted by; Desc reports whether the order is reversed.
func (d *Data) Col() Column { return d.col }
func (d *Data) Desc() bool  { return d.desc }

// Now is the time the statuses and counts were computed at.
func (d *Data) Now() time.Time { return d.now }

// Counts are the snapshot's keys by status.
func (d *Data) Counts() Counts { return d.counts }

// Size is the snapshot's index space: every key it has held, deleted
// ones included. Patches cost in proportion to it.
func (d *Data) Size() int { return len(d.all) }

// Creator is the operator who created k, as of the snapshot, or nil.
func (d *Data) Creator(k *model.Key) *model.Operator { return d.ops[k.CreatedBy] }

// SetView sorts by col (reversed if desc) and filters by query, as the
// admin chose: a Data built in the background takes the choices made
// meanwhile.
func (d *Data) SetView(col Column, desc bool, query string) {
	if col != d.col {
		d.SetSort(col)
	}
	d.desc = desc
	d.SetQuery(query)
}

// view is the filtered indices in ascending order; at reads it in display
// order.
func (d *Data) view() []int32 { return d.levels[len(d.levels)-1].idx }

// Len is the number of rows shown (the filtered keys).
func (d *Data) Len() int { return len(d.view()) }

// IdxAt returns the snapshot index shown at display row i, or -1.
func (d *Data) IdxAt(i int) int32 {
	v := d.view()
	if i < 0 || i >= len(v) {
		return -1
	}
	if d.desc {
		return v[len(v)-1-i]
	}
	return v[i]
}

// At returns the key shown at display row i, or nil.
func (d *Data) At(i int) *model.Key {
	if j := d.IdxAt(i); j >= 0 {
		return d.all[j]
	}
	return nil
}

// RowOf returns the display row of snapshot index j, or -1. It scans
// int32s only: about 0.3 ms at 1M.
func (d *Data) RowOf(j int32) int {
	if j < 0 {
		return -1
	}
	v := d.view()
	i := slices.Index(v, j)
	if i < 0 {
		return -1
	}
	if d.desc {
		return len(v) - 1 - i
	}
	return i
}

// IndexOfID finds a key by id in display order, or -1. O(view).
func (d *Data) IndexOfID(id string) int {
	if id == "" {
		return -1
	}
	v := d.view()
	for i, j := range v {
		if d.all[j].ID == id {
			if d.desc {
				return len(v) - 1 - i
			}
			return i
		}
	}
	return -1
}

func (d *Data) setBit(bits []uint64, j int32) { bits[j>>6] |= 1 << (uint(j) & 63) }

// segment returns key j's haystack text.
func (d *Data) segment(j int32) []byte {
	s := j
	if d.keySeg != nil {
		s = d.keySeg[j]
	}
	return d.hay[d.segs[s]:d.segs[s+1]]
}

// descHits reports which shared descriptions contain needle; nil when
// none does.
func (d *Data) descHits(needle []byte) []bool {
	var hits []bool
	for x := 0; x+1 < len(d.descSegs); x++ {
		if bytes.Contains(d.descs[d.descSegs[x]:d.descSegs[x+1]], needle) {
			if hits == nil {
				hits = make([]bool, len(d.descSegs)-1)
			}
			hits[x] = true
		}
	}
	return hits
}

// matches reports whether key j's text contains needle; hits is
// descHits(needle).
func (d *Data) matches(j int32, needle []byte, hits []bool) bool {
	if hits != nil && int(j) < len(d.descOf) {
		if x := d.descOf[j]; x != noDesc && hits[x] {
			return true
		}
	}
	return bytes.Contains(d.segment(j), needle)
}

// SetQuery filters the current order by name, id or description
// (case-insensitive substring). Extending the query narrows the last
// result; shortening it pops back to a saved one.
func (d *Data) SetQuery(q string) {
	q = strings.ToLower(strings.TrimSpace(q))
	for len(d.levels) > 1 && !strings.HasPrefix(q, d.Query()) {
		d.levels = d.levels[:len(d.levels)-1]
	}
	if q == d.Query() {
		return
	}
	prev := d.levels[len(d.levels)-1]
	bits := make([]uint64, (len(d.all)+63)/64)
	needle := []byte(q)
	hits := d.descHits(needle)
	if prev.bits != nil && len(prev.idx) < len(d.all)/8 {
		// Few candidates: check only their segments.
		for _, j := range prev.idx {
			if d.matches(j, needle, hits) {
				d.setBit(bits, j)
			}
		}
	} else {
		// Many candidates: one sequential scan of the whole haystack.
		pos, s := 0, 0
		for {
			i := bytes.Index(d.hay[pos:], needle)
			if i < 0 {
				break
			}
			p := int32(pos + i)
			for d.segs[s+1] <= p {
				s++
			}
			j := int32(s)
			if d.segKey != nil {
				j = d.segKey[s]
			}
			if j >= 0 {
				d.setBit(bits, j)
			}
			pos = int(d.segs[s+1]) // next segment
			if pos >= len(d.hay) {
				break
			}
		}
		if hits != nil {
			for j, x := range d.descOf {
				if x != noDesc && hits[x] {
					d.setBit(bits, int32(j))
				}
			}
		}
		if prev.bits != nil {
			for i := range bits {
				bits[i] &= prev.bits[i]
			}
		}
	}
	// Appending must not write into a slice a patch job may be reading.
	d.levels = append(slices.Clip(d.levels), filterLevel{query: q, bits: bits, idx: filterByBits(prev.idx, bits)})
}
