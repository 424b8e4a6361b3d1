package store

import (
	"sync/atomic"

	"github.com/keyward/keyward/model"
)

// The garbage collector marks every pointer the heap holds, on every
// cycle. With one pointer-rich record per key, a serving process at 1M
// keys spent about 400 ms of CPU per cycle marking the store, and cycles
// come every few hundred MiB of request garbage: that was the largest
// part of the gap between keyward serve and a bare net/http handler at
// 1M keys (BENCHMARKS.md, "Scale, fourth pass").
//
// So a key's entry holds no pointer: entries live in pointer-free chunks
// and are named by slot numbers; the hash index and the id index map to
// slots (maps without pointers are not scanned either); the grant is an
// index into Store.grantTab. What must stay a pointer sits beside the
// entries in chunks of its own: the last-used source (a handful of
// interned strings) and, when kept, the key snapshots.

const (
	slotBits  = 12
	slotChunk = 1 << slotBits // entries per chunk (= loadBatchSize): 512 KiB
	noSlot    = ^uint32(0)
)

// slotTable holds every key's entry. Its structure (chunks, indexes, free
// list) changes only under Store.wmu and Store.mu (write); it is read under
// Store.mu or, by writers, under Store.wmu alone.
type slotTable struct {
	ents  [][]entry                  // chunks of slotChunk entries, pointer-free
	froms [][]atomic.Pointer[string] // each slot's last-used source (interned)
	// snaps holds each key's snapshot, chunk by chunk beside ents, when
	// snapshots are kept (see Store.keepSnaps); nil otherwise.
	snaps [][]*model.Key
	used  uint32   // slots handed out so far, freed ones included
	free  []uint32 // freed slots, reused first
	live  int
	byID  map[[16]byte]uint32 // keys with a 16-byte id (every id keyward makes)
	odd   map[string]uint32   // any other id (a hand-made or damaged file)
	oddID map[uint32]string   // slot -> odd id
}

func newSlotTable(n int) slotTable {
	return slotTable{byID: make(map[[16]byte]uint32, n)}
}

// at returns slot i's entry.
func (st *slotTable) at(i uint32) *entry { return &st.ents[i>>slotBits][i&(slotChunk-1)] }

// from returns slot i's last-used source.
func (st *slotTable) from(i uint32) *atomic.Pointer[string] {
	return &st.froms[i>>slotBits][i&(slotChunk-1)]
}

// snap returns slot i's snapshot, nil when snapshots are not kept.
func (st *slotTable) snap(i uint32) *model.Key {
	if st.snaps == nil {
		return nil
	}
	return st.snaps[i>>slotBits][i&(slotChunk-1)]
}

func (st *slotTable) setSnap(i uint32, k *model.Key) {
	if st.snaps != nil {
		st.snaps[i>>slotBits][i&(slotChunk-1)] = k
	}
}

// lookup returns the slot of key id.
func (st *slotTable) lookup(id string) (uint32, bool) {
	if len(id) == 16 {
		i, ok := st.byID[id16(id)]
		return i, ok
	}
	i, ok := st.odd[id]
	return i, ok
}

// idOf returns the id of the key in slot i.
func (st *slotTable) idOf(i uint32) string {
	if e := st.at(i); e.id != ([16]byte{}) {
		return string(e.id[:])
	}
	return st.oddID[i]
}

// grow adds a chunk (and its source and snapshot chunks). ents, when not
// nil, is a full chunk's worth of entries to adopt (the load's slabs).
func (st *slotTable) grow(ents []entry) {
	if ents == nil {
		ents = make([]entry, slotChunk)
	}
	st.ents = append(st.ents, ents[:slotChunk:slotChunk])
	st.froms = append(st.froms, make([]atomic.Pointer[string], slotChunk))
	if st.snaps != nil {
		st.snaps = append(st.snaps, make([]*model.Key, slotChunk))
	}
}

// alloc gives key id a zeroed, live slot.
func (st *slotTable) alloc(id string) uint32 {
	var i uint32
	if n := len(st.free); n > 0 {
		i = st.free[n-1]
		st.free = st.free[:n-1]
	} else {
		i = st.used
		if int(i>>slotBits) == len(st.ents) {
			st.grow(nil)
		}
		st.used++
	}
	st.index(i, id)
	return i
}

// index makes slot i key id's: live, with its id, and findable.
func (st *slotTable) index(i uint32, id string) {
	e := st.at(i)
	e.live = true
	st.live++
	if len(id) == 16 {
		e.id = id16(id)
		st.byID[e.id] = i
		return
	}
	e.id = [16]byte{}
	if st.odd == nil {
		st.odd, st.oddID = map[string]uint32{}, map[uint32]string{}
	}
	st.odd[id], st.oddID[i] = i, id
}

// release frees slot i. Its entry is zeroed (so a later reader of a stale
// slot number finds no live key there, or another key's id).
func (st *slotTable) release(i uint32) {
	e := st.at(i)
	if !e.live {
		return
	}
	if e.id != ([16]byte{}) {
		if st.byID[e.id] == i {
			delete(st.byID, e.id)
		}
	} else if id, ok := st.oddID[i]; ok {
		if st.odd[id] == i {
			delete(st.odd, id)
		}
		delete(st.oddID, i)
	}
	e.reset()
	st.from(i).Store(nil)
	st.setSnap(i, nil)
	st.live--
	st.free = append(st.free, i)
}

// each calls fn for every live slot, in slot order.
func (st *slotTable) each(fn func(i uint32, e *entry)) {
	for c, chunk := range st.ents {
		for j := range chunk {
			if e := &chunk[j]; e.live {
				fn(uint32(c)<<slotBits|uint32(j), e)
			}
		}
	}
}

// id16 is a 16-byte id as an array.
func id16(id string) (a [16]byte) {
	copy(a[:], id)
	return a
}

// entry is the in-memory state of one key: what a verification needs,
// and its buffered last-used time. It holds no pointer (see slots.go): the
// key's full record is read from the file, or from a kept snapshot.
//
// The first 64 bytes are everything a verification reads (see facts.go):
// the secret hash the lookup compares and the key's facts, refreshed by
// setKey whenever the key changes. The entry is 128 bytes, so in a chunk
// each entry starts a cache line.
type entry struct {
	// Guarded by Store.mu: this key's current secret hash (the hash
	// index keeps only a prefix and compares this, see hashIndex) and
	// its facts.
	cur     [32]byte
	expires int64  // Unix ns, model.NeverExpires for none
	created int64  // Unix ns, for the creator check
	grant   uint32 // index into Store.grantTab
	dirty   atomic.Bool
	active  bool
	hasPrev bool // prev holds the previous secret's hash (a grace period runs)
	live    bool // the slot holds a key
	_       [5]byte

	id     [16]byte // the key id, zero if it is not 16 bytes (Store.mu)
	lastAt atomic.Int64
	prev   [32]byte // see hasPrev (Store.mu)
	// stored is the last use the backend is known to hold (Unix ns; from
	// the load, the watch and this node's flushes; Store.mu). On etcd a
	// flush skips keys it is already close to (see flushLastUsed).
	stored int64
}

// reset zeroes e, for a freed slot.
func (e *entry) reset() {
	e.cur, e.expires, e.created, e.grant = [32]byte{}, 0, 0, 0
	e.dirty.Store(false)
	e.active, e.hasPrev, e.live = false, false, false
	e.id, e.prev = [16]byte{}, [32]byte{}
	e.lastAt.Store(0)
	e.stored = 0
}
