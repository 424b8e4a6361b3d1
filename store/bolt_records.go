package store

import (
	"bytes"
	"fmt"
	"time"

	"github.com/keyward/keyward/model"
	bolt "go.etcd.io/bbolt"
)

// readKey decodes key id from tx, with its last-used record.
func readKey(tx *bolt.Tx, id string) (*model.Key, error) {
	v := tx.Bucket(bKeys).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("key %q: %w", model.Sanitize(id), ErrNotFound)
	}
	k, err := decodeKey(v, nil)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", model.Sanitize(id), err)
	}
	// A damaged last-used record is ignored, as the load ignores it.
	if at, from, err := decodeLastUsed(tx.Bucket(bLastUsed).Get([]byte(id))); err == nil {
		t := time.Unix(0, at).UTC()
		k.LastUsedAt, k.LastUsedFrom = &t, from
	}
	return k, nil
}

// readAllKeys decodes every key of tx, with its last-used record, in id
// order, as the load does (lists and times from slabs, repeated strings
// shared), and passes each to fn.
func readAllKeys(tx *bolt.Tx, fn func(k *model.Key)) error {
	intern := map[string]string{}
	var scratch []byte
	var a loadAlloc
	var slab []model.Key
	lc := tx.Bucket(bLastUsed).Cursor()
	lk, lv := lc.First()
	c := tx.Bucket(bKeys).Cursor()
	for id, v := c.First(); id != nil; id, v = c.Next() {
		if len(slab) == 0 {
			slab = make([]model.Key, 256)
		}
		k := &slab[0]
		slab = slab[1:]
		if err := decodeKeyInto(k, v, intern, &scratch, &a); err != nil {
			return fmt.Errorf("key %q: %w", model.Sanitize(string(id)), err)
		}
		for lk != nil && bytes.Compare(lk, id) < 0 {
			lk, lv = lc.Next()
		}
		if lk != nil && bytes.Equal(lk, id) {
			if at, from, ok := loadLastUsed(lv, intern); ok {
				k.LastUsedAt, k.LastUsedFrom = a.time(time.Unix(0, at).UTC()), from
			}
		}
		fn(k)
	}
	return nil
}
