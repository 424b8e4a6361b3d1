package store

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
)

// SeedKey is one key of development data. Unlike a real create, its
// creation time, expiry (past expiries included) and last use are given,
// so a seeded database looks like one that has been in use for years.
type SeedKey struct {
	Spec      model.KeySpec // name, description, role, scopes, resources, expiry, active
	CreatedAt time.Time     // zero means now
	// LastUsedAt nil means never used; LastUsedFrom is its source.
	LastUsedAt   *time.Time
	LastUsedFrom string
}

// SeedKeys writes development data: keys with given history, in one
// transaction (all or nothing), as actor (an active ADMIN operator).
// Their tokens are drawn and hashed like real ones but not returned, so
// seeded keys never verify; they exist to fill tables and indexes.
//
// Every spec is validated like ImportKeys does, except that an expiry may
// lie in the past. Records are written in key order per bucket, as
// ImportKeys does, so a large batch neither degrades into O(n²) node
// inserts nor leaves half-empty pages.
//
// Audit: one event per batch ("dev seed: N keys"), not one per key as for
// real creates. Seeded keys are throwaway data, and a million per-key
// events would make up most of the file; that batch event says who seeded
// how many keys and when. Subscribers get one Resync.
func (s *Store) SeedKeys(actor string, keys []SeedKey) (int, error) {
	if err := s.authorize(actor); err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, nil
	}
	now := s.now().UTC()
	// A key made before its creator's account would be refused by
	// verify as CREATOR_DISABLED (model.CreatorActive), and shown so.
	s.mu.RLock()
	var since time.Time
	if op := s.ops[actor]; op != nil {
		since = op.CreatedAt
	}
	s.mu.RUnlock()
	specs := make([]model.KeySpec, len(keys))
	seen := make(map[string]int, len(keys))
	for i, sk := range keys {
		spec := normalizeSpec(sk.Spec)
		check := spec
		check.ExpiresAt = nil // dev data may be expired already
		if err := s.checkSpec(check, now); err != nil {
			return 0, fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(spec.Name), err)
		}
		if err := model.CheckExpiryHorizon(spec.ExpiresAt, now); err != nil {
			return 0, fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(spec.Name), err)
		}
		if j, dup := seen[foldName(spec.Name)]; dup {
			return 0, fmt.Errorf("key %d: name %q repeats key %d", i+1, spec.Name, j+1)
		}
		if !sk.CreatedAt.IsZero() && sk.CreatedAt.Before(since) {
			return 0, fmt.Errorf("key %d (%q): created %s, before operator %q's account (%s): verify would refuse it as CREATOR_DISABLED",
				i+1, model.Sanitize(spec.Name), sk.CreatedAt.UTC().Format(time.RFC3339), actor, since.UTC().Format(time.RFC3339))
		}
		if sk.LastUsedAt != nil && sk.LastUsedAt.UnixNano() <= 0 {
			return 0, fmt.Errorf("key %d: last used time %s is not after 1970", i+1, sk.LastUsedAt)
		}
		seen[foldName(spec.Name)] = i
		specs[i] = spec
	}
	err := s.write(actor, func(t *txn) error {
		batch := &pendingBatch{ids: make(map[string]struct{}, len(keys)), hashes: make(map[[32]byte]struct{}, len(keys))}
		recs := make([]newKeyRec, len(keys))
		for i, spec := range specs {
			nk, err := s.newKey(t, spec, batch)
			if err != nil {
				return fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(spec.Name), err)
			}
			sk := keys[i]
			if !sk.CreatedAt.IsZero() {
				nk.key.CreatedAt = sk.CreatedAt.UTC()
				nk.key.UpdatedAt = nk.key.CreatedAt
			}
			if sk.LastUsedAt != nil {
				at := sk.LastUsedAt.UTC()
				nk.key.LastUsedAt, nk.key.LastUsedFrom = &at, model.Sanitize(sk.LastUsedFrom)
			}
			nk.token = "" // never leaves this function
			recs[i] = nk
		}
		kb, hb, lb := t.tx.Bucket(bKeys), t.tx.Bucket(bHashes), t.tx.Bucket(bLastUsed)
		kb.FillPercent, hb.FillPercent, lb.FillPercent = 0.9, 0.9, 0.9
		byID := slices.Clone(recs)
		slices.SortFunc(byID, func(a, b newKeyRec) int { return strings.Compare(a.key.ID, b.key.ID) })
		for _, nk := range byID {
			if err := kb.Put([]byte(nk.key.ID), encodeKey(nk.key)); err != nil {
				return err
			}
		}
		for _, nk := range byID {
			if k := nk.key; k.LastUsedAt != nil {
				if err := lb.Put([]byte(k.ID), encodeLastUsed(k.LastUsedAt.UnixNano(), k.LastUsedFrom)); err != nil {
					return err
				}
			}
		}
		slices.SortFunc(byID, func(a, b newKeyRec) int { return bytes.Compare(a.hash[:], b.hash[:]) })
		for _, nk := range byID {
			if err := hb.Put(nk.hash[:], encodeHashRef(hashRef{id: nk.key.ID})); err != nil {
				return err
			}
		}
		if err := putNamesSorted(t.tx, recs); err != nil {
			return err
		}
		if err := addKeyCount(t.tx, len(recs)); err != nil {
			return err
		}
		for _, nk := range recs {
			s.scheduleSeeded(t, nk)
		}
		t.changes = []Change{{Kind: Resync}}
		return t.audit(model.ActKeyCreate, "", "dev seed: "+model.Count(len(recs), "key", "")+" of development data (one event for the batch, not one per key)")
	})
	if err != nil {
		return 0, err
	}
	return len(keys), nil
}

// scheduleSeeded adds a seeded key to memory once t commits, with its
// last-used time loaded the way Open loads it.
func (s *Store) scheduleSeeded(t *txn, nk newKeyRec) {
	k, h := nk.key, nk.hash
	g := s.grants.get(k)
	t.after = append(t.after, func() {
		i := s.slots.alloc(k.ID)
		e := s.slots.at(i)
		e.cur = h
		if k.LastUsedAt != nil {
			e.lastAt.Store(k.LastUsedAt.UnixNano())
		}
		s.setKey(i, k, g)
		s.hashes.add(h, i)
	})
}
