package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

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

// nameOwner returns the id of the key whose name folds like name.
func nameOwner(tx *bolt.Tx, name string) (string, bool) {
	v := tx.Bucket(bNames).Get([]byte(foldName(name)))
	if v == nil {
		return "", false
	}
	return string(v), true
}

// checkNameFree refuses name if a key other than selfID uses it. It reads
// the index in the write transaction, so two writes cannot both take it.
func checkNameFree(tx *bolt.Tx, name, selfID string) error {
	if other, taken := nameOwner(tx, name); taken && other != selfID {
		return nameTaken(name, other)
	}
	return nil
}

// putName records that key id uses name.
func putName(tx *bolt.Tx, name, id string) error {
	return tx.Bucket(bNames).Put([]byte(foldName(name)), []byte(id))
}

// deleteName frees name if key id holds it. The check keeps a migrated
// file's other key whose name folds alike (see migrateV1) indexed.
func deleteName(tx *bolt.Tx, name, id string) error {
	nb := tx.Bucket(bNames)
	f := []byte(foldName(name))
	if string(nb.Get(f)) != id {
		return nil
	}
	return nb.Delete(f)
}

// foldedName is one entry of the names bucket.
type foldedName struct{ folded, id string }

// putNames writes names into nb in key order, which bbolt appends to
// pages instead of splitting them; fill is the bucket's FillPercent for
// this write. Names that fold alike (only a schema-1 file can hold them)
// go in id order, so the greatest id keeps the name, as the old loader's
// map did.
func putNames(nb *bolt.Bucket, all []foldedName, fill float64) error {
	slices.SortFunc(all, func(a, b foldedName) int {
		if c := strings.Compare(a.folded, b.folded); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	nb.FillPercent = fill
	for _, x := range all {
		if err := nb.Put([]byte(x.folded), []byte(x.id)); err != nil {
			return err
		}
	}
	return nil
}
