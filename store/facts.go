package store

import (
	"slices"
	"sync"

	"github.com/keyward/keyward/model"
)

// A verification at a million keys is bound by memory latency, not by
// arithmetic: every pointer it follows into a key's data is a likely cache
// and TLB miss (about 0.5 µs each on the 2-vCPU test machine). It used to
// follow six: the hash index, the entry, the Key snapshot, its expiry, its
// scope list and its id. An entry now carries the facts the decision
// needs (model.KeyFacts) in its first cache line, next to the hash the
// lookup compares anyway, and the facts that many keys share (role, scopes,
// resources, creator) in one interned grant (Store.grantTab) that stays in
// the cache. See BENCHMARKS.md, "HTTP at 1M".

// grant is what a key may do and on whose authority. Keys with the same
// role, scopes, resources and creator share one (see grantIntern). Its
// lists are a key's own, which are never mutated once stored.
type grant struct {
	slot      uint32 // its index in Store.grantTab + 1; 0 until it has one (Store.mu)
	role      model.Role
	creator   string
	scopes    []string
	resources []string
}

// maxGrants bounds an interning table. Past it, keys get unshared grants:
// correct, only no longer cache-friendly. Store.grantTab keeps every grant
// it was given, including ones no key uses any more since an edit; that is
// bounded by the writes made since the store was opened.
const maxGrants = 1 << 16

// grantTable interns grants by content. It is not safe for concurrent
// use: load workers have one each, writers share grantIntern's.
type grantTable struct {
	m   map[string]*grant
	buf []byte
}

func (gt *grantTable) get(k *model.Key) *grant {
	b := append(gt.buf[:0], k.Role...)
	b = append(b, 0)
	b = append(b, k.CreatedBy...)
	for _, s := range k.Scopes {
		b = append(b, 0, 's')
		b = append(b, s...)
	}
	for _, r := range k.Resources {
		b = append(b, 0, 'r')
		b = append(b, r...)
	}
	gt.buf = b
	if g, ok := gt.m[string(b)]; ok {
		return g
	}
	// The lists are cloned: a loaded key's lists are in a slab shared
	// with other keys, which a grant must not keep alive.
	g := &grant{role: k.Role, creator: k.CreatedBy, scopes: slices.Clone(k.Scopes), resources: slices.Clone(k.Resources)}
	if gt.m == nil {
		gt.m = make(map[string]*grant)
	}
	if len(gt.m) < maxGrants {
		gt.m[string(b)] = g
	}
	return g
}

// grantIntern is the store's table, for keys written after the load.
type grantIntern struct {
	mu sync.Mutex
	t  grantTable
}

func (gi *grantIntern) get(k *model.Key) *grant {
	gi.mu.Lock()
	defer gi.mu.Unlock()
	return gi.t.get(k)
}

// grantSlot returns g's index in s.grantTab, adding it on first use.
// Caller holds s.mu (write), or the load has not published the store.
func (s *Store) grantSlot(g *grant) uint32 {
	if g.slot == 0 {
		s.grantTab = append(s.grantTab, g)
		g.slot = uint32(len(s.grantTab))
	}
	return g.slot - 1
}

// setFacts refreshes e's verification facts from k (the grant aside).
func (e *entry) setFacts(k *model.Key) {
	e.active = k.Active()
	e.expires = model.NeverExpires
	if k.ExpiresAt != nil {
		e.expires = k.ExpiresAt.UnixNano()
	}
	e.created = k.CreatedAt.UnixNano()
}

// setKey makes k the key in slot i: its facts, its grant g (a grant of
// k) and, when snapshots are kept, its snapshot. Caller holds s.mu
// (write).
func (s *Store) setKey(i uint32, k *model.Key, g *grant) {
	e := s.slots.at(i)
	e.setFacts(k)
	e.grant = s.grantSlot(g)
	s.slots.setSnap(i, k)
}

// facts returns the decision's view of the key in slot i. Caller holds
// s.mu (read).
func (s *Store) facts(i uint32) (model.KeyFacts, *grant) {
	e := s.slots.at(i)
	g := s.grantTab[e.grant]
	f := model.KeyFacts{Role: g.role, Scopes: g.scopes, Resources: g.resources,
		Active: e.active, Expires: e.expires}
	if e.id != ([16]byte{}) {
		f.ID = string(e.id[:]) // a tiny allocation, cheaper than a miss on the key's record
	} else {
		f.ID = s.slots.oddID[i]
	}
	return f, g
}
