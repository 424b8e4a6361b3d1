package store

import (
	"context"
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	i, previous, ok := s.hashes.lookup(&h, &s.slots)
	if !ok {
		s.mu.RUnlock()
		return model.Decide(model.VerifyInput{})
	}
	// Only the entry's first line and its (shared, cached) grant are read
	// (see facts.go).
	f, g := s.facts(i)
	// An operator deleted and later re-added under the same name is a
	// different account: keys the old one created stay refused.
	creatorActive := model.CreatorActive(s.ops[g.creator], s.slots.at(i).created)
	if previous {
		if until, ok := s.graces[f.ID]; !ok || !now.Before(until) {
			s.mu.RUnlock()
			return model.Decide(model.VerifyInput{GraceExpired: true})
		}
	}
	res := model.DecideFacts(&f, creatorActive, scope, resource, now.UnixNano())
	if res.Valid && !s.opts.NoLastUsed {
		// Under s.mu: a slot freed by a delete may be reused, and must
		// not receive this key's last-used.
		s.touch(i, now, source)
	}
	s.mu.RUnlock()
	if f.Expires != model.NeverExpires {
		t := time.Unix(0, f.Expires).UTC()
		res.ExpiresAt = &t
	}
	return res
}

// touch buffers a last-used record in slot i's entry. Caller holds s.mu
// (read).
func (s *Store) touch(i uint32, now time.Time, source string) {
	e := s.slots.at(i)
	e.lastAt.Store(now.UnixNano())
	from := s.slots.from(i)
	if p := from.Load(); p == nil || *p != source {
		from.Store(s.sources.get(source))
	}
	if e.dirty.CompareAndSwap(false, true) {
		s.dirtyMu.Lock()
		s.dirty = append(s.dirty, i)
		s.dirtyMu.Unlock()
	}
}

// applyChunk bounds how many in-memory updates a bulk write applies per
// hold of s.mu, so readers are not stalled behind a large batch.
const applyChunk = 1024

// FlushLastUsed writes buffered last-used records in one transaction and
// folds them into the keys' snapshots. It runs every FlushInterval and on
// Close; at most one interval of last-used data is lost on a crash.
func (s *Store) FlushLastUsed() error { return s.flushLastUsed(true) }

// lastUsedEvery is how far ahead of the stored last use a key's must be
// before a node on etcd writes it: each key is written about once per
// interval cluster-wide, whatever the verification rate.
const lastUsedEvery = time.Minute

// flushLastUsed is FlushLastUsed. On a shared backend, unless all, it
// writes only the keys whose last use is at least lastUsedEvery past the
// one stored (by any node: the watch reports their writes); the others
// stay buffered.
func (s *Store) flushLastUsed(all bool) (err error) {
	recs := s.takeDirty()
	if s.shared && !all {
		recs = s.dueLastUsed(recs)
	}
	if len(recs) == 0 {
		return nil
	}
	defer s.observeFlush(time.Now(), len(recs), &err)
	// Write in key order. bbolt splits nodes only at commit, so random
	// inserts into a bucket with few records (the first flush after a bulk
	// import) grow one huge node and memmove it on every Put: 200k
	// first-time records took 67 s and held the writer lock all along.
	// (etcd batches by key range too.)
	slices.SortFunc(recs, func(a, b lastUsedRec) int { return strings.Compare(a.id, b.id) })
	s.wmu.Lock()
	defer s.wmu.Unlock()
	recs = s.stillLive(recs)
	ids, err := s.putLastUsed(recs)
	if err != nil {
		s.requeueDirty(recs)
		return err
	}
	s.foldLastUsed(recs)
	s.markStored(recs)
	if len(ids) > 0 {
		s.publish(Change{Kind: LastUsed, IDs: ids})
	}
	return nil
}

// markStored notes that recs are stored (see entry.stored).
func (s *Store) markStored(recs []lastUsedRec) {
	for lo := 0; lo < len(recs); lo += applyChunk {
		s.mu.Lock()
		for _, r := range recs[lo:min(lo+applyChunk, len(recs))] {
			if s.slots.idOf(r.slot) == r.id {
				if e := s.slots.at(r.slot); r.at > e.stored {
					e.stored = r.at
				}
			}
		}
		s.mu.Unlock()
	}
}

