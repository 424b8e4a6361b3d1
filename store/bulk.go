package store

import (
	"fmt"
	"time"

	"github.com/keyward/keyward/model"
)

// pendingBatch holds the ids and hashes a bulk insert has drawn but not yet
// written, so they are unique within the batch too.
type pendingBatch struct {
	ids    map[string]struct{}
	hashes map[[32]byte]struct{}
}

// bulkSpecs normalises and validates a batch of specs, and refuses a name
// that repeats within the batch. With pastExpiry an expiry may lie in the
// past (but not beyond the horizon). then, if not nil, runs last on each
// spec, for the caller's own checks. The caller's slice is left alone.
func (s *Store) bulkSpecs(specs []model.KeySpec, now time.Time, pastExpiry bool, then func(i int, spec model.KeySpec) error) ([]model.KeySpec, error) {
	out := make([]model.KeySpec, len(specs))
	seen := make(map[string]int, len(specs))
	for i := range specs {
		spec := normalizeSpec(specs[i])
		check := spec
		if pastExpiry {
			check.ExpiresAt = nil
		}
		if err := s.checkSpec(check, now); err != nil {
			return nil, fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(spec.Name), err)
		}
		if pastExpiry {
			if err := model.CheckExpiryHorizon(spec.ExpiresAt, now); err != nil {
				return nil, fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(spec.Name), err)
			}
		}
		if j, dup := seen[foldName(spec.Name)]; dup {
			return nil, fmt.Errorf("key %d: name %q repeats key %d", i+1, spec.Name, j+1)
		}
		if then != nil {
			if err := then(i, spec); err != nil {
				return nil, err
			}
		}
		seen[foldName(spec.Name)] = i
		out[i] = spec
	}
	return out, nil
}

// drawBulk draws a new key (id, token, hash) for each spec inside t, each
// unique in the file and in the batch. each, if not nil, sees every record
// as it is drawn and may adjust it.
func (s *Store) drawBulk(t *txn, specs []model.KeySpec, each func(i int, nk *newKeyRec) error) ([]newKeyRec, error) {
	batch := &pendingBatch{ids: make(map[string]struct{}, len(specs)), hashes: make(map[[32]byte]struct{}, len(specs))}
	recs := make([]newKeyRec, len(specs))
	for i, spec := range specs {
		nk, err := s.newKey(t, spec, batch)
		if err != nil {
			return nil, fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(spec.Name), err)
		}
		if each != nil {
			if err := each(i, &nk); err != nil {
				return nil, err
			}
		}
		recs[i] = nk
	}
	return recs, nil
}

// putBulk is the one bulk writer behind ImportKeys and SeedKeys: it adds
// recs (drawn by drawBulk in t) to t as one bulk write, which the backend
// writes for throughput (Backend.Import), and schedules their memory
// updates. A key's LastUsedAt is written too (seeded history).
func (s *Store) putBulk(t *txn, recs []newKeyRec) {
	t.w.Bulk = true
	t.w.Keys = make([]KeyPut, len(recs))
	for i, nk := range recs {
		t.w.Keys[i] = KeyPut{New: nk.key, Hashes: KeyHashes{Cur: nk.hash}}
		s.scheduleInsert(t, nk)
	}
}

// ImportKeys creates many keys in one transaction (migrations, tests and
// benchmarks that need many keys with tokens). Tokens are returned in
// order. It is all-or-nothing, and audits one event per key.
func (s *Store) ImportKeys(actor string, specs []model.KeySpec) ([]*model.Key, []string, error) {
	if err := s.authorize(actor); err != nil {
		return nil, nil, err
	}
	specs, err := s.bulkSpecs(specs, s.now().UTC(), false, nil)
	if err != nil {
		return nil, nil, err
	}
	keys := make([]*model.Key, 0, len(specs))
	tokens := make([]string, 0, len(specs))
	err = s.write(actor, func(t *txn) error {
		t.w.Audit = make([]model.AuditEvent, 0, len(specs))
		recs, err := s.drawBulk(t, specs, func(_ int, nk *newKeyRec) error {
			t.w.Audit = append(t.w.Audit, model.AuditEvent{Time: t.now, Actor: t.actor, Action: model.ActKeyCreate,
				Target: nk.key.ID, Detail: "imported: " + describeNew(nk.key)})
			return nil
		})
		if err != nil {
			return err
		}
		s.putBulk(t, recs)
		for _, nk := range recs {
			keys = append(keys, nk.key)
			tokens = append(tokens, nk.token)
		}
		if len(recs) > 64 {
			// One resync signal instead of a flood of per-key events.
			t.changes = []Change{{Kind: Resync}}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return keys, tokens, nil
}

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
// lie in the past, and written by the same bulk writer (putBulk).
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
	specs, err := s.seedSpecs(actor, keys)
	if err != nil {
		return 0, err
	}
	err = s.write(actor, func(t *txn) error {
		recs, err := s.drawBulk(t, specs, func(i int, nk *newKeyRec) error {
			seeded(nk, keys[i])
			return nil
		})
		if err != nil {
			return err
		}
		s.putBulk(t, recs)
		t.changes = []Change{{Kind: Resync}}
		return t.audit(model.ActKeyCreate, "", "dev seed: "+model.Count(len(recs), "key", "")+" of development data (one event for the batch, not one per key)")
	})
	if err != nil {
		return 0, err
	}
	return len(keys), nil
}

// seedSpecs validates a seed batch as ImportKeys does, except that an
// expiry may be past (but not beyond the horizon); creation and last-use
// times must make sense too.
func (s *Store) seedSpecs(actor string, keys []SeedKey) ([]model.KeySpec, error) {
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
	for i, sk := range keys {
		specs[i] = sk.Spec
	}
	return s.bulkSpecs(specs, now, true, func(i int, spec model.KeySpec) error {
		sk := keys[i]
		if !sk.CreatedAt.IsZero() && sk.CreatedAt.Before(since) {
			return fmt.Errorf("key %d (%q): created %s, before operator %q's account (%s): verify would refuse it as CREATOR_DISABLED",
				i+1, model.Sanitize(spec.Name), sk.CreatedAt.UTC().Format(time.RFC3339), actor, since.UTC().Format(time.RFC3339))
		}
		if sk.LastUsedAt != nil && sk.LastUsedAt.UnixNano() <= 0 {
			return fmt.Errorf("key %d: last used time %s is not after 1970", i+1, sk.LastUsedAt)
		}
		return nil
	})
}

// seeded gives a drawn key sk's history. Its token never leaves SeedKeys.
func seeded(nk *newKeyRec, sk SeedKey) {
	if !sk.CreatedAt.IsZero() {
		nk.key.CreatedAt = sk.CreatedAt.UTC()
		nk.key.UpdatedAt = nk.key.CreatedAt
	}
	if sk.LastUsedAt != nil {
		at := sk.LastUsedAt.UTC()
		nk.key.LastUsedAt, nk.key.LastUsedFrom = &at, model.Sanitize(sk.LastUsedFrom)
	}
	nk.token = ""
}
