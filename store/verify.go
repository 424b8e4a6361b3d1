package store

import (
	"crypto/sha256"
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
	slot := s.hashes[h]
	e := slot.e
	var creatorActive bool
	var k *model.Key
	if e != nil {
		k = e.key.Load()
		op := s.ops[k.CreatedBy]
		// An operator deleted and later re-added under the same name is a
		// different account: keys the old one created stay refused.
		creatorActive = op != nil && !op.Disabled && !op.CreatedAt.After(k.CreatedAt)
	}
	s.mu.RUnlock()
	in := model.VerifyInput{Key: k, CreatorActive: creatorActive, Scope: scope, Resource: resource, Now: now}
	if k != nil && slot.previous {
		in.GraceExpired = k.GraceUntil == nil || !now.Before(*k.GraceUntil)
	}
	res := model.Decide(in)
	if res.Valid && !s.opts.NoLastUsed {
		s.touch(e, now, source)
	}
	return res
}

// touch buffers a last-used record in the key's entry.
func (s *Store) touch(e *entry, now time.Time, source string) {
	e.lastAt.Store(now.UnixNano())
	if p := e.lastFrom.Load(); p == nil || *p != source {
		src := model.Sanitize(source)
		if len(src) > 128 {
			// Cut on a rune boundary so the stored text stays valid UTF-8.
			n := 128
			for n > 0 && !utf8.RuneStart(src[n]) {
				n--
			}
			src = src[:n]
		}
		e.lastFrom.Store(&src)
	}
	if e.dirty.CompareAndSwap(false, true) {
		s.dirtyMu.Lock()
		s.dirty = append(s.dirty, e)
		s.dirtyMu.Unlock()
	}
}

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
		at   int64
		from string
	}
	recs := make([]rec, 0, len(batch))
	for _, e := range batch {
		e.dirty.Store(false)
		r := rec{e: e, at: e.lastAt.Load()}
		if p := e.lastFrom.Load(); p != nil {
			r.from = *p
		}
		recs = append(recs, r)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var ids []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bLastUsed)
		kb := tx.Bucket(bKeys)
		for _, r := range recs {
			id := r.e.key.Load().ID
			if kb.Get([]byte(id)) == nil {
				continue // deleted since
			}
			if err := b.Put([]byte(id), encodeLastUsed(r.at, r.from)); err != nil {
				return err
			}
			ids = append(ids, id)
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
	s.mu.Lock()
	for _, r := range recs {
		cur := r.e.key.Load()
		next := *cur // shallow copy: slices are shared and never mutated
		t := time.Unix(0, r.at).UTC()
		next.LastUsedAt, next.LastUsedFrom = &t, r.from
		r.e.key.Store(&next)
	}
	s.mu.Unlock()
	if len(ids) > 0 {
		s.publish(Change{Kind: LastUsed, IDs: ids})
	}
	return nil
}
