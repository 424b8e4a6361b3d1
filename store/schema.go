package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is written to the meta bucket of every database. A newer
// database is refused rather than misread.
//
// Version 2 added the names bucket and the key count (see migrateV1): a
// writable version 1 file is migrated when it is opened.
const SchemaVersion = 2

var (
	bMeta      = []byte("meta")
	bKeys      = []byte("keys")
	bHashes    = []byte("hashes")
	bLastUsed  = []byte("lastused")
	bOperators = []byte("operators")
	bAudit     = []byte("audit")
	bAuditKey  = []byte("audit_by_target")
	// bNames maps foldName(name) to the key id: it keeps names unique
	// without an in-memory map, and lets Peek list keys in name order
	// without reading them all.
	bNames = []byte("names")

	// v1Buckets are the buckets of a schema 1 file; allBuckets those of the
	// current schema.
	v1Buckets  = [][]byte{bMeta, bKeys, bHashes, bLastUsed, bOperators, bAudit, bAuditKey}
	allBuckets = append(slices.Clip(v1Buckets), bNames)

	kSchema  = []byte("schema")
	kCatalog = []byte("catalog")
	kSecret  = []byte("shared_secret")
	kCreated = []byte("created_at")
	// kKeyCount is how many records the keys bucket holds (8 bytes, big
	// endian), kept by every transaction that adds or removes keys, so Peek
	// can report the total without counting them.
	kKeyCount = []byte("key_count")
)

// init creates the buckets of a new database, or checks an existing one's
// schema version and refuses foreign files. A writable schema 1 file is
// migrated to the current schema.
func (s *Store) init() error {
	var version int
	var fresh bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if version, fresh, err = readSchema(tx, s.path); err != nil || fresh || version >= schemaNamesIndex {
			return err
		}
		// Before migrating: a file with a schema but not the buckets of
		// one is foreign, and must be left untouched.
		return checkBuckets(tx, s.path, v1Buckets)
	})
	if err != nil {
		return err
	}
	if !fresh {
		s.indexed = version >= schemaNamesIndex
		if s.indexed || s.readOnly {
			return nil // a read-only file stays as it is: writes are refused anyway
		}
		if err := s.db.Update(migrateV1); err != nil {
			return fmt.Errorf("%s: adding the name index (schema 1 -> 2): %w", s.path, err)
		}
		s.indexed = true
		return nil
	}
	if s.readOnly {
		return s.readOnlyError()
	}
	var cat model.Catalog
	if len(s.opts.DefaultCatalog) > 0 {
		if cat, err = model.ParseCatalog(s.opts.DefaultCatalog); err != nil {
			return fmt.Errorf("default catalog: %w", err)
		}
	}
	boot := s.opts.Bootstrap
	if boot == "" {
		boot = LocalOperatorName()
	}
	if err := model.ValidateOperatorName(boot); err != nil {
		return fmt.Errorf("bootstrap operator: %w", err)
	}
	now := s.now().UTC()
	s.indexed = true
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		_ = meta.Put(kSchema, []byte(strconv.Itoa(SchemaVersion)))
		_ = meta.Put(kKeyCount, u64(0))
		_ = meta.Put(kCreated, []byte(now.Format(time.RFC3339Nano)))
		cb, _ := json.Marshal(cat)
		_ = meta.Put(kCatalog, cb)
		id, err := model.NewOperatorID()
		if err != nil {
			return err
		}
		op := &model.Operator{ID: id, Name: boot, Role: model.OperatorAdmin, CreatedAt: now, CreatedBy: "bootstrap"}
		ob, _ := json.Marshal(op)
		if err := tx.Bucket(bOperators).Put([]byte(boot), ob); err != nil {
			return err
		}
		return appendAudit(tx, model.AuditEvent{Time: now, Actor: "bootstrap", Action: model.ActOperatorAdd, Target: boot, Detail: "first ADMIN operator of a new database (local OS user)"})
	})
}

// LocalOperatorName turns the local OS user into a valid operator name.
func LocalOperatorName() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	name = strings.ToLower(name)
	var b strings.Builder
	for i, c := range name {
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '.' || c == '_' || c == '-'))
		if ok {
			b.WriteRune(c)
		} else if b.Len() > 0 {
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > 32 {
		out = out[:32]
	}
	if out == "" {
		out = "admin"
	}
	return out
}

