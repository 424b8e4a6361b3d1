package store

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// Keys returns every key, unordered. The pointers are immutable snapshots:
// callers must not modify them.
//
// A Lean store decodes them from the file. While a subscriber (a TUI
// session) watches, it keeps them, as every other store does, so that a
// session's reloads and patches cost what they cost elsewhere; when the
// last subscriber leaves it drops them again (see Subscription.Close).
func (s *Store) Keys() []*model.Key {
	s.mu.RLock()
	if s.slots.snaps != nil {
		out := s.snapshots()
		s.mu.RUnlock()
		return out
	}
	s.mu.RUnlock()
	if s.Subscribers() > 0 {
		return s.overlayLive(s.keepSnapshots())
	}
	var out []*model.Key
	_ = s.db.View(func(tx *bolt.Tx) error {
		return readAllKeys(tx, func(k *model.Key) { out = append(out, k) })
	})
	return out
}

// snapshots lists the kept snapshots. Caller holds s.mu.
func (s *Store) snapshots() []*model.Key {
	out := make([]*model.Key, 0, s.slots.live)
	s.slots.each(func(i uint32, _ *entry) { out = append(out, s.withLiveLastUsed(i, s.slots.snap(i))) })
	return out
}

// keepSnapshots decodes every key into snapshots and keeps them. It holds
// the writer lock, so the file and memory agree while it reads; writers
// wait meanwhile (about a second at 1M keys), verifications do not.
func (s *Store) keepSnapshots() []*model.Key {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	kept := s.slots.snaps != nil
	var out []*model.Key
	if kept {
		out = s.snapshots()
	}
	s.mu.RUnlock()
	if kept {
		return out
	}
	// Writers are held off, so the slot table is stable: read it unlocked.
	snaps := make([][]*model.Key, len(s.slots.ents))
	for c := range snaps {
		snaps[c] = make([]*model.Key, slotChunk)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return readAllKeys(tx, func(k *model.Key) {
			if i, ok := s.slots.lookup(k.ID); ok {
				snaps[i>>slotBits][i&(slotChunk-1)] = k
				out = append(out, k)
			}
		})
	})
	if err != nil {
		return out
	}
	s.mu.Lock()
	if s.Subscribers() > 0 {
		s.slots.snaps = snaps
	}
	s.mu.Unlock()
	return out
}

// dropSnapshots forgets the snapshots of a Lean store.
func (s *Store) dropSnapshots() {
	if !s.opts.Lean {
		return
	}
	s.wmu.Lock() // not while keepSnapshots reads
	s.mu.Lock()
	if s.Subscribers() == 0 {
		s.slots.snaps = nil
	}
	s.mu.Unlock()
	s.wmu.Unlock()
}

// Key returns one key by id (an immutable snapshot).
func (s *Store) Key(id string) (*model.Key, error) {
	s.mu.RLock()
	i, ok := s.slots.lookup(id)
	var k *model.Key
	if ok {
		k = s.withLiveLastUsed(i, s.slots.snap(i))
	}
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("key %q: %w", model.Sanitize(id), ErrNotFound)
	}
	if k != nil {
		return k, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		k, err = readKey(tx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.overlayLive([]*model.Key{k})[0], nil
}

// readKey decodes key id from tx, with its last-used record.
func readKey(tx *bolt.Tx, id string) (*model.Key, error) {
	v := tx.Bucket(bKeys).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("key %q: %w", model.Sanitize(id), ErrNotFound)
	}
	k, err := decodeKey(v, nil)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", model.Sanitize(id), err)
	}
	// A damaged last-used record is ignored, as the load ignores it.
	if at, from, err := decodeLastUsed(tx.Bucket(bLastUsed).Get([]byte(id))); err == nil {
		t := time.Unix(0, at).UTC()
		k.LastUsedAt, k.LastUsedFrom = &t, from
	}
	return k, nil
}

// readAllKeys decodes every key of tx, with its last-used record, in id
// order, as the load does (lists and times from slabs, repeated strings
// shared), and passes each to fn.
func readAllKeys(tx *bolt.Tx, fn func(k *model.Key)) error {
	intern := map[string]string{}
	var scratch []byte
	var a loadAlloc
	var slab []model.Key
	lc := tx.Bucket(bLastUsed).Cursor()
	lk, lv := lc.First()
	c := tx.Bucket(bKeys).Cursor()
	for id, v := c.First(); id != nil; id, v = c.Next() {
		if len(slab) == 0 {
			slab = make([]model.Key, 256)
		}
		k := &slab[0]
		slab = slab[1:]
		if err := decodeKeyInto(k, v, intern, &scratch, &a); err != nil {
			return fmt.Errorf("key %q: %w", model.Sanitize(string(id)), err)
		}
		for lk != nil && bytes.Compare(lk, id) < 0 {
			lk, lv = lc.Next()
		}
		if lk != nil && bytes.Equal(lk, id) {
			if at, from, ok := loadLastUsed(lv, intern); ok {
				k.LastUsedAt, k.LastUsedFrom = a.time(time.Unix(0, at).UTC()), from
			}
		}
		fn(k)
	}
	return nil
}
