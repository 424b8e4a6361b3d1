package store

import (
	"sync/atomic"
	"time"
)

// What `keyward serve --metrics` reads from a store (server/metrics.go).
// Everything here is cheap on the verify path: nothing is added to
// Verify; a flush reports its duration to an observer, and the rest is
// read when Prometheus scrapes.

// FlushObserver receives each last-used flush that had records to write:
// how long it took, how many records and its error (nil on success).
type FlushObserver func(d time.Duration, records int, err error)

// flushObs is the store's FlushObserver, if any (Store.flushObs).
type flushObs = atomic.Pointer[FlushObserver]

// ObserveFlushes makes fn receive every last-used flush from now on (nil:
// none). One observer at a time: a later call replaces it.
func (s *Store) ObserveFlushes(fn FlushObserver) {
	if fn == nil {
		s.flushObs.Store(nil)
		return
	}
	s.flushObs.Store(&fn)
}

// observeFlush reports a flush that started at start, deferred by
// flushLastUsed.
func (s *Store) observeFlush(start time.Time, records int, err *error) {
	if fn := s.flushObs.Load(); fn != nil {
		(*fn)(time.Since(start), records, *err)
	}
}

// LastUsedBacklog returns how many keys' last-used records wait in memory
// for the next flush.
func (s *Store) LastUsedBacklog() int {
	s.dirtyMu.Lock()
	defer s.dirtyMu.Unlock()
	return len(s.dirty)
}

// KeyStatusCounts are the live keys by status at a moment.
type KeyStatusCounts struct {
	Active   int // active and not expired
	Disabled int // disabled (expired or not)
	Expired  int // active but past its expiry
}

// CountKeyStatus counts the keys by status at now, from memory. It reads
// every entry (0.5 ms per 100k keys, BenchmarkCountKeyStatus), one chunk of entries per
// hold of the read lock, so a writer waits at most one chunk and the
// verifications queued behind it no longer. Keys written during the count
// may be counted in either state: it is a gauge, not a snapshot.
func (s *Store) CountKeyStatus(now time.Time) KeyStatusCounts {
	var c KeyStatusCounts
	t := now.UnixNano()
	for ci := 0; ; ci++ {
		s.mu.RLock()
		if ci >= len(s.slots.ents) {
			s.mu.RUnlock()
			return c
		}
		chunk := s.slots.ents[ci]
		for j := range chunk {
			switch e := &chunk[j]; {
			case !e.live:
			case !e.active:
				c.Disabled++
			case e.expires <= t:
				c.Expired++
			default:
				c.Active++
			}
		}
		s.mu.RUnlock()
	}
}
