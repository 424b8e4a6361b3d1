package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// boltBackend keeps the records in one bbolt file (see bolt_schema.go for
// its buckets). One process owns the file (bbolt's flock), so it is the
// only writer: conditions are checked against the file in the commit's
// own transaction, and the change stream only reports this process's own
// commits.
type boltBackend struct {
	db       *bolt.DB
	path     string
	readOnly bool // opened with bbolt's ReadOnly: the file is not writable
	// indexed is false only for a read-only schema 1 file, which has no
	// names bucket (it cannot be migrated): NameOwner then reads every key.
	indexed bool
	// fresh: the file holds no database yet; the first Commit must Init.
	fresh bool
	// keysRev is the revision of the last commit that changed a key
	// record, for Write.KeysAt.
	keysRev atomic.Uint64

	watchMu  sync.Mutex
	watchers map[chan WatchEvent]struct{}
}

var _ Backend = (*boltBackend)(nil)

// openBolt opens (or creates) the file at path and checks, or migrates,
// its schema. opts has its defaults filled in.
func openBolt(path string, opts *Options) (*boltBackend, error) {
	db, readOnly, err := openFile(path, opts)
	if err != nil {
		return nil, err
	}
	b := &boltBackend{db: db, path: path, readOnly: readOnly, watchers: map[chan WatchEvent]struct{}{}}
	if err := b.init(); err != nil {
		b.abandon()
		return nil, err
	}
	return b, nil
}

// abandon closes a backend whose store failed to open, removing the lock
// file.
func (b *boltBackend) abandon() {
	if !b.readOnly {
		removeLockInfo(b.path)
	}
	b.db.Close()
}

// init checks an existing file's schema version and refuses foreign
// files; a writable schema 1 file is migrated to the current schema. A
// new file is left empty: the store's first Commit (Init) creates it.
func (b *boltBackend) init() error {
	var version int
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		if version, b.fresh, err = readSchema(tx, b.path); err != nil || b.fresh || version >= schemaNamesIndex {
			return err
		}
		// Before migrating: a file with a schema but not the buckets of
		// one is foreign, and must be left untouched.
		return checkBuckets(tx, b.path, v1Buckets)
	})
	if err != nil || b.fresh {
		b.indexed = true
		return err
	}
	b.indexed = version >= schemaNamesIndex
	if b.indexed || b.readOnly {
		return nil // a read-only file stays as it is: writes are refused anyway
	}
	if err := b.db.Update(migrateV1); err != nil {
		return fmt.Errorf("%s: adding the name index (schema 1 -> 2): %w", b.path, err)
	}
	b.indexed = true
	return nil
}

// Commit applies w in one bbolt transaction.
func (b *boltBackend) Commit(_ context.Context, w *Write) (Rev, error) {
	var rev Rev
	err := b.db.Update(func(tx *bolt.Tx) error {
		rev = Rev(tx.ID())
		if w.KeysAt != 0 && b.keysRev.Load() > uint64(w.KeysAt) {
			return fmt.Errorf("%w (a key changed since they were checked)", ErrConflict)
		}
		if !w.InitAt.IsZero() {
			if err := createSchema(tx, w.InitAt); err != nil {
				return err
			}
		}
		if w.Bulk {
			return putBulk(tx, w)
		}
		return putWrite(tx, w)
	})
	if err != nil {
		return 0, err
	}
	if len(w.Keys) > 0 {
		b.keysRev.Store(uint64(rev))
	}
	b.notify(rev, w)
	return rev, nil
}

// putWrite writes w's records in tx, one by one.
func putWrite(tx *bolt.Tx, w *Write) error {
	delta := 0
	for _, kp := range w.Keys {
		d, err := putKey(tx, kp)
		if err != nil {
			return err
		}
		delta += d
	}
	if delta != 0 {
		if err := addKeyCount(tx, delta); err != nil {
			return err
		}
	}
	if err := putOperators(tx, w.Operators); err != nil {
		return err
	}
	if err := putMeta(tx, w.Meta); err != nil {
		return err
	}
	hb := tx.Bucket(bHashes)
	for _, e := range w.Expired {
		if err := hb.Delete(e.Hash[:]); err != nil {
			return err
		}
	}
	for _, ev := range w.Audit {
		if err := appendAudit(tx, ev); err != nil {
			return err
		}
	}
	return nil
}

// putKey applies one KeyPut (see its conditions) and returns how it
// changes the key count.
func putKey(tx *bolt.Tx, kp KeyPut) (int, error) {
	id := kp.New
	if id == nil {
		id = kp.Old
	}
	kb := tx.Bucket(bKeys)
	stored := kb.Get([]byte(id.ID))
	switch {
	case kp.Old == nil && stored != nil:
		return 0, fmt.Errorf("key %s: %w (the id is taken)", id.ID, ErrConflict)
	case kp.Old != nil && stored == nil:
		return 0, fmt.Errorf("key %q: %w", model.Sanitize(id.ID), ErrNotFound)
	case kp.Old != nil:
		cur, err := decodeKey(stored, nil)
		if err != nil {
			return 0, fmt.Errorf("key %q: %w", model.Sanitize(id.ID), err)
		}
		if cur.Version != kp.Old.Version {
			return 0, fmt.Errorf("key %s: %w (you had version %d, it is now %d)", id.ID, ErrConflict, kp.Old.Version, cur.Version)
		}
	}
	if kp.New == nil {
		return -1, deleteKeyRecords(tx, kp)
	}
	if err := kb.Put([]byte(id.ID), encodeKey(kp.New)); err != nil {
		return 0, err
	}
	if kp.Old == nil || foldName(kp.Old.Name) != foldName(kp.New.Name) {
		if err := checkNameFree(tx, kp.New.Name, id.ID); err != nil {
			return 0, err
		}
		if kp.Old != nil {
			if err := deleteName(tx, kp.Old.Name, id.ID); err != nil {
				return 0, err
			}
		}
		if err := putName(tx, kp.New.Name, id.ID); err != nil {
			return 0, err
		}
	}
	if err := putHashes(tx.Bucket(bHashes), id.ID, kp); err != nil {
		return 0, err
	}
	if kp.Old == nil {
		return 1, nil
	}
	return 0, nil
}