// schemaNamesIndex is the first schema with the names bucket and the key
// count.
const schemaNamesIndex = 2

// ErrNoIndex: the file predates the name index (schema 1), or holds no
// database yet (an empty file). Open it normally once: Open migrates (or
// creates) it, and Peek works from then on.
var ErrNoIndex = errors.New("database has no name index yet (schema 1): open it normally once to add it")

// readSchema reads the schema version of the file open in tx. fresh means
// the file has no bucket at all: a new database. A file with other
// buckets but no keyward meta bucket, or a schema newer than this build's,
// is refused.
func readSchema(tx *bolt.Tx, path string) (version int, fresh bool, err error) {
	meta := tx.Bucket(bMeta)
	if meta == nil {
		n := 0
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { n++; return nil })
		if n > 0 {
			return 0, false, fmt.Errorf("%s: %w (it is a bbolt file with other data); refusing to touch it", path, ErrForeign)
		}
		return 0, true, nil
	}
	v, err := strconv.Atoi(string(meta.Get(kSchema)))
	if err != nil || v < 1 {
		return 0, false, fmt.Errorf("%s: %w (no schema version)", path, ErrForeign)
	}
	if v > SchemaVersion {
		return 0, false, fmt.Errorf("%s: %w (schema %d; this build reads up to %d); upgrade keyward", path, ErrNewerSchema, v, SchemaVersion)
	}
	return v, false, nil
}

// checkBuckets refuses a file that lacks one of the buckets its schema
// must have.
func checkBuckets(tx *bolt.Tx, path string, required [][]byte) error {
	for _, b := range required {
		if tx.Bucket(b) == nil {
			return fmt.Errorf("%s: %w (bucket %q is missing)", path, ErrForeign, b)
		}
	}
	return nil
}

// migrateV1 brings a schema 1 file to schema 2 in tx: it builds the names
// bucket from the keys bucket and writes the key count.
//
// The index is written in sorted order with full pages, as ImportKeys does
// for its buckets: random inserts into one fresh bucket would grow a huge
// node and memmove it on every Put. Should two keys' names fold alike
// (schema 1 only kept them unique in memory), the index names the one
// with the greater id, the one the old loader's name map kept.
//
// The garbage collector is paused meanwhile, as for load (see pauseGC):
// everything allocated here lives until the commit, so collecting would
// only trace it again and again (a third of a 1M-key migration).
func migrateV1(tx *bolt.Tx) error {
	defer pauseGC()()
	var all []foldedName
	err := tx.Bucket(bKeys).ForEach(func(k, v []byte) error {
		id, name, err := decodeIDName(v)
		if err != nil {
			return fmt.Errorf("key %q: %w", model.Sanitize(string(k)), err)
		}
		all = append(all, foldedName{foldName(string(name)), string(id)})
		return nil
	})
	if err != nil {
		return err
	}
	if tx.Bucket(bNames) != nil { // left over from a newer build: rebuild it
		if err := tx.DeleteBucket(bNames); err != nil {
			return err
		}
	}
	nb, err := tx.CreateBucket(bNames)
	if err != nil {
		return err
	}
	if err := putNames(nb, all, 1); err != nil {
		return err
	}
	meta := tx.Bucket(bMeta)
	if err := meta.Put(kKeyCount, u64(uint64(len(all)))); err != nil {
		return err
	}
	return meta.Put(kSchema, []byte(strconv.Itoa(schemaNamesIndex)))
}

// readKeyCount returns the key count kept in the meta bucket.
func readKeyCount(meta *bolt.Bucket) (int, error) {
	v := meta.Get(kKeyCount)
	if len(v) != 8 {
		return 0, fmt.Errorf("key count: %w", errCorruptRecord)
	}
	return int(binary.BigEndian.Uint64(v)), nil
}

// addKeyCount adds delta to the key count in tx, which adds or removes
// that many keys.
func addKeyCount(tx *bolt.Tx, delta int) error {
	meta := tx.Bucket(bMeta)
	n, err := readKeyCount(meta)
	if err != nil {
		return err
	}
	if n+delta < 0 {
		return fmt.Errorf("key count %d%+d: %w", n, delta, errCorruptRecord)
	}
	return meta.Put(kKeyCount, u64(uint64(n+delta)))
}
