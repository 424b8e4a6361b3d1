package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/keyward/keyward/model"
	bolt "go.etcd.io/bbolt"
)

// load reads every key, hash, last-used record, operator and the catalog
// into memory.
//
// The garbage collector is paused while loading (debug.SetGCPercent(-1),
// restored to its previous value on return). The setting is process-wide:
// for the duration of Open, no goroutine of the process triggers a
// collection (GOMEMLIMIT, if set, still does). Loading makes almost no
// garbage, so a collection during it would only trace the growing live
// heap again and again (about a sixth of a 1M-key load). Once restored, the
// first collection runs concurrently after Open returns. Concurrent Opens
// share one pause (see pauseGC), so the last one restores the setting
// found by the first.
//
// The file's mapped pages are released (see releasePages) before the load,
// since bolt.Open's free-page scan has just read every one; then as the
// load copies their records out, so they do not add to its peak; and all
// once more when it ends. The file then costs the process no RSS until
// something reads it again.
func (s *Store) load() error {
	defer pauseGC()()
	return s.db.View(func(tx *bolt.Tx) error {
		m := mappingOf(tx)
		m.releaseAll()
		defer m.releaseAll()
		required := allBuckets
		if !s.indexed {
			required = v1Buckets
		}
		if err := checkBuckets(tx, s.path, required); err != nil {
			return err
		}
		if err := json.Unmarshal(tx.Bucket(bMeta).Get(kCatalog), &s.catalog); err != nil {
			return fmt.Errorf("reading catalog: %w", err)
		}
		if err := s.loadKeys(tx, m); err != nil {
			return err
		}
		err := tx.Bucket(bOperators).ForEach(func(k, v []byte) error {
			var op model.Operator
			if err := json.Unmarshal(v, &op); err != nil {
				return fmt.Errorf("operator %q: %w", model.Sanitize(string(k)), err)
			}
			if op.ID == "" {
				// Written before operators had an identity: derive a
				// stable one; it is stored with the next write of the
				// record (see model.LegacyOperatorID).
				op.ID = model.LegacyOperatorID(op.Name, op.CreatedAt)
			}
			s.ops[op.Name] = &op
			return nil
		})
		if err != nil {
			return err
		}
		return s.loadSecretSums(tx)
	})
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

// loadBatchSize is how many key records one decode worker takes at a time.
// It is a slot chunk: a batch's entries become one chunk of the slot table.
const loadBatchSize = slotChunk

// loadBatch is a run of consecutive key records (in id order) and, once
// done is closed, their decoded form.
type loadBatch struct {
	recs  *loadRecs
	nUsed int // how many recs.lus are not nil

	keys    []model.Key // slab: &keys[i] is the initial snapshot of key i
	entries []entry     // a slot chunk: &entries[i] is key i's entry
	grants  []*grant    // grants[i] is key i's
	err     error
	done    chan struct{}
}

// loadRecs holds a batch's records until it is decoded. They point into
// the mmapped file and are valid only inside the read transaction. The
// slices are recycled: allocated per batch they would be 72 bytes of
// garbage per key (70 MiB at 1M keys), all of it resident at the end of
// the load because the garbage collector is paused.
type loadRecs struct {
	ids  [][]byte // bucket keys, for error messages
	vals [][]byte // key records
	lus  [][]byte // the matching last-used records, nil when there is none
}

// release releases the mapped pages r's records are on: those of the keys
// bucket, then those of the last-used bucket.
func (r *loadRecs) release(m fileMapping) {
	pages := pageRun{m: m}
	for i, k := range r.ids {
		pages.add(k)
		pages.add(r.vals[i])
	}
	pages.release()
	for _, lu := range r.lus {
		pages.add(lu)
	}
	pages.release()
}

// loadKeys reads the keys, last-used and hash buckets into s.slots,
// s.graces and s.hashes. It does what a plain walk of the three buckets
// would, faster on a large database:
//
//   - The calling goroutine walks the keys bucket and, beside it, the
//     last-used bucket (both in id order), cutting the records into batches;
//     GOMAXPROCS workers decode the batches meanwhile. The records are only
//     valid inside the transaction: every worker has finished before
//     loadKeys returns.
//   - A worker that has decoded a batch releases the mapped pages its
//     records were on and returns the record slices to a free list, so at
//     most the batches in flight hold one (see loadRecs).
//   - A batch's entries are one chunk of the slot table (see slots.go).
//     Keys and last-used times are allocated per batch in slabs (one
//     allocation per batch instead of one per key), and a key's own strings
//     (id, name, description, hint) share one allocation. Snapshots are
//     immutable and replaced, never mutated, so pointers into a slab stay
//     valid. A slab is freed once none of its keys is referenced; a key
//     replaced or deleted since the load keeps its slot in memory until
//     then, so at worst a batch's slab (about 1 MiB) outlives most of it.
//     A Lean store keeps no snapshot: the slabs are garbage once loaded.
//   - Batches are then inserted in id order by the calling goroutine, so
//     duplicates resolve as in a sequential walk. loadHashes then does the
//     same for the hash bucket.
//
// Names are not loaded: the names bucket keeps them unique on disk.
//
// TestLoadKeysMatchesSequential compares the result with the plain walk.
func (s *Store) loadKeys(tx *bolt.Tx, m fileMapping) error {
	workers := max(1, runtime.GOMAXPROCS(0))
	work := make(chan *loadBatch, 4*workers)
	// Every record set is in the work queue, with a worker or being
	// filled, so this capacity never blocks a worker returning one.
	free := make(chan *loadRecs, cap(work)+workers+1)
	var wg sync.WaitGroup
	defer wg.Wait() // the records must not be read after the tx ends
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			decodeBatches(work, free, m)
		}()
	}
	batches, n := cutBatches(tx, work, free)
	close(work)
	if err := s.insertBatches(batches, n); err != nil {
		return err
	}
	return s.loadHashes(tx, workers, m)
}

