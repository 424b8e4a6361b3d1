package store

import (
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
// resources, creator) in one interned grant that stays in the cache. See
// BENCHMARKS.md, "HTTP at 1M".

// grant is what a key may do and on whose authority. Keys with the same
// role, scopes, resources and creator share one (see grantIntern). Its
// lists are a key's own, which are never mutated once stored.
type grant struct {
	role      model.Role
	creator   string
	scopes    []string
	resources []string
}

// maxGrants bounds an interning table. Past it, keys get unshared grants:
// correct, only no longer cache-friendly.
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
	g := &grant{role: k.Role, creator: k.CreatedBy, scopes: k.Scopes, resources: k.Resources}
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

// setKey makes k e's snapshot and refreshes e's verification facts from
// it, with g = a grant of k. Before e is published no lock is needed;
// after, the caller holds Store.mu.
func (e *entry) setKey(k *model.Key, g *grant) {
	e.key.Store(k)
	e.grant = g
	e.active = k.Active()
	e.expires = model.NeverExpires
	if k.ExpiresAt != nil {
		e.expires = k.ExpiresAt.UnixNano()
	}
	e.created = k.CreatedAt.UnixNano()
	e.id = [16]byte{}
	if len(k.ID) == len(e.id) {
		copy(e.id[:], k.ID)
	}
}

// facts returns the decision's view of e's key. Caller holds Store.mu
// (read).
func (e *entry) facts() model.KeyFacts {
	f := model.KeyFacts{Role: e.grant.role, Scopes: e.grant.scopes, Resources: e.grant.resources,
		Active: e.active, Expires: e.expires}
	if e.id[0] != 0 {
		f.ID = string(e.id[:]) // a tiny allocation, cheaper than a miss on the Key's id
	} else {
		f.ID = e.key.Load().ID
	}
	return f
}
