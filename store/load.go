package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/keyward/keyward/model"
)

// loadAt reads every key, hash, last-used record, operator and the catalog
// into memory.
//
// On the bbolt file the garbage collector is paused while loading (debug.SetGCPercent(-1),
// restored to its previous value on return). The setting is process-wide:
// for the duration of Open, no goroutine of the process triggers a
// collection (GOMEMLIMIT, if set, still does). Loading makes almost no
// garbage, so a collection during it would only trace the growing live
// heap again and again (about a sixth of a 1M-key load). Once restored, the
// first collection runs concurrently after Open returns. Concurrent Opens
// share one pause (see pauseGC), so the last one restores the setting
// found by the first.
//
// The backend reads the records at one revision, page by page, into a
// loader (see Backend.Load); the loader decodes them in parallel.
// It returns the revision loaded.
func (s *Store) loadAt() (Rev, error) {
	// Not on etcd: its pages arrive as decoded responses, garbage once
	// read, and with the collector off a 1M-key load peaked at 1.9 GiB
	// (1.0 GiB with it on, in the same time; BENCHMARKS.md).
	if !s.shared {
		defer pauseGC()()
	}
	l := newLoader(s)
	return s.be.Load(context.Background(), l)
}

// gcPause counts the loads under way; the first pauses the garbage
// collector and the last restores the percentage the first found. (A plain
// defer debug.SetGCPercent(debug.SetGCPercent(-1)) per load would, with
// two overlapping loads, leave the collector off for good.)
var gcPause struct {
	sync.Mutex
	n    int
	prev int
}

// pauseGC turns the garbage collector off until the returned function is
// called. It is process-wide.
func pauseGC() (resume func()) {
	gcPause.Lock()
	if gcPause.n == 0 {
		gcPause.prev = debug.SetGCPercent(-1)
	}
	gcPause.n++
	gcPause.Unlock()
	return func() {
		gcPause.Lock()
		if gcPause.n--; gcPause.n == 0 {
			debug.SetGCPercent(gcPause.prev)
		}
		gcPause.Unlock()
	}
}

// loadBatch is a page of key records (in id order) and, once done is
// closed, their decoded form.
type loadBatch struct {
	page *KeyPage

	keys    []model.Key // slab: &keys[i] is the initial snapshot of key i
	entries []entry     // a slot chunk: &entries[i] is key i's entry
	grants  []*grant    // grants[i] is key i's
	err     error
	done    chan struct{}
}

// loader is the engine's side of Backend.Load: it fills s.slots,
// s.graces, s.hashes, s.ops, the catalog and the secret's sums. It does
// what a plain walk of the records would, faster on a large database:
//
//   - Key pages are decoded by GOMAXPROCS workers while the backend
//     reads on. A worker that has decoded a page calls its Done, so the
//     backend can release and recycle it (see walkKeys).
//   - A page's entries are one chunk of the slot table (see slots.go).
//     Keys and last-used times are allocated per page in slabs (one
//     allocation per page instead of one per key), and a key's own strings
//     (id, name, description, hint) share one allocation. Snapshots are
//     immutable and replaced, never mutated, so pointers into a slab stay
//     valid. A slab is freed once none of its keys is referenced; a key
//     replaced or deleted since the load keeps its slot in memory until
//     then, so at worst a page's slab (about 1 MiB) outlives most of it.
//     A Lean store keeps no snapshot: the slabs are garbage once loaded.
//   - Pages are then inserted in id order, so duplicates resolve as in a
//     sequential walk. Hash pages follow: workers look up the slot each
//     names, and the results are applied in order.
//
// Names are not loaded: the backend keeps them unique.
//
// TestLoadKeysMatchesSequential compares the result with the plain walk.
type loader struct {
	s       *Store
	workers int
	work    chan *loadBatch
	wg      sync.WaitGroup
	batches []*loadBatch
	n       int  // keys in batches
	keyed   bool // the key batches are inserted
	err     error

	hwork    chan *hashBatch
	inflight []*hashBatch // oldest first
	spare    []*hashBatch
}

