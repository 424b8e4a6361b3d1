package store

import (
	"time"

	"github.com/keyward/keyward/model"
)

// liveLastUsedInterval is how often verifications not yet flushed to the
// file are announced on the change feed, so an open TUI's Last used
// column follows verifications as they happen instead of lagging up to
// the flush interval (10 s under serve). The verify path does no extra
// work for it: a key's first verification since the last flush already
// lists its slot in s.dirty, and the announcer reads the part of that
// list it has not announced yet. A key verified again before the next
// flush is not announced again; its time moves on at the flush.
const liveLastUsedInterval = 250 * time.Millisecond

// announceLastUsed publishes a LastUsed change for the keys first
// verified since the previous announcement or flush. With no subscriber
// it does nothing.
func (s *Store) announceLastUsed() {
	if s.Subscribers() == 0 {
		return
	}
	s.dirtyMu.Lock()
	if s.announced > len(s.dirty) {
		s.announced = 0 // defensive: FlushLastUsed resets it with the list
	}
	fresh := append([]uint32(nil), s.dirty[s.announced:]...)
	s.announced = len(s.dirty)
	s.dirtyMu.Unlock()
	if len(fresh) == 0 {
		return
	}
	ids := make([]string, 0, len(fresh))
	s.mu.RLock()
	for _, i := range fresh {
		if s.slots.at(i).live {
			ids = append(ids, s.slots.idOf(i))
		}
	}
	s.mu.RUnlock()
	if len(ids) > 0 {
		s.publish(Change{Kind: LastUsed, IDs: ids})
	}
}

// withLiveLastUsed returns k, or a copy of it carrying slot i's in-memory
// last use when that is newer than k's (a verification not flushed yet).
// Caller holds s.mu (read).
func (s *Store) withLiveLastUsed(i uint32, k *model.Key) *model.Key {
	if k == nil {
		return nil
	}
	at := s.slots.at(i).lastAt.Load()
	if at == 0 || (k.LastUsedAt != nil && k.LastUsedAt.UnixNano() >= at) {
		return k
	}
	c := *k // shallow: a key's slices are never mutated
	t := time.Unix(0, at).UTC()
	c.LastUsedAt = &t
	if p := s.slots.from(i).Load(); p != nil {
		c.LastUsedFrom = *p
	}
	return &c
}

// overlayLive applies withLiveLastUsed to keys read from the file.
func (s *Store) overlayLive(keys []*model.Key) []*model.Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for n, k := range keys {
		if i, ok := s.slots.lookup(k.ID); ok {
			keys[n] = s.withLiveLastUsed(i, k)
		}
	}
	return keys
}
