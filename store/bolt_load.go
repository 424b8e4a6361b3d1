package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// Load walks the file in one read transaction (its revision is the last
// commit's transaction id): the catalog, the keys bucket and, beside it,
// the last-used bucket (both in id order), the hash bucket, the
// operators and the shared secret.
//
// The file's mapped pages are released (see releasePages) before the load,
// since bolt.Open's free-page scan has just read every one; then as each
// page's Done says its records were copied out, so they do not add to the
// load's peak; and all once more when it ends. The file then costs the
// process no RSS until something reads it again.
func (b *boltBackend) Load(_ context.Context, sink LoadSink) (Rev, error) {
	var rev Rev
	err := b.db.View(func(tx *bolt.Tx) error {
		rev = Rev(tx.ID())
		m := mappingOf(tx)
		m.releaseAll()
		defer m.releaseAll()
		required := allBuckets
		if !b.indexed {
			required = v1Buckets
		}
		if err := checkBuckets(tx, b.path, required); err != nil {
			return err
		}
		// The records are only valid inside the transaction: every page
		// is done before it ends.
		var pending sync.WaitGroup
		defer pending.Wait()
		err := walkLoad(tx, m, sink, &pending)
		if ferr := sink.Flush(); err == nil {
			err = ferr
		}
		return err
	})
	return rev, err
}

// walkLoad feeds the records of tx to sink, in the order Load says.
func walkLoad(tx *bolt.Tx, m fileMapping, sink LoadSink, pending *sync.WaitGroup) error {
	meta := tx.Bucket(bMeta)
	if err := sink.Meta(MetaCatalog, meta.Get(kCatalog)); err != nil {
		return err
	}
	if err := walkKeys(tx, m, sink, pending); err != nil {
		return err
	}
	if err := walkHashes(tx, m, sink, pending); err != nil {
		return err
	}
	err := tx.Bucket(bOperators).ForEach(func(k, v []byte) error {
		var op model.Operator
		if err := json.Unmarshal(v, &op); err != nil {
			return fmt.Errorf("operator %q: %w", model.Sanitize(string(k)), err)
		}
		return sink.Operator(op)
	})
	if err != nil {
		return err
	}
	return sink.Meta(MetaSecret, meta.Get(kSecret))
}

// loadBatchSize is how many records a load page holds: a slot chunk, so a
// page of keys becomes one chunk of the slot table.
const loadBatchSize = slotChunk

// walkKeys cuts the keys bucket and, beside it, the last-used bucket into
// pages. A page's slices are recycled once it is done: allocated per page
// they would be 72 bytes of garbage per key (70 MiB at 1M keys), all of it
// resident at the end of the load because the garbage collector is paused.
func walkKeys(tx *bolt.Tx, m fileMapping, sink LoadSink, pending *sync.WaitGroup) error {
	free := make(chan *KeyPage, 64)
	var cur *KeyPage
	send := func() error {
		p := cur
		cur = nil
		pending.Add(1)
		p.Done = func() {
			releaseKeyPage(p, m)
			p.IDs, p.Vals, p.LastUsed = p.IDs[:0], p.Vals[:0], p.LastUsed[:0]
			select {
			case free <- p:
			default:
			}
			pending.Done()
		}
		return sink.KeyPage(p)
	}
	lc := tx.Bucket(bLastUsed).Cursor()
	lk, lv := lc.First()
	kc := tx.Bucket(bKeys).Cursor()
	for k, v := kc.First(); k != nil; k, v = kc.Next() {
		if cur == nil {
			select {
			case cur = <-free:
			default:
				cur = &KeyPage{IDs: make([][]byte, 0, loadBatchSize),
					Vals: make([][]byte, 0, loadBatchSize), LastUsed: make([][]byte, 0, loadBatchSize)}
			}
		}
		for lk != nil && string(lk) < string(k) {
			lk, lv = lc.Next()
		}
		var used []byte
		if lk != nil && string(lk) == string(k) {
			used = lv
			if used == nil {
				used = []byte{} // a present but empty record: decodeLastUsed refuses it
			}
		}
		cur.IDs = append(cur.IDs, k)
		cur.Vals = append(cur.Vals, v)
		cur.LastUsed = append(cur.LastUsed, used)
		if len(cur.Vals) == loadBatchSize {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if cur != nil {
		return send()
	}
	return nil
}

// releaseKeyPage releases the mapped pages p's records are on: those of
// the keys bucket, then those of the last-used bucket.
func releaseKeyPage(p *KeyPage, m fileMapping) {
	pages := pageRun{m: m}
	for i, k := range p.IDs {
		pages.add(k)
		pages.add(p.Vals[i])
	}
	pages.release()
	for _, lu := range p.LastUsed {
		pages.add(lu)
	}
	pages.release()
}

// walkHashes cuts the hash bucket into pages, recycled as walkKeys does.
func walkHashes(tx *bolt.Tx, m fileMapping, sink LoadSink, pending *sync.WaitGroup) error {
	free := make(chan *HashPage, 64)
	var cur *HashPage
	send := func() error {
		p := cur
		cur = nil
		pending.Add(1)
		p.Done = func() {
			pages := pageRun{m: m}
			for i, h := range p.Hashes {
				pages.add(h)
				pages.add(p.Refs[i])
			}
			pages.release()
			p.Hashes, p.Refs = p.Hashes[:0], p.Refs[:0]
			select {
			case free <- p:
			default:
			}
			pending.Done()
		}
		return sink.HashPage(p)
	}
	c := tx.Bucket(bHashes).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) < 2 || len(k) != 32 { // decodeHashRef's check
			return fmt.Errorf("hash index: %w", errCorruptRecord)
		}
		if cur == nil {
			select {
			case cur = <-free:
			default:
				cur = &HashPage{Hashes: make([][]byte, 0, loadBatchSize), Refs: make([][]byte, 0, loadBatchSize)}
			}
		}
		cur.Hashes = append(cur.Hashes, k)
		cur.Refs = append(cur.Refs, v)
		if len(cur.Refs) == loadBatchSize {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if cur != nil {
		return send()
	}
	return nil
}