// putHashes replaces the hash index entries of key id, kp.Was, by
// kp.Hashes.
func putHashes(hb *bolt.Bucket, id string, kp KeyPut) error {
	if kp.Old != nil && kp.Hashes == kp.Was {
		return nil
	}
	now := map[[32]byte]hashRef{kp.Hashes.Cur: {id: id}}
	if kp.Hashes.HasPrev {
		now[kp.Hashes.Prev] = hashRef{id: id, previous: true}
	}
	if kp.Old != nil {
		for _, h := range wasHashes(kp.Was) {
			if _, keep := now[h]; !keep {
				if err := hb.Delete(h[:]); err != nil {
					return err
				}
			}
		}
	}
	// The previous secret first, then the current one: the order the
	// index entries were written in before the seam.
	if kp.Hashes.HasPrev {
		h := kp.Hashes.Prev
		if err := hb.Put(h[:], encodeHashRef(now[h])); err != nil {
			return err
		}
	}
	return hb.Put(kp.Hashes.Cur[:], encodeHashRef(hashRef{id: id}))
}

func wasHashes(h KeyHashes) [][32]byte {
	if h.HasPrev {
		return [][32]byte{h.Cur, h.Prev}
	}
	return [][32]byte{h.Cur}
}

// deleteKeyRecords removes every record of key kp.Old.
func deleteKeyRecords(tx *bolt.Tx, kp KeyPut) error {
	id := kp.Old.ID
	hb := tx.Bucket(bHashes)
	for _, h := range wasHashes(kp.Was) {
		if err := hb.Delete(h[:]); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bKeys).Delete([]byte(id)); err != nil {
		return err
	}
	if err := tx.Bucket(bLastUsed).Delete([]byte(id)); err != nil {
		return err
	}
	return deleteName(tx, kp.Old.Name, id)
}

func putOperators(tx *bolt.Tx, ops []OperatorPut) error {
	ob := tx.Bucket(bOperators)
	for _, op := range ops {
		if op.New == nil {
			if err := ob.Delete([]byte(op.Name)); err != nil {
				return err
			}
			continue
		}
		data, err := json.Marshal(op.New)
		if err != nil {
			return err
		}
		if err := ob.Put([]byte(op.Name), data); err != nil {
			return err
		}
	}
	return nil
}

// metaKeys are the meta bucket's keys of the metadata records.
var metaKeys = map[MetaName][]byte{MetaCatalog: kCatalog, MetaSecret: kSecret}

func putMeta(tx *bolt.Tx, meta map[MetaName][]byte) error {
	mb := tx.Bucket(bMeta)
	for _, name := range []MetaName{MetaCatalog, MetaSecret} { // a fixed order
		if v, ok := meta[name]; ok {
			if err := mb.Put(metaKeys[name], v); err != nil {
				return err
			}
		}
	}
	return nil
}

// createSchema creates the buckets and meta records of a new database.
func createSchema(tx *bolt.Tx, at time.Time) error {
	if meta := tx.Bucket(bMeta); meta != nil && meta.Get(kSchema) != nil {
		return fmt.Errorf("creating the database: %w (it exists)", ErrConflict)
	}
	for _, b := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bMeta)
	_ = meta.Put(kSchema, []byte(strconv.Itoa(SchemaVersion)))
	_ = meta.Put(kKeyCount, u64(0))
	_ = meta.Put(kCreated, []byte(at.UTC().Format(time.RFC3339Nano)))
	return nil
}

// MergeLastUsed writes recs (in key order) in one transaction. The
// max-merge is this process's memory: it is the file's only writer, and
// its in-memory time is never behind the file's.
func (b *boltBackend) MergeLastUsed(_ context.Context, recs []LastUsedRec) error {
	// bbolt keeps the key and value slices until the commit: one slab for
	// all of them instead of two allocations per record.
	n := 0
	for _, r := range recs {
		n += len(r.ID) + 8 + len(r.From)
	}
	slab := make([]byte, 0, n)
	return b.db.Update(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bLastUsed)
		lb.FillPercent = 0.9 // sorted inserts: see putBulk
		slab = slab[:0]
		for _, r := range recs {
			// Within the slab's capacity: appends never move it, so the
			// slices already handed to bbolt stay valid.
			i := len(slab)
			slab = append(slab, r.ID...)
			j := len(slab)
			slab = appendLastUsed(slab, r.At, r.From)
			k, v := slab[i:j:j], slab[j:len(slab):len(slab)]
			if err := lb.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Backup is bbolt's Tx.WriteTo: one read transaction, so writes that
// commit meanwhile are not in it and cannot tear it.
func (b *boltBackend) Backup(w io.Writer, announce func(size int64) error) (int64, error) {
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		if announce != nil {
			if err := announce(tx.Size()); err != nil {
				return err
			}
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Check runs bbolt's consistency check and returns every problem found.
func (b *boltBackend) Check() error {
	return b.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Close ends the watches, removes the lock file and closes the file.
func (b *boltBackend) Close() error {
	b.watchMu.Lock()
	for ch := range b.watchers {
		close(ch)
	}
	b.watchers = map[chan WatchEvent]struct{}{}
	b.watchMu.Unlock()
	if !b.readOnly {
		removeLockInfo(b.path)
	}
	return b.db.Close()
}