func newLoader(s *Store) *loader {
	l := &loader{s: s, workers: max(1, runtime.GOMAXPROCS(0))}
	l.work = make(chan *loadBatch, 4*l.workers)
	for range l.workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			decodeBatches(l.work)
		}()
	}
	return l
}

// Meta takes the catalog and the shared secret.
func (l *loader) Meta(name MetaName, v []byte) error {
	switch name {
	case MetaCatalog:
		if err := json.Unmarshal(v, &l.s.catalog); err != nil {
			return fmt.Errorf("reading catalog: %w", err)
		}
	case MetaSecret:
		return l.s.loadSecretSums(v)
	}
	return nil
}

// Operator takes one operator.
func (l *loader) Operator(op model.Operator) error {
	if op.ID == "" {
		// Written before operators had an identity: derive a stable one;
		// it is stored with the next write of the record (see
		// model.LegacyOperatorID).
		op.ID = model.LegacyOperatorID(op.Name, op.CreatedAt)
	}
	l.s.ops[op.Name] = &op
	return nil
}

// KeyPage queues a page of keys for the decoders.
func (l *loader) KeyPage(p *KeyPage) error {
	b := &loadBatch{page: p, done: make(chan struct{})}
	l.batches = append(l.batches, b)
	l.n += len(p.Vals)
	l.work <- b
	return nil
}

// decodeBatches is a load worker: it decodes the batches of work and
// hands each page back to the backend.
func decodeBatches(work <-chan *loadBatch) {
	intern := map[string]string{}
	var scratch []byte
	var grants grantTable
	for b := range work {
		b.decode(intern, &scratch, &grants)
		b.page.Done()
		b.page = nil
		close(b.done)
	}
}

// insertKeys, once, waits for the decoders and inserts every batch.
func (l *loader) insertKeys() error {
	if l.keyed {
		return l.err
	}
	l.keyed = true
	close(l.work)
	l.err = l.s.insertBatches(l.batches, l.n)
	l.wg.Wait()
	l.batches = nil
	return l.err
}

// insertBatches waits for each decoded batch in turn and inserts its keys
// into s.slots and s.graces, in id order, so duplicates resolve as in a
// sequential walk. n is how many keys the batches hold.
func (s *Store) insertBatches(batches []*loadBatch, n int) error {
	// Size the maps once: growing them key by key costs a rehash of every
	// entry at each doubling.
	if n > s.slots.live {
		snaps := s.slots.snaps
		s.slots = newSlotTable(n)
		if snaps != nil {
			s.slots.snaps = [][]*model.Key{}
		}
		s.hashes = newHashIndex(n, s.opts.collideHashes)
	}
	for _, b := range batches {
		<-b.done
		if b.err != nil {
			return b.err
		}
		// Every batch but the last is full, so batch c is chunk c.
		base := uint32(len(s.slots.ents)) << slotBits
		s.slots.grow(b.entries)
		s.slots.used = base + uint32(len(b.keys))
		for i := range b.keys {
			key, slot := &b.keys[i], base+uint32(i)
			if old, dup := s.slots.lookup(key.ID); dup {
				s.slots.release(old) // a damaged file: the later record wins, as in a walk
			}
			s.slots.index(slot, key.ID)
			s.slots.at(slot).grant = s.grantSlot(b.grants[i])
			s.slots.setSnap(slot, key)
			if key.GraceUntil != nil {
				s.graces[key.ID] = *key.GraceUntil
			}
		}
	}
	return nil
}

// decode decodes b's records into its slabs. intern, scratch and grants
// belong to the calling worker.
func (b *loadBatch) decode(intern map[string]string, scratch *[]byte, grants *grantTable) {
	p := b.page
	n := len(p.Vals)
	b.keys = make([]model.Key, n)
	b.entries = make([]entry, slotChunk)
	b.grants = make([]*grant, n)
	nUsed := 0
	for _, lu := range p.LastUsed {
		if lu != nil {
			nUsed++
		}
	}
	var times []time.Time
	if nUsed > 0 {
		times = make([]time.Time, nUsed)
	}
	var a loadAlloc
	for i, v := range p.Vals {
		key, e := &b.keys[i], &b.entries[i]
		if err := decodeKeyInto(key, v, intern, scratch, &a); err != nil {
			b.err = fmt.Errorf("key %q: %w", model.Sanitize(string(p.IDs[i])), err)
			return
		}
		if at, from, ok := loadLastUsed(p.LastUsed[i], intern); ok {
			times[0] = time.Unix(0, at).UTC()
			key.LastUsedAt, key.LastUsedFrom = &times[0], from
			times = times[1:]
			e.lastAt.Store(at)
			e.stored = at
		}
		e.setFacts(key)
		b.grants[i] = grants.get(key)
	}
}

