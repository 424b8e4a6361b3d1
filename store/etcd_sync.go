package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"time"

	"github.com/keyward/keyward/model"
)

// The sync loop: how a store over a shared backend (etcd) keeps its
// memory current.
//
// Several processes write the same records, so a write does not update
// memory itself. Every change, this process's own included, reaches
// memory one way: the backend's Watch, applied in revision order by one
// goroutine (the reflector pattern: list at revision R, watch from R+1,
// relist when the history was compacted away). A write returns once the
// loop has applied its revision (waitApplied), so the node that wrote
// reads its write, and a disable takes effect there on the next
// verification, as on the bbolt file.
//
// Verification never waits for any of this: it reads memory under s.mu,
// which the loop holds only to apply one chunk of a commit.
//
// Staleness: every event, progress marks included (the backend asks for
// one every second), refreshes heard. A node cut off from etcd gets no
// error at all (ETCD.md §4, measured), so Stale judges by heard alone.

// startSync starts the loop from rev, the revision the load read.
func (s *Store) startSync(rev Rev) {
	s.setApplied(rev)
	s.heard.Store(time.Now().UnixNano())
	s.syncDone = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-s.stop
		cancel()
	}()
	go s.syncLoop(ctx)
}

// Relist backoff, as client-go's reflector: jittered, from 0.8 s to 30 s,
// reset after 2 minutes without trouble.
const (
	relistMinBackoff = 800 * time.Millisecond
	relistMaxBackoff = 30 * time.Second
	relistResetAfter = 2 * time.Minute
)

func (s *Store) syncLoop(ctx context.Context) {
	defer close(s.syncDone)
	backoff := time.Duration(0)
	lastTrouble := time.Time{}
	for ctx.Err() == nil {
		relist := s.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		// The stream ended: on a relist reload everything, else (the
		// backend gave up re-watching) watch again from applied.
		if time.Since(lastTrouble) > relistResetAfter {
			backoff = 0
		}
		lastTrouble = time.Now()
		if backoff > 0 {
			wait := backoff/2 + rand.N(backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		backoff = min(max(2*backoff, relistMinBackoff), relistMaxBackoff)
		if relist {
			if err := s.relist(ctx); err != nil {
				continue // retried after the backoff
			}
			backoff = 0
		}
	}
}

// follow applies the watch from applied on, until the stream ends. It
// reports whether the stream asked for a relist.
func (s *Store) follow(ctx context.Context) (relist bool) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for ev := range s.be.Watch(wctx, Rev(s.applied.Load())) {
		s.heard.Store(time.Now().UnixNano())
		switch {
		case ev.Relist:
			return true
		case ev.Progress:
			continue
		case uint64(ev.Rev) <= s.applied.Load():
			continue // already applied (a re-watch may repeat a revision)
		}
		s.applyEvent(&ev)
		s.setApplied(ev.Rev)
	}
	return false
}

// setApplied advances applied to rev and wakes the writers waiting for it.
func (s *Store) setApplied(rev Rev) {
	s.appliedMu.Lock()
	if uint64(rev) > s.applied.Load() {
		s.applied.Store(uint64(rev))
		close(s.appliedCh)
		s.appliedCh = make(chan struct{})
	}
	s.appliedMu.Unlock()
}

// waitApplied waits until memory reflects rev, at most MaxStaleness. A
// write that committed is reported as done even if its revision has not
// arrived by then: the node is then stale (Stale says so) and will apply
// it when the stream resumes.
func (s *Store) waitApplied(rev Rev) {
	if !s.shared {
		return
	}
	timeout := time.NewTimer(s.opts.MaxStaleness)
	defer timeout.Stop()
	for {
		s.appliedMu.Lock()
		ch := s.appliedCh
		done := s.applied.Load() >= uint64(rev)
		s.appliedMu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			return
		case <-s.stop:
			return
		}
	}
}

// Applied returns the backend revision memory reflects (0 on a bbolt
// file, which has no other writer to follow).
func (s *Store) Applied() Rev { return Rev(s.applied.Load()) }

// Relists counts the full reloads the sync loop has done since Open
// (etcd: the watch fell behind a compaction).
func (s *Store) Relists() int64 { return s.relists.Load() }

// applyEvent makes one commit's changes in memory and publishes them.
func (s *Store) applyEvent(ev *WatchEvent) {
	s.applyMu.Lock()
	changes := s.applyLocked(ev)
	s.applyMu.Unlock()
	if len(changes) > maxPending {
		changes = []Change{{Kind: Resync}}
	}
	s.publish(changes...)
}

