package store

import (
	"context"
	"fmt"

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
	_, _ = s.be.Keys(context.Background(), func(k *model.Key) { out = append(out, k) })
	return out
}

// snapshots lists the kept snapshots. Caller holds s.mu.
func (s *Store) snapshots() []*model.Key {
	out := make([]*model.Key, 0, s.slots.live)
	s.slots.each(func(i uint32, _ *entry) {
		// (On etcd a key deleted after the snapshots were read has none
		// until its deletion arrives: it is as good as gone.)
		if k := s.slots.snap(i); k != nil {
			out = append(out, s.withLiveLastUsed(i, k))
		}
	})
	return out
}

// keepSnapshots decodes every key into snapshots and keeps them. It holds
// the writer lock, so the file and memory agree while it reads; writers
// wait meanwhile (about a second at 1M keys), verifications do not.
func (s *Store) keepSnapshots() []*model.Key {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.applyMu.Lock() // on etcd, the sync loop waits too
	defer s.applyMu.Unlock()
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
	_, err := s.be.Keys(context.Background(), func(k *model.Key) {
		if i, ok := s.slots.lookup(k.ID); ok {
			snaps[i>>slotBits][i&(slotChunk-1)] = k
			out = append(out, k)
		}
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
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
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
	k, _, err := s.be.Key(context.Background(), id)
	if err != nil {
		return nil, err
	}
	return s.overlayLive([]*model.Key{k})[0], nil
}