// dueLastUsed keeps the records a node on etcd should write now (see
// flushLastUsed) and puts the others back in the buffer; records no newer
// than what is stored are dropped.
func (s *Store) dueLastUsed(recs []lastUsedRec) []lastUsedRec {
	due := recs[:0]
	var later []lastUsedRec
	s.mu.RLock()
	for _, r := range recs {
		i, ok := s.slots.lookup(r.id)
		if !ok || i != r.slot {
			continue
		}
		switch stored := s.slots.at(i).stored; {
		case r.at <= stored:
		case r.at-stored >= int64(lastUsedEvery):
			due = append(due, r)
		default:
			later = append(later, r)
		}
	}
	s.mu.RUnlock()
	s.requeueDirty(later)
	return due
}

// takeDirty empties the buffer of dirty slots and returns their records.
func (s *Store) takeDirty() []lastUsedRec {
	s.dirtyMu.Lock()
	batch := s.dirty
	s.dirty, s.announced = nil, 0
	s.dirtyMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	recs := make([]lastUsedRec, 0, len(batch))
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, i := range batch {
		e := s.slots.at(i)
		if !e.dirty.Swap(false) || !e.live {
			continue // listed twice, or freed since
		}
		r := lastUsedRec{slot: i, id: s.slots.idOf(i), at: e.lastAt.Load()}
		if p := s.slots.from(i).Load(); p != nil {
			r.from = *p
		}
		recs = append(recs, r)
	}
	return recs
}

// stillLive drops the records of keys deleted since they were taken.
// Memory and file agree here: deletes commit and update memory under
// wmu, which the caller holds. (Asking the keys bucket instead was a
// B-tree search per record, a third of the flush's CPU at 1M keys.)
func (s *Store) stillLive(recs []lastUsedRec) []lastUsedRec {
	live := recs[:0]
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range recs {
		if i, ok := s.slots.lookup(r.id); ok && i == r.slot {
			live = append(live, r)
		}
	}
	return live
}

// putLastUsed writes recs (in key order) in one batch and returns their
// ids.
func (s *Store) putLastUsed(recs []lastUsedRec) ([]string, error) {
	out := make([]LastUsedRec, len(recs))
	ids := make([]string, len(recs))
	for i, r := range recs {
		out[i] = LastUsedRec{ID: r.id, At: r.at, From: r.from}
		ids[i] = r.id
	}
	if err := s.be.MergeLastUsed(context.Background(), out); err != nil {
		return nil, err
	}
	return ids, nil
}

// requeueDirty puts records whose write failed back in the buffer, so the
// next flush retries them.
func (s *Store) requeueDirty(recs []lastUsedRec) {
	s.mu.RLock()
	s.dirtyMu.Lock()
	for _, r := range recs {
		if i, ok := s.slots.lookup(r.id); ok && i == r.slot && s.slots.at(i).dirty.CompareAndSwap(false, true) {
			s.dirty = append(s.dirty, i)
		}
	}
	s.dirtyMu.Unlock()
	s.mu.RUnlock()
}

// lastUsedRec is a buffered last-used record being flushed.
type lastUsedRec struct {
	slot uint32
	id   string
	at   int64
	from string
}

// foldLastUsed puts flushed records into the kept snapshots, if any.
// Caller holds s.wmu: snapshots are replaced and dropped only under it.
//
// The new snapshots are built outside s.mu, then swapped in by chunks,
// so a verification never waits for more than one chunk of pointer
// stores. One allocation per key, not one array: a snapshot must not keep
// a whole flush's worth of others alive.
func (s *Store) foldLastUsed(recs []lastUsedRec) {
	s.mu.RLock()
	var cur []*model.Key
	if s.slots.snaps != nil {
		cur = make([]*model.Key, len(recs))
		for i, r := range recs {
			cur[i] = s.slots.snap(r.slot)
		}
	}
	s.mu.RUnlock()
	if cur == nil {
		return
	}
	next := make([]*model.Key, len(recs))
	for i, r := range recs {
		if cur[i] == nil {
			continue
		}
		k := *cur[i] // shallow copy: slices are shared and never mutated
		t := time.Unix(0, r.at).UTC()
		k.LastUsedAt, k.LastUsedFrom = &t, r.from
		next[i] = &k
	}
	for lo := 0; lo < len(recs); lo += applyChunk {
		s.mu.Lock()
		for i := lo; i < min(lo+applyChunk, len(recs)); i++ {
			// (On etcd the sync loop may have freed and reused the
			// slot meanwhile: check it still holds the key.)
			if next[i] != nil && s.slots.idOf(recs[i].slot) == recs[i].id {
				s.slots.setSnap(recs[i].slot, next[i]) // only last-used changed: the facts stand
			}
		}
		s.mu.Unlock()
	}
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
