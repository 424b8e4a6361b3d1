package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/keyward/keyward/model"
	bolt "go.etcd.io/bbolt"
)

// Import writes keys in one transaction, whatever batch says: bbolt has
// no transaction size limit, so an import stays all-or-nothing here.
func (b *boltBackend) Import(ctx context.Context, keys []KeyPut, audit []model.AuditEvent, _ int) (int, error) {
	if _, err := b.Commit(ctx, &Write{Keys: keys, Audit: audit, Bulk: true}); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// putBulk writes a bulk Write (new keys only), sorted per bucket.
//
// Ids and hashes are random, and bbolt only splits nodes at commit, so
// inserting 100k random keys one by one costs O(n²) memmoves inside one
// huge node. The records are therefore written in key order, bucket by
// bucket. Sorted inserts fill pages left to right; splitting them at the
// default 50% would leave every new page half empty (a bigger file, more
// remaps while it grows, more to fsync), so pages are filled to 90%.
func putBulk(tx *bolt.Tx, w *Write) error {
	idx, err := appendAuditBulk(tx, w.Audit)
	if err != nil {
		return err
	}
	kb, hb, lb := tx.Bucket(bKeys), tx.Bucket(bHashes), tx.Bucket(bLastUsed)
	kb.FillPercent, hb.FillPercent, lb.FillPercent = 0.9, 0.9, 0.9
	byID := slices.Clone(w.Keys)
	slices.SortFunc(byID, func(a, b KeyPut) int { return strings.Compare(a.New.ID, b.New.ID) })
	for _, kp := range byID {
		if kp.Old != nil || kb.Get([]byte(kp.New.ID)) != nil {
			return fmt.Errorf("key %s: %w (a bulk write only creates keys)", kp.New.ID, ErrConflict)
		}
		if err := kb.Put([]byte(kp.New.ID), encodeKey(kp.New)); err != nil {
			return err
		}
	}
	for _, kp := range byID {
		if k := kp.New; k.LastUsedAt != nil {
			if err := lb.Put([]byte(k.ID), encodeLastUsed(k.LastUsedAt.UnixNano(), k.LastUsedFrom)); err != nil {
				return err
			}
		}
	}
	slices.SortFunc(byID, func(a, b KeyPut) int { return bytes.Compare(a.Hashes.Cur[:], b.Hashes.Cur[:]) })
	for _, kp := range byID {
		if err := hb.Put(kp.Hashes.Cur[:], encodeHashRef(hashRef{id: kp.New.ID})); err != nil {
			return err
		}
	}
	if err := putSortedIndex(tx.Bucket(bAuditKey), idx); err != nil {
		return err
	}
	if err := putNamesSorted(tx, w.Keys); err != nil {
		return err
	}
	return addKeyCount(tx, len(w.Keys))
}

// putSortedIndex writes index keys (empty values) in key order.
func putSortedIndex(b *bolt.Bucket, keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, bytes.Compare)
	b.FillPercent = 0.9
	for _, k := range keys {
		if err := b.Put(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// putNamesSorted adds the names of a batch of new keys to the index in
// name order, for the reason putBulk writes its other buckets sorted.
// A name must be free: a bulk write refuses a taken one.
func putNamesSorted(tx *bolt.Tx, keys []KeyPut) error {
	all := make([]foldedName, len(keys))
	for i, kp := range keys {
		if err := checkNameFree(tx, kp.New.Name, kp.New.ID); err != nil {
			return err
		}
		all[i] = foldedName{foldName(kp.New.Name), kp.New.ID}
	}
	return putNames(tx.Bucket(bNames), all, 0.9)
}