// applyLocked is applyEvent under applyMu; it returns the changes.
func (s *Store) applyLocked(ev *WatchEvent) []Change {
	var changes []Change
	now := s.now()
	// Grants are interned outside s.mu (as the writers do).
	grants := make([]*grant, len(ev.Keys))
	for i, ke := range ev.Keys {
		if ke.Key != nil {
			grants[i] = s.grants.get(ke.Key)
		}
	}
	for lo := 0; lo < len(ev.Keys); lo += applyChunk {
		s.mu.Lock()
		for i := lo; i < min(lo+applyChunk, len(ev.Keys)); i++ {
			if ch, ok := s.applyKey(&ev.Keys[i], grants[i], now); ok {
				changes = append(changes, ch)
			}
		}
		s.mu.Unlock()
	}
	if ev.OperatorsSet || len(ev.Meta) > 0 {
		s.mu.Lock()
		if ev.OperatorsSet {
			changes = append(changes, s.applyOperators(ev.Operators)...)
		}
		for name, v := range ev.Meta {
			if ch, ok := s.applyMeta(name, v); ok {
				changes = append(changes, ch)
			}
		}
		s.mu.Unlock()
	}
	if ids := s.applyLastUsed(ev.LastUsed); len(ids) > 0 {
		changes = append(changes, Change{Kind: LastUsed, IDs: ids})
	}
	if ev.Audit > 0 {
		changes = append(changes, Change{Kind: AuditAppended})
	}
	return changes
}

// applyKey makes ke the state of its key. Caller holds s.mu (write).
func (s *Store) applyKey(ke *KeyEvent, g *grant, now time.Time) (Change, bool) {
	i, had := s.slots.lookup(ke.ID)
	if had {
		e := s.slots.at(i)
		s.hashes.remove(e.cur, i)
		if e.hasPrev {
			s.hashes.remove(e.prev, i)
		}
	}
	if ke.Key == nil {
		delete(s.graces, ke.ID)
		if !had {
			return Change{}, false
		}
		s.slots.release(i)
		return Change{Kind: KeyDeleted, ID: ke.ID}, true
	}
	k := ke.Key
	if !had {
		i = s.slots.alloc(k.ID)
	}
	e := s.slots.at(i)
	e.cur, e.prev, e.hasPrev = ke.Hashes.Cur, [32]byte{}, false
	s.hashes.add(e.cur, i)
	delete(s.graces, k.ID)
	if ke.Hashes.HasPrev && k.GraceUntil != nil && now.Before(*k.GraceUntil) {
		// The grace ends on this node's clock (expireGraces); nothing
		// is written when it does.
		e.prev, e.hasPrev = ke.Hashes.Prev, true
		s.hashes.add(e.prev, i)
		s.graces[k.ID] = *k.GraceUntil
	}
	if k.LastUsedAt != nil && k.LastUsedAt.UnixNano() > e.lastAt.Load() {
		e.lastAt.Store(k.LastUsedAt.UnixNano())
	}
	s.setKey(i, s.withStoredLastUsed(i, k), g)
	if had {
		return Change{Kind: KeyUpdated, ID: k.ID}, true
	}
	return Change{Kind: KeyCreated, ID: k.ID}, true
}

// withStoredLastUsed returns k carrying the last use memory knows for
// slot i, if later than k's: a key record on etcd does not hold its last
// use (lu/<id> does), so an edit event must not blank it in a kept
// snapshot. Caller holds s.mu.
func (s *Store) withStoredLastUsed(i uint32, k *model.Key) *model.Key {
	e := s.slots.at(i)
	at := e.stored
	if at == 0 || (k.LastUsedAt != nil && k.LastUsedAt.UnixNano() >= at) {
		return k
	}
	c := *k
	t := time.Unix(0, at).UTC()
	c.LastUsedAt = &t
	if p := s.slots.from(i).Load(); p != nil {
		c.LastUsedFrom = *p
	}
	return &c
}

// applyOperators makes ops the set of operators, with one change for
// each operator added, changed or removed, as a writer on bbolt
// publishes. Caller holds s.mu (write).
func (s *Store) applyOperators(ops []model.Operator) []Change {
	next := make(map[string]*model.Operator, len(ops))
	var changes []Change
	for i := range ops {
		op := &ops[i]
		next[op.Name] = op
		if old, ok := s.ops[op.Name]; !ok || !reflect.DeepEqual(old, op) {
			changes = append(changes, Change{Kind: OperatorsChanged, ID: op.Name})
		}
	}
	for name := range s.ops {
		if _, ok := next[name]; !ok {
			changes = append(changes, Change{Kind: OperatorsChanged, ID: name})
		}
	}
	s.ops = next
	return changes
}