// decodeBatches is a load worker: it decodes the batches of work, releases
// the pages their records were on and hands the record slices back to free.
func decodeBatches(work <-chan *loadBatch, free chan<- *loadRecs, m fileMapping) {
	intern := map[string]string{}
	var scratch []byte
	var grants grantTable
	for b := range work {
		b.decode(intern, &scratch, &grants)
		r := b.recs
		b.recs = nil
		r.release(m)
		r.ids, r.vals, r.lus = r.ids[:0], r.vals[:0], r.lus[:0]
		free <- r
		close(b.done)
	}
}

// cutBatches walks the keys bucket and, beside it, the last-used bucket
// (both in id order), cuts the records into batches and queues each on
// work. It returns the batches in order and how many keys they hold.
func cutBatches(tx *bolt.Tx, work chan<- *loadBatch, free chan *loadRecs) ([]*loadBatch, int) {
	var batches []*loadBatch
	var cur *loadBatch
	flush := func() {
		cur.done = make(chan struct{})
		batches = append(batches, cur)
		work <- cur
		cur = nil
	}
	n := 0
	lc := tx.Bucket(bLastUsed).Cursor()
	lk, lv := lc.First()
	kc := tx.Bucket(bKeys).Cursor()
	for k, v := kc.First(); k != nil; k, v = kc.Next() {
		if cur == nil {
			cur = &loadBatch{}
			select {
			case cur.recs = <-free:
			default:
				cur.recs = &loadRecs{ids: make([][]byte, 0, loadBatchSize),
					vals: make([][]byte, 0, loadBatchSize), lus: make([][]byte, 0, loadBatchSize)}
			}
		}
		for lk != nil && bytes.Compare(lk, k) < 0 {
			lk, lv = lc.Next()
		}
		var used []byte
		if lk != nil && bytes.Equal(lk, k) {
			used = lv
			if used == nil {
				used = []byte{} // a present but empty record: decodeLastUsed refuses it
			}
			cur.nUsed++
		}
		r := cur.recs
		r.ids = append(r.ids, k)
		r.vals = append(r.vals, v)
		r.lus = append(r.lus, used)
		n++
		if len(r.vals) == loadBatchSize {
			flush()
		}
	}
	if cur != nil {
		flush()
	}
	return batches, n
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
	r := b.recs
	n := len(r.vals)
	b.keys = make([]model.Key, n)
	b.entries = make([]entry, slotChunk)
	b.grants = make([]*grant, n)
	var times []time.Time
	if b.nUsed > 0 {
		times = make([]time.Time, b.nUsed)
	}
	var a loadAlloc
	for i, v := range r.vals {
		key, e := &b.keys[i], &b.entries[i]
		if err := decodeKeyInto(key, v, intern, scratch, &a); err != nil {
			b.err = fmt.Errorf("key %q: %w", model.Sanitize(string(r.ids[i])), err)
			return
		}
		if at, from, ok := loadLastUsed(r.lus[i], intern); ok {
			times[0] = time.Unix(0, at).UTC()
			key.LastUsedAt, key.LastUsedFrom = &times[0], from
			times = times[1:]
			e.lastAt.Store(at)
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

// hashBatch is a run of hash index records and, once done is closed, the
// slot each names (noSlot for an orphan).
type hashBatch struct {
	hs   [][]byte
	vs   [][]byte
	es   []uint32
	done chan struct{}
}

// loadHashes fills s.hashes and the entries' hashes from the hash bucket.
// s.slots must be complete: workers look the ids up in it (reads only)
// while the calling goroutine walks the bucket. The calling goroutine
// applies the results in bucket order, as a sequential walk would, once
// a batch is the oldest of more than 4*workers in flight (or at the end),
// releases the mapped pages its records were on, and reuses it: the
// batches' slices are never garbage.
func (s *Store) loadHashes(tx *bolt.Tx, workers int, m fileMapping) error {
	work := make(chan *hashBatch, 4*workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.resolveHashes(work)
		}()
	}
	var inflight []*hashBatch // oldest first
	var cur *hashBatch
	pages := pageRun{m: m}
	apply := func() *hashBatch {
		b := inflight[0]
		inflight = inflight[1:]
		s.applyHashes(b, &pages)
		return b
	}
	c := tx.Bucket(bHashes).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) < 2 || len(k) != 32 { // decodeHashRef's check
			close(work)
			return fmt.Errorf("hash index: %w", errCorruptRecord)
		}
		if cur == nil {
			if len(inflight) > cap(work) {
				cur = apply()
			} else {
				cur = &hashBatch{hs: make([][]byte, 0, loadBatchSize), vs: make([][]byte, 0, loadBatchSize),
					es: make([]uint32, 0, loadBatchSize)}
			}
			cur.done = make(chan struct{})
		}
		cur.hs = append(cur.hs, k)
		cur.vs = append(cur.vs, v)
		if len(cur.vs) == loadBatchSize {
			inflight = append(inflight, cur)
			work <- cur
			cur = nil
		}
	}
	if cur != nil {
		inflight = append(inflight, cur)
		work <- cur
	}
	close(work)
	for len(inflight) > 0 {
		apply()
	}
	return nil
}

// resolveHashes is a hash-load worker: it looks up the slot each record
// of a batch names (reads of s.slots only).
func (s *Store) resolveHashes(work <-chan *hashBatch) {
	for b := range work {
		b.es = b.es[:len(b.vs)]
		for i, v := range b.vs {
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
// and the entries, releases the pages its records were on and empties it
// for reuse.
func (s *Store) applyHashes(b *hashBatch, pages *pageRun) {
	<-b.done
	for i, slot := range b.es {
		if slot == noSlot {
			continue // an orphan hash verifies as NOT_FOUND either way
		}
		h := [32]byte(b.hs[i])
		s.hashes.add(h, slot)
		if e := s.slots.at(slot); b.vs[i][0] == 1 { // previous
			e.prev, e.hasPrev = h, true
		} else {
			e.cur = h
		}
	}
	for i, h := range b.hs {
		pages.add(h)
		pages.add(b.vs[i])
	}
	pages.release()
	b.hs, b.vs, b.es = b.hs[:0], b.vs[:0], b.es[:0]
}