// loadLastUsed decodes a last-used record as a load does: a missing or
// damaged one is no record, and sources, which repeat, share one string
// through intern.
func loadLastUsed(lv []byte, intern map[string]string) (at int64, from string, ok bool) {
	if len(lv) < 8 { // decodeLastUsed's check
		return 0, "", false
	}
	from, ok = intern[string(lv[8:])]
	if !ok {
		from = string(lv[8:])
		if len(intern) < 1<<16 {
			intern[from] = from
		}
	}
	return int64(binary.BigEndian.Uint64(lv)), from, true
}

// hashBatch is a page of hash index records and, once done is closed,
// the slot each names (noSlot for an orphan).
type hashBatch struct {
	page *HashPage
	es   []uint32
	done chan struct{}
}

// HashPage queues a page of hashes for the lookup workers (started with
// the first page, once the keys are in: they read s.slots). Results are
// applied in page order, as a sequential walk would, once a page is the
// oldest of more than 4*workers in flight, or at Flush.
func (l *loader) HashPage(p *HashPage) error {
	if l.hwork == nil {
		if err := l.insertKeys(); err != nil {
			p.Done()
			return err
		}
		l.hwork = make(chan *hashBatch, 4*l.workers)
		for range l.workers {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.s.resolveHashes(l.hwork)
			}()
		}
	}
	if len(l.inflight) > cap(l.hwork) {
		l.applyOldest()
	}
	var b *hashBatch
	if n := len(l.spare); n > 0 {
		b, l.spare = l.spare[n-1], l.spare[:n-1]
	} else {
		b = &hashBatch{es: make([]uint32, 0, loadBatchSize)}
	}
	b.page, b.done = p, make(chan struct{})
	l.inflight = append(l.inflight, b)
	l.hwork <- b
	return nil
}

// applyOldest applies the oldest batch in flight and keeps it for reuse.
func (l *loader) applyOldest() {
	b := l.inflight[0]
	l.inflight = l.inflight[1:]
	l.s.applyHashes(b)
	l.spare = append(l.spare, b)
}

// Flush inserts the keys if no hash page came, applies the hash batches
// still in flight and stops the workers.
func (l *loader) Flush() error {
	err := l.insertKeys()
	if l.hwork != nil {
		close(l.hwork)
		for len(l.inflight) > 0 {
			l.applyOldest()
		}
	}
	l.wg.Wait()
	return err
}

// resolveHashes is a hash-load worker: it looks up the slot each record
// of a batch names (reads of s.slots only).
func (s *Store) resolveHashes(work <-chan *hashBatch) {
	for b := range work {
		refs := b.page.Refs
		b.es = b.es[:len(refs)]
		for i, v := range refs {
			// decodeHashRef without allocating the id
			slot, ok := s.slots.lookup(string(v[1:]))
			if !ok {
				slot = noSlot
			}
			b.es[i] = slot
		}
		close(b.done)
	}
}

// applyHashes waits for b to be resolved, adds its hashes to the index
// and the entries, and hands its page back to the backend.
func (s *Store) applyHashes(b *hashBatch) {
	<-b.done
	p := b.page
	for i, slot := range b.es {
		if slot == noSlot {
			continue // an orphan hash verifies as NOT_FOUND either way
		}
		h := [32]byte(p.Hashes[i])
		s.hashes.add(h, slot)
		if e := s.slots.at(slot); p.Refs[i][0] == 1 { // previous
			e.prev, e.hasPrev = h, true
		} else {
			e.cur = h
		}
	}
	p.Done()
	b.page, b.es = nil, b.es[:0]
}