// applyMeta applies a metadata record. Caller holds s.mu (write).
func (s *Store) applyMeta(name MetaName, v []byte) (Change, bool) {
	switch name {
	case MetaCatalog:
		var cat model.Catalog
		if len(v) > 0 {
			if err := json.Unmarshal(v, &cat); err != nil {
				s.opts.Warn(fmt.Sprintf("the catalog stored in etcd does not decode (%v): keeping the previous one", err))
				return Change{}, false
			}
		}
		s.catalog = cat
		return Change{Kind: CatalogChanged}, true
	case MetaSecret:
		if err := s.loadSecretSums(v); err != nil {
			s.opts.Warn(fmt.Sprintf("the shared secret record stored in etcd does not decode (%v)", err))
			return Change{}, false
		}
		return Change{Kind: SecretChanged}, true
	}
	return Change{}, false
}

// applyLastUsed folds last-used times other nodes (or this one) stored
// into memory: the later time wins. It returns the ids whose time moved.
func (s *Store) applyLastUsed(recs []LastUsedRec) []string {
	if len(recs) == 0 {
		return nil
	}
	var ids []string
	var snaps []lastUsedRec
	s.mu.Lock()
	for _, r := range recs {
		i, ok := s.slots.lookup(r.ID)
		if !ok {
			continue
		}
		e := s.slots.at(i)
		if r.At > e.stored {
			e.stored = r.At
		}
		if r.At > e.lastAt.Load() {
			e.lastAt.Store(r.At)
			s.slots.from(i).Store(s.sources.get(r.From))
			ids = append(ids, r.ID)
			snaps = append(snaps, lastUsedRec{slot: i, id: r.ID, at: r.At, from: r.From})
		}
	}
	s.mu.Unlock()
	s.foldLastUsed(snaps)
	return ids
}

// relist reloads everything into fresh memory at a new revision and swaps
// it in: the watch fell behind what etcd keeps. Buffered last-used times
// carry over. Writers wait meanwhile (s.wmu); verifications wait only for
// the swap.
func (s *Store) relist(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	fresh := &Store{
		be: s.be, opts: s.opts, now: s.now, prefix: s.prefix,
		slots: newSlotTable(0), hashes: newHashIndex(0, s.opts.collideHashes),
		ops: map[string]*model.Operator{}, graces: map[string]time.Time{},
	}
	s.mu.RLock()
	if s.slots.snaps != nil {
		fresh.slots.snaps = [][]*model.Key{}
	}
	s.mu.RUnlock()
	began := time.Now()
	rev, err := fresh.loadAt()
	if err != nil {
		s.opts.Warn(fmt.Sprintf("reloading from etcd failed (retrying): %v", err))
		return err
	}
	pending := s.takeDirty()
	s.mu.Lock()
	s.slots, s.hashes, s.grantTab = fresh.slots, fresh.hashes, fresh.grantTab
	s.grants.mu.Lock() // grants know their index in grantTab: swap both
	s.grants.t = fresh.grants.t
	s.grants.mu.Unlock()
	s.ops, s.catalog, s.graces = fresh.ops, fresh.catalog, fresh.graces
	s.secretSum, s.prevSum, s.prevUntil = fresh.secretSum, fresh.prevSum, fresh.prevUntil
	for _, r := range pending {
		if i, ok := s.slots.lookup(r.id); ok {
			e := s.slots.at(i)
			if r.at > e.lastAt.Load() {
				e.lastAt.Store(r.at)
				s.slots.from(i).Store(s.sources.get(r.from))
			}
			if e.dirty.CompareAndSwap(false, true) {
				s.dirtyMu.Lock()
				s.dirty = append(s.dirty, i)
				s.dirtyMu.Unlock()
			}
		}
	}
	s.mu.Unlock()
	n := s.relists.Add(1)
	s.opts.Warn(fmt.Sprintf("relisted from etcd (the watch fell behind its compacted history): %d keys at revision %d in %s (relist %d)",
		s.KeyCount(), rev, time.Since(began).Round(time.Millisecond), n))
	s.setApplied(rev)
	s.heard.Store(time.Now().UnixNano())
	s.publish(Change{Kind: Resync})
	return nil
}
