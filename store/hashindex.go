package store

import "encoding/binary"

// hashIndex finds a key's entry by the SHA-256 of a presented secret.
//
// It is keyed by the hash's first 8 bytes, not all 32: a map[[32]byte]
// slot holding the hash, an entry pointer and a flag took 48 bytes per key, a
// map[uint64]uint32 slot takes 12. The full hashes are kept once, in the
// entry (cur, and prev during a grace period), and a lookup compares the
// presented hash with them, so a token whose prefix matches a stored hash
// but that is not that hash is refused like any unknown token. Two stored
// hashes may share a prefix (odds about n²/2⁶⁵: 3·10⁻⁸ at 1M keys); the
// one indexed while the prefix is taken goes into overflow, keyed by its
// full hash.
//
// Every indexed hash is its entry's cur, or its prev while hasPrev is set
// (in a damaged file two hash records may name one key as current: the
// one not kept in cur stays indexed but matches nothing). Writers change
// the index and the entries under Store.mu; lookup runs under its read
// lock.
type hashIndex struct {
	byPrefix map[uint64]uint32   // prefix -> slot
	overflow map[[32]byte]uint32 // stored hashes whose prefix was taken
	mask     uint64              // all ones; 0 under the collideHashes test hook
}

func newHashIndex(n int, collide bool) hashIndex {
	x := hashIndex{byPrefix: make(map[uint64]uint32, n), mask: ^uint64(0)}
	if collide {
		x.mask = 0
	}
	return x
}

func (x *hashIndex) prefix(h *[32]byte) uint64 {
	return binary.LittleEndian.Uint64(h[:8]) & x.mask
}

// lookup returns the slot of the key holding h and whether h is its
// previous secret; ok is false if no key holds h.
func (x *hashIndex) lookup(h *[32]byte, st *slotTable) (slot uint32, previous, ok bool) {
	if i, found := x.byPrefix[x.prefix(h)]; found {
		if ok, previous := st.at(i).holds(h); ok {
			return i, previous, true
		}
	}
	if len(x.overflow) == 0 {
		return noSlot, false, false
	}
	if i, found := x.overflow[*h]; found {
		if ok, previous := st.at(i).holds(h); ok {
			return i, previous, true
		}
	}
	return noSlot, false, false
}

// holds reports whether h is e's current secret or, during a grace
// period, its previous one (then previous is true).
func (e *entry) holds(h *[32]byte) (ok, previous bool) {
	if !e.live {
		return false, false
	}
	if e.cur == *h {
		return true, false
	}
	return e.hasPrev && e.prev == *h, true
}

// add indexes h, which slot i holds (as cur or prev) or is about to hold.
func (x *hashIndex) add(h [32]byte, i uint32) {
	p := x.prefix(&h)
	if _, taken := x.byPrefix[p]; !taken {
		x.byPrefix[p] = i
		return
	}
	if x.overflow == nil {
		x.overflow = map[[32]byte]uint32{}
	}
	x.overflow[h] = i
}

// remove drops h, an indexed hash of slot i.
func (x *hashIndex) remove(h [32]byte, i uint32) {
	if _, ok := x.overflow[h]; ok {
		delete(x.overflow, h)
		return
	}
	p := x.prefix(&h)
	if j, ok := x.byPrefix[p]; ok && j == i {
		delete(x.byPrefix, p)
	}
}

// len returns how many hashes are indexed.
func (x *hashIndex) len() int { return len(x.byPrefix) + len(x.overflow) }
