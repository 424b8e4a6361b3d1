package store

import (
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// Verify checks a presented token for scope and resource (either may be
// empty) and returns a precise code. It reads only memory: the token is
// parsed and checksum-checked first (garbage never reaches a lookup), then
// its SHA-256 is looked up in the index, then model.Decide applies the
// decision table. source (an address, "cli", …) is recorded as last-used
// on success; the write is buffered and flushed in batches.
func (s *Store) Verify(token, scope, resource, source string) model.VerifyResult {
	if _, err := model.ParseToken(token, s.prefix); err != nil {
		return model.VerifyResult{Code: model.CodeMalformed, Reason: err.Error()}
	}
	// Hash through a stack buffer: []byte(token) of a token longer than 32
	// bytes would allocate on every verification.
	var buf [96]byte
	var h [32]byte
	if len(token) <= len(buf) {
		h = sha256.Sum256(buf[:copy(buf[:], token)])
	} else {
		h = sha256.Sum256([]byte(token))
	}
	now := s.now()
	s.mu.RLock()
	e, previous := s.hashes.lookup(&h)
	if e == nil {
		s.mu.RUnlock()
		return model.Decide(model.VerifyInput{})
	}
	// Only the entry's first line and its (shared, cached) grant are read
	// unless the token is a previous secret (see facts.go).
	f := e.facts()
	created, expires := e.created, e.expires
	op := s.ops[e.grant.creator]
	// An operator deleted and later re-added under the same name is a
	// different account: keys the old one created stay refused.
	creatorActive := op != nil && !op.Disabled && op.CreatedAt.UnixNano() <= created
	graceExpired := false
	if previous {
		g := e.key.Load().GraceUntil
		graceExpired = g == nil || !now.Before(*g)
	}
	s.mu.RUnlock()
	if graceExpired {
		return model.Decide(model.VerifyInput{GraceExpired: true})
	}
	res := model.DecideFacts(&f, creatorActive, scope, resource, now.UnixNano())
	if expires != model.NeverExpires {
		t := time.Unix(0, expires).UTC()
		res.ExpiresAt = &t
	}
	if res.Valid && !s.opts.NoLastUsed {
		s.touch(e, now, source)
	}
	return res
}

// touch buffers a last-used record in the key's entry.
func (s *Store) touch(e *entry, now time.Time, source string) {
	e.lastAt.Store(now.UnixNano())
	if p := e.lastFrom.Load(); p == nil || *p != source {
		e.lastFrom.Store(s.sources.get(source))
	}
	if e.dirty.CompareAndSwap(false, true) {
		s.dirtyMu.Lock()
		s.dirty = append(s.dirty, e)
		s.dirtyMu.Unlock()
	}
}

// applyChunk bounds how many in-memory updates a bulk write applies per
// hold of s.mu, so readers are not stalled behind a large batch.
const applyChunk = 1024

// FlushLastUsed writes buffered last-used records in one transaction and
// folds them into the keys' snapshots. It runs every FlushInterval and on
// Close; at most one interval of last-used data is lost on a crash.
func (s *Store) FlushLastUsed() error {
	s.dirtyMu.Lock()
	batch := s.dirty
	s.dirty = nil
	s.dirtyMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	type rec struct {
		e    *entry
		id   string
		at   int64
		from string
	}
	recs := make([]rec, 0, len(batch))
	for _, e := range batch {
		e.dirty.Store(false)
		r := rec{e: e, id: e.key.Load().ID, at: e.lastAt.Load()}
		if p := e.lastFrom.Load(); p != nil {
			r.from = *p
		}
		recs = append(recs, r)
	}
	// Write in key order. bbolt splits nodes only at commit, so random
	// inserts into a bucket with few records (the first flush after a bulk
	// import) grow one huge node and memmove it on every Put: 200k
	// first-time records took 67 s and held the writer lock all along.
	slices.SortFunc(recs, func(a, b rec) int { return strings.Compare(a.id, b.id) })
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// Skip keys deleted since. Memory and file agree here: deletes commit
	// and update memory under wmu, which this flush holds. (Asking the
	// keys bucket instead was a B-tree search per record, a third of the
	// flush's CPU at 1M keys.)
	live := recs[:0]
	s.mu.RLock()
	for _, r := range recs {
		if s.keys[r.id] == r.e {
			live = append(live, r)
		}
	}
	s.mu.RUnlock()
	recs = live
	// bbolt keeps the key and value slices until the commit: one slab for
	// all of them instead of two allocations per record.
	n := 0
	for _, r := range recs {
		n += len(r.id) + 8 + len(r.from)
	}
	slab := make([]byte, 0, n)
	ids := make([]string, 0, len(recs))
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bLastUsed)
		b.FillPercent = 0.9 // sorted inserts: see ImportKeys
		slab = slab[:0]
		ids = ids[:0]
		for _, r := range recs {
			// Within the slab's capacity: appends never move it, so the
			// slices already handed to bbolt stay valid.
			i := len(slab)
			slab = append(slab, r.id...)
			j := len(slab)
			slab = appendLastUsed(slab, r.at, r.from)
			k, v := slab[i:j:j], slab[j:len(slab):len(slab)]
			if err := b.Put(k, v); err != nil {
				return err
			}
			ids = append(ids, r.id)
		}
		return nil
	})
	if err != nil {
		// Put the records back so the next flush retries them.
		s.dirtyMu.Lock()
		for _, r := range recs {
			if r.e.dirty.CompareAndSwap(false, true) {
				s.dirty = append(s.dirty, r.e)
			}
		}
		s.dirtyMu.Unlock()
		return err
	}
	// Build the new snapshots outside s.mu (wmu keeps other writers out),
	// then swap them in by chunks, so a verification never waits for more
	// than one chunk of pointer stores.
	// One allocation per key, not one array: a snapshot must not keep a
	// whole flush's worth of others alive.
	next := make([]*model.Key, len(recs))
	for i, r := range recs {
		k := *r.e.key.Load() // shallow copy: slices are shared and never mutated
		t := time.Unix(0, r.at).UTC()
		k.LastUsedAt, k.LastUsedFrom = &t, r.from
		next[i] = &k
	}
	for lo := 0; lo < len(recs); lo += applyChunk {
		s.mu.Lock()
		for i := lo; i < min(lo+applyChunk, len(recs)); i++ {
			recs[i].e.key.Store(next[i]) // only last-used changed: the entry's facts stand
		}
		s.mu.Unlock()
	}
	if len(ids) > 0 {
		s.publish(Change{Kind: LastUsed, IDs: ids})
	}
	return nil
}

// sourceIntern shares last-used source strings between keys. Traffic
// comes from a few addresses, and a key's entry points at its last one:
// shared, that string stays in the cache, where one copy per key cost a
// cache miss in every verification at 1M keys. Only a changed source
// takes the lock.
type sourceIntern struct {
	mu sync.Mutex
	m  map[string]*string // as presented -> cleaned
}

// maxSources bounds the table; when full it starts over (copies made
// before stay valid, they are only no longer shared).
const maxSources = 4096

func (si *sourceIntern) get(source string) *string {
	si.mu.Lock()
	defer si.mu.Unlock()
	if p, ok := si.m[source]; ok {
		return p
	}
	if si.m == nil || len(si.m) >= maxSources {
		si.m = make(map[string]*string)
	}
	src := cleanSource(source)
	si.m[strings.Clone(source)] = &src
	return &src
}

// cleanSource is a source as stored: without control characters and at
// most 128 bytes, cut on a rune boundary so it stays valid UTF-8.
func cleanSource(source string) string {
	src := model.Sanitize(source)
	if len(src) > 128 {
		n := 128
		for n > 0 && !utf8.RuneStart(src[n]) {
			n--
		}
		src = src[:n]
	}
	return src
}
