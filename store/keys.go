package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// txn is one write: the bbolt work plus the memory updates and change
// events to apply once it has committed.
type txn struct {
	tx      *bolt.Tx
	now     time.Time
	actor   string      // the operator's name, for the audit log and CreatedBy
	who     model.Actor // the whole actor write authorised
	after   []func()
	changes []Change
}

func (t *txn) audit(action, target, detail string) error {
	return appendAudit(t.tx, model.AuditEvent{Time: t.now, Actor: t.actor, Action: action, Target: target, Detail: detail})
}

// errNoChange, returned by a write's fn, rolls the transaction back and
// makes write succeed: the request was valid but changed nothing.
var errNoChange = errors.New("no change")

// write runs fn in one bbolt transaction as actor. The actor must be an
// active ADMIN operator: READONLY operators are refused here, not only in
// the UI. Memory is updated only after the commit succeeds.
func (s *Store) write(actor string, fn func(t *txn) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.authorize(actor); err != nil {
		return err
	}
	if s.readOnly {
		return s.readOnlyError()
	}
	// Audit and CreatedBy name the operator; the rest of the actor (its
	// identity and key) only decides the authorisation above.
	who := model.ParseActor(actor)
	t := &txn{now: s.now().UTC(), actor: who.Name, who: who}
	var fnErr error
	err := s.db.Update(func(tx *bolt.Tx) error {
		t.tx = tx
		fnErr = fn(t)
		return fnErr
	})
	if errors.Is(err, errNoChange) {
		return nil // rolled back: nothing to commit, no fsync, no events
	}
	if err != nil && fnErr == nil {
		// The commit itself failed (disk full, I/O error): bbolt rolled
		// back, so nothing of this change is on disk or in memory.
		return fmt.Errorf("saving to database %s failed, nothing was changed: %w", s.path, err)
	}
	if err != nil {
		return err
	}
	// Apply the memory updates in chunks: a bulk import's thousands of map
	// inserts under one Lock would stall every verification meanwhile. A
	// key of the batch may verify a moment before the call returns; after
	// it returns, every one does.
	for lo := 0; lo < len(t.after); lo += applyChunk {
		s.mu.Lock()
		for _, f := range t.after[lo:min(lo+applyChunk, len(t.after))] {
			f()
		}
		s.mu.Unlock()
	}
	s.publish(t.changes...)
	return nil
}

// authorize checks that actor may change state: the operator account it
// names (by identity, when the actor carries one, see model.Actor) exists,
// is enabled, is ADMIN and, for an SSH session, still holds the key that
// signed the session's login.
func (s *Store) authorize(actor string) error {
	s.mu.RLock()
	op, why := s.actorOperator(model.ParseActor(actor))
	s.mu.RUnlock()
	switch {
	case why != "":
		return fmt.Errorf("%w: %s", ErrForbidden, why)
	case op.Role != model.OperatorAdmin:
		return fmt.Errorf("%w: operator %q is READONLY", ErrForbidden, op.Name)
	}
	return nil
}

// actorOperator returns the operator account a is bound to, or why it no
// longer stands behind a (deleted, replaced by a namesake, disabled, or
// the session's key removed). Caller holds s.mu.
func (s *Store) actorOperator(a model.Actor) (*model.Operator, string) {
	op := s.ops[a.Name]
	switch {
	case op == nil:
		return nil, fmt.Sprintf("%q is not an operator of this database", model.Sanitize(a.Name))
	case a.ID != "" && op.ID != a.ID:
		return nil, fmt.Sprintf("the operator account %q this session belongs to was deleted (the name now belongs to a new account)", a.Name)
	case op.Disabled:
		return nil, fmt.Sprintf("operator %q is disabled", a.Name)
	}
	if a.KeyFingerprint != "" {
		if _, ok := op.KeyByFingerprint(a.KeyFingerprint); !ok {
			return nil, fmt.Sprintf("the SSH key this session logged in with (%s) was removed from operator %q", model.Sanitize(a.KeyFingerprint), a.Name)
		}
	}
	return op, ""
}

// SessionOperator returns the operator account behind actor (see
// model.Actor) as it is now, or an ErrForbidden error saying why it no
// longer stands behind it: deleted (or replaced by a new account of the
// same name), disabled, or the session's SSH key removed. A READONLY
// operator is returned: reading needs no more.
func (s *Store) SessionOperator(actor string) (model.Operator, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	op, why := s.actorOperator(model.ParseActor(actor))
	if why != "" {
		return model.Operator{}, fmt.Errorf("%w: %s", ErrForbidden, why)
	}
	c := *op
	c.PublicKeys = append([]string(nil), op.PublicKeys...)
	return c, nil
}

// Catalog returns the scope and resource catalog.
func (s *Store) Catalog() model.Catalog {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.catalog
}

// KeyCount returns how many keys exist.
func (s *Store) KeyCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.slots.live
}

// checkSpec validates spec against the catalog. Whether its name is free
// is checked in the write transaction (checkNameFree).
func (s *Store) checkSpec(spec model.KeySpec, now time.Time) error {
	s.mu.RLock()
	cat := s.catalog
	s.mu.RUnlock()
	return model.ValidateSpec(spec, &cat, now)
}

func nameTaken(name, other string) error {
	return &model.FieldError{Field: "name", Msg: fmt.Sprintf("name %q is already used by key %s", name, other), Err: ErrNameTaken}
}

// newToken creates a token whose hash is not already indexed.
func (s *Store) newToken(b *bolt.Bucket) (model.Token, [32]byte, error) {
	for {
		tok, err := model.GenerateToken(s.prefix)
		if err != nil {
			return model.Token{}, [32]byte{}, err
		}
		h := tok.Hash()
		if b.Get(h[:]) == nil {
			return tok, h, nil
		}
	}
}

// CreateKey validates spec, stores a new key and returns it with its token.
// The token is returned exactly once; only its SHA-256 is persisted.
func (s *Store) CreateKey(actor string, spec model.KeySpec) (*model.Key, string, error) {
	// Refuse non-admins before validating, so they learn nothing about
	// existing names. write checks again under the writer lock.
	if err := s.authorize(actor); err != nil {
		return nil, "", err
	}
	now := s.now().UTC()
	spec = normalizeSpec(spec)
	if err := s.checkSpec(spec, now); err != nil {
		return nil, "", err
	}
	var key *model.Key
	var token string
	err := s.write(actor, func(t *txn) error {
		k, tok, err := s.insertKey(t, spec)
		key, token = k, tok
		if err != nil {
			return err
		}
		return t.audit(model.ActKeyCreate, k.ID, describeNew(k))
	})
	if err != nil {
		return nil, "", err
	}
	return key, token, nil
}

// insertKey writes one new key inside t and schedules its memory update.
func (s *Store) insertKey(t *txn, spec model.KeySpec) (*model.Key, string, error) {
	nk, err := s.newKey(t, spec, nil)
	if err != nil {
		return nil, "", err
	}
	if err := t.tx.Bucket(bKeys).Put([]byte(nk.key.ID), encodeKey(nk.key)); err != nil {
		return nil, "", err
	}
	if err := t.tx.Bucket(bHashes).Put(nk.hash[:], encodeHashRef(hashRef{id: nk.key.ID})); err != nil {
		return nil, "", err
	}
	if err := putName(t.tx, nk.key.Name, nk.key.ID); err != nil {
		return nil, "", err
	}
	if err := addKeyCount(t.tx, 1); err != nil {
		return nil, "", err
	}
	s.scheduleInsert(t, nk)
	return nk.key, nk.token, nil
}

// newKeyRec is a key built in a transaction but not yet written.
type newKeyRec struct {
	key   *model.Key
	token string
	hash  [32]byte
}

// pendingBatch holds the ids and hashes a bulk insert has drawn but not yet
// written, so they are unique within the batch too.
type pendingBatch struct {
	ids    map[string]struct{}
	hashes map[[32]byte]struct{}
}

// newKey draws an id and a token for spec, checking the name is free (in
// the write transaction: two creates may race) and that id and hash are
// unused. The caller writes the key, its hash and its name. Names within a
// batch are checked by the caller before the transaction.
func (s *Store) newKey(t *txn, spec model.KeySpec, batch *pendingBatch) (newKeyRec, error) {
	if err := checkNameFree(t.tx, spec.Name, ""); err != nil {
		return newKeyRec{}, err
	}
	hb, kb := t.tx.Bucket(bHashes), t.tx.Bucket(bKeys)
	var tok model.Token
	var h [32]byte
	for {
		var err error
		if tok, err = model.GenerateToken(s.prefix); err != nil {
			return newKeyRec{}, err
		}
		h = tok.Hash()
		if batch != nil {
			if _, dup := batch.hashes[h]; dup {
				continue
			}
		}
		if hb.Get(h[:]) == nil {
			break
		}
	}
	var id string
	for {
		var err error
		if id, err = model.NewKeyID(); err != nil {
			return newKeyRec{}, err
		}
		if batch != nil {
			if _, dup := batch.ids[id]; dup {
				continue
			}
		}
		if kb.Get([]byte(id)) == nil {
			break
		}
	}
	if batch != nil {
		batch.ids[id], batch.hashes[h] = struct{}{}, struct{}{}
	}
	status := model.StatusActive
	if !spec.Active {
		status = model.StatusDisabled
	}
	k := &model.Key{
		ID: id, Name: spec.Name, Description: spec.Description, Role: spec.Role,
		Scopes: spec.Scopes, Resources: spec.Resources, Status: status,
		CreatedAt: t.now, CreatedBy: t.actor, UpdatedAt: t.now, ExpiresAt: spec.ExpiresAt,
		Hint: tok.Hint(), Version: 1,
	}
	return newKeyRec{key: k, token: tok.String(), hash: h}, nil
}

// scheduleInsert adds a written key to memory once t commits.
func (s *Store) scheduleInsert(t *txn, nk newKeyRec) {
	k, h := nk.key, nk.hash
	g := s.grants.get(k) // not under s.mu
	t.after = append(t.after, func() {
		i := s.slots.alloc(k.ID)
		s.slots.at(i).cur = h
		s.setKey(i, k, g)
		s.hashes.add(h, i)
	})
	t.changes = append(t.changes, Change{Kind: KeyCreated, ID: k.ID})
}

// ImportKeys creates many keys in one transaction (seeding, migrations).
// Tokens are returned in order. It is all-or-nothing.
//
// Ids and hashes are random, and bbolt only splits nodes at commit, so
// inserting 100k random keys one by one costs O(n²) memmoves inside one
// huge node. The records are therefore built first and written in key
// order, bucket by bucket.
func (s *Store) ImportKeys(actor string, specs []model.KeySpec) ([]*model.Key, []string, error) {
	if err := s.authorize(actor); err != nil {
		return nil, nil, err
	}
	now := s.now().UTC()
	specs = slices.Clone(specs) // normalised below; the caller's slice is left alone
	seen := make(map[string]int, len(specs))
	for i := range specs {
		specs[i] = normalizeSpec(specs[i])
		if err := s.checkSpec(specs[i], now); err != nil {
			return nil, nil, fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(specs[i].Name), err)
		}
		if j, dup := seen[foldName(specs[i].Name)]; dup {
			return nil, nil, fmt.Errorf("key %d: name %q repeats key %d", i+1, specs[i].Name, j+1)
		}
		seen[foldName(specs[i].Name)] = i
	}
	keys := make([]*model.Key, 0, len(specs))
	tokens := make([]string, 0, len(specs))
	err := s.write(actor, func(t *txn) error {
		batch := &pendingBatch{ids: make(map[string]struct{}, len(specs)), hashes: make(map[[32]byte]struct{}, len(specs))}
		recs := make([]newKeyRec, 0, len(specs))
		idx := make([][]byte, 0, len(specs))
		ab := t.tx.Bucket(bAudit)
		ab.FillPercent = 1 // sequence keys only ever append
		for i, spec := range specs {
			nk, err := s.newKey(t, spec, batch)
			if err != nil {
				return fmt.Errorf("key %d (%q): %w", i+1, model.Sanitize(spec.Name), err)
			}
			ik, err := appendAuditEvent(t.tx, model.AuditEvent{Time: t.now, Actor: t.actor, Action: model.ActKeyCreate,
				Target: nk.key.ID, Detail: "imported: " + describeNew(nk.key)})
			if err != nil {
				return err
			}
			recs = append(recs, nk)
			idx = append(idx, ik)
		}
		kb, hb, ib := t.tx.Bucket(bKeys), t.tx.Bucket(bHashes), t.tx.Bucket(bAuditKey)
		// Sorted inserts fill pages left to right; splitting them at the
		// default 50% would leave every new page half empty (a bigger
		// file, more remaps while it grows, more to fsync).
		kb.FillPercent, hb.FillPercent = 0.9, 0.9
		byID := slices.Clone(recs)
		slices.SortFunc(byID, func(a, b newKeyRec) int { return strings.Compare(a.key.ID, b.key.ID) })
		for _, nk := range byID {
			if err := kb.Put([]byte(nk.key.ID), encodeKey(nk.key)); err != nil {
				return err
			}
		}
		slices.SortFunc(byID, func(a, b newKeyRec) int { return bytes.Compare(a.hash[:], b.hash[:]) })
		for _, nk := range byID {
			if err := hb.Put(nk.hash[:], encodeHashRef(hashRef{id: nk.key.ID})); err != nil {
				return err
			}
		}
		slices.SortFunc(idx, bytes.Compare)
		ib.FillPercent = 0.9
		for _, ik := range idx {
			if err := ib.Put(ik, nil); err != nil {
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
			s.scheduleInsert(t, nk)
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

// putNamesSorted adds the names of a batch of new keys to the index in
// name order, for the reason ImportKeys writes its other buckets sorted.
func putNamesSorted(tx *bolt.Tx, recs []newKeyRec) error {
	all := make([]foldedName, len(recs))
	for i, nk := range recs {
		all[i] = foldedName{foldName(nk.key.Name), nk.key.ID}
	}
	return putNames(tx.Bucket(bNames), all, 0.9)
}

// load-modify-store helper: fn returns the new key (or nil to delete).
func (s *Store) modifyKey(actor, id string, fn func(t *txn, cur *model.Key) (*model.Key, error)) (*model.Key, error) {
	var out *model.Key
	err := s.write(actor, func(t *txn) error {
		cur, err := readKey(t.tx, id) // the file and memory agree under wmu
		if err != nil {
			return err
		}
		next, err := fn(t, cur)
		if err != nil {
			return err
		}
		if next == nil {
			out = cur // nothing to change: report the key as it is
			return errNoChange
		}
		next.Version = cur.Version + 1
		next.UpdatedAt = t.now
		if err := t.tx.Bucket(bKeys).Put([]byte(id), encodeKey(next)); err != nil {
			return err
		}
		if foldName(cur.Name) != foldName(next.Name) {
			if err := deleteName(t.tx, cur.Name, id); err != nil {
				return err
			}
			if err := putName(t.tx, next.Name, id); err != nil {
				return err
			}
		}
		out = next
		g := s.grants.get(next)
		t.after = append(t.after, func() {
			if i, ok := s.slots.lookup(id); ok {
				s.setKey(i, next, g)
			}
		})
		t.changes = append(t.changes, Change{Kind: KeyUpdated, ID: id})
		return nil
	})
	return out, err
}

// EditKey replaces the editable fields of key id. version must be the
// version the caller loaded; if the key changed since, ErrConflict is
// returned and nothing is written.
func (s *Store) EditKey(actor, id string, version uint64, spec model.KeySpec) (*model.Key, error) {
	spec = normalizeSpec(spec)
	return s.modifyKey(actor, id, func(t *txn, cur *model.Key) (*model.Key, error) {
		if cur.Version != version {
			return nil, fmt.Errorf("key %s: %w (you had version %d, it is now %d)", id, ErrConflict, version, cur.Version)
		}
		// Only what the edit changes is judged: a passed expiry may be
		// kept, and so may a grant the catalog no longer allows (editing a
		// description must not fail over, or drop, a scope).
		s.mu.RLock()
		cat := s.catalog
		s.mu.RUnlock()
		if err := model.ValidateEdit(cur, spec, &cat, t.now); err != nil {
			return nil, err
		}
		if err := checkNameFree(t.tx, spec.Name, id); err != nil {
			return nil, err
		}
		next := cur.Clone()
		next.Name, next.Description, next.Role = spec.Name, spec.Description, spec.Role
		next.Scopes, next.Resources, next.ExpiresAt = spec.Scopes, spec.Resources, spec.ExpiresAt
		if spec.Active {
			next.Status = model.StatusActive
		} else {
			next.Status = model.StatusDisabled
		}
		diff := describeDiff(cur, next)
		if diff == "" {
			return nil, nil // nothing changed: no write, no audit noise
		}
		return next, t.audit(model.ActKeyEdit, id, diff)
	})
}

// SetKeyActive disables or re-enables a key. It takes effect on the next
// verification.
func (s *Store) SetKeyActive(actor, id string, active bool) (*model.Key, error) {
	return s.modifyKey(actor, id, func(t *txn, cur *model.Key) (*model.Key, error) {
		want := model.StatusDisabled
		action := model.ActKeyDisable
		if active {
			want, action = model.StatusActive, model.ActKeyEnable
		}
		if cur.Status == want {
			return nil, nil
		}
		next := cur.Clone()
		next.Status = want
		return next, t.audit(action, id, fmt.Sprintf("status %s -> %s", cur.Status, want))
	})
}

// Grace periods offered when regenerating.
var GraceChoices = []time.Duration{0, time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}

// RegenerateKey issues a new secret for key id. With grace > 0 the
// previous secret keeps verifying until now+grace; otherwise it dies at
// once. Any older previous secret is dropped.
func (s *Store) RegenerateKey(actor, id string, grace time.Duration) (*model.Key, string, error) {
	if grace < 0 || grace > 30*24*time.Hour {
		return nil, "", &model.FieldError{Field: "grace", Msg: "grace must be between 0 and 30 days"}
	}
	var token string
	k, err := s.modifyKey(actor, id, func(t *txn, cur *model.Key) (*model.Key, error) {
		hb := t.tx.Bucket(bHashes)
		oldHashes := s.hashesOf(id)
		tok, h, err := s.newToken(hb)
		if err != nil {
			return nil, err
		}
		keep := map[[32]byte]hashRef{}
		for oh, ref := range oldHashes {
			if grace > 0 && !ref.previous {
				keep[oh] = hashRef{id: id, previous: true}
				if err := hb.Put(oh[:], encodeHashRef(keep[oh])); err != nil {
					return nil, err
				}
				continue
			}
			if err := hb.Delete(oh[:]); err != nil {
				return nil, err
			}
		}
		if err := hb.Put(h[:], encodeHashRef(hashRef{id: id})); err != nil {
			return nil, err
		}
		next := cur.Clone()
		next.Hint = tok.Hint()
		next.GraceUntil = nil
		if grace > 0 {
			until := t.now.Add(grace)
			next.GraceUntil = &until
		}
		token = tok.String()
		t.after = append(t.after, func() {
			i, ok := s.slots.lookup(id)
			if !ok {
				return
			}
			e := s.slots.at(i)
			for oh := range oldHashes {
				s.hashes.remove(oh, i)
			}
			e.cur, e.prev, e.hasPrev = h, [32]byte{}, false
			s.hashes.add(h, i)
			for oh := range keep {
				e.prev, e.hasPrev = oh, true
				s.hashes.add(oh, i)
			}
			if next.GraceUntil != nil {
				s.graces[id] = *next.GraceUntil
			} else {
				delete(s.graces, id)
			}
		})
		detail := fmt.Sprintf("new secret %s…; previous secret revoked now", next.Hint)
		if grace > 0 {
			detail = fmt.Sprintf("new secret %s…; previous secret valid until %s", next.Hint, next.GraceUntil.Format(time.RFC3339))
		}
		return next, t.audit(model.ActKeyRegenerate, id, detail)
	})
	if err != nil {
		return nil, "", err
	}
	return k, token, nil
}

// hashesOf returns the index entries of key id: its current secret and,
// during a grace period, its previous one.
func (s *Store) hashesOf(id string) map[[32]byte]hashRef {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[[32]byte]hashRef{}
	if i, ok := s.slots.lookup(id); ok {
		e := s.slots.at(i)
		out[e.cur] = hashRef{id: id}
		if e.hasPrev {
			out[e.prev] = hashRef{id: id, previous: true}
		}
	}
	return out
}

// DeleteKey removes key id permanently. Its secrets stop verifying at once.
func (s *Store) DeleteKey(actor, id string) error {
	return s.write(actor, func(t *txn) error {
		cur, err := readKey(t.tx, id)
		if err != nil {
			return err
		}
		hashes := s.hashesOf(id)
		hb := t.tx.Bucket(bHashes)
		for h := range hashes {
			if err := hb.Delete(h[:]); err != nil {
				return err
			}
		}
		if err := t.tx.Bucket(bKeys).Delete([]byte(id)); err != nil {
			return err
		}
		if err := t.tx.Bucket(bLastUsed).Delete([]byte(id)); err != nil {
			return err
		}
		if err := deleteName(t.tx, cur.Name, id); err != nil {
			return err
		}
		if err := addKeyCount(t.tx, -1); err != nil {
			return err
		}
		t.after = append(t.after, func() {
			if i, ok := s.slots.lookup(id); ok {
				for h := range hashes {
					s.hashes.remove(h, i)
				}
				s.slots.release(i)
			}
			delete(s.graces, id)
		})
		t.changes = append(t.changes, Change{Kind: KeyDeleted, ID: id})
		return t.audit(model.ActKeyDelete, id, fmt.Sprintf("deleted %q (%s)", cur.Name, cur.Role))
	})
}

// expireGraces drops previous secrets whose grace has ended.
func (s *Store) expireGraces() {
	now := s.now()
	s.mu.RLock()
	var due []string
	for id, until := range s.graces {
		if !now.Before(until) {
			due = append(due, id)
		}
	}
	s.mu.RUnlock()
	for _, id := range due {
		s.wmu.Lock()
		// Re-check under the writer lock: a regeneration since the scan may
		// have started a new grace period whose previous secret must live.
		s.mu.RLock()
		until, ok := s.graces[id]
		s.mu.RUnlock()
		if !ok || now.Before(until) {
			s.wmu.Unlock()
			continue
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			hb := tx.Bucket(bHashes)
			for h, ref := range s.hashesOf(id) {
				if ref.previous {
					if err := hb.Delete(h[:]); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err == nil {
			s.mu.Lock()
			if i, ok := s.slots.lookup(id); ok {
				if e := s.slots.at(i); e.hasPrev {
					s.hashes.remove(e.prev, i)
					e.prev, e.hasPrev = [32]byte{}, false
				}
			}
			delete(s.graces, id)
			s.mu.Unlock()
		}
		s.wmu.Unlock()
	}
}

func normalizeSpec(spec model.KeySpec) model.KeySpec {
	spec.Name = strings.TrimSpace(spec.Name)
	spec.Description = strings.TrimSpace(spec.Description)
	if len(spec.Scopes) == 0 {
		spec.Scopes = nil
	}
	if len(spec.Resources) == 0 {
		spec.Resources = nil
	}
	if spec.ExpiresAt != nil {
		t := spec.ExpiresAt.UTC()
		spec.ExpiresAt = &t
	}
	return spec
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

func fmtExpiry(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func describeNew(k *model.Key) string {
	scopes := "all"
	if k.Role != model.RoleAdmin {
		scopes = strings.Join(k.Scopes, ",")
	}
	res := "all"
	if len(k.Resources) > 0 {
		res = strings.Join(k.Resources, ",")
	}
	return fmt.Sprintf("name %q, role %s, scopes %s, resources %s, expires %s, status %s, secret %s…",
		k.Name, k.Role, scopes, res, fmtExpiry(k.ExpiresAt), k.Status, k.Hint)
}

// describeDiff says what an edit changed, for the audit log.
func describeDiff(a, b *model.Key) string {
	var parts []string
	if a.Name != b.Name {
		parts = append(parts, fmt.Sprintf("name %q -> %q", a.Name, b.Name))
	}
	if a.Description != b.Description {
		parts = append(parts, "description changed")
	}
	if a.Role != b.Role {
		parts = append(parts, fmt.Sprintf("role %s -> %s", a.Role, b.Role))
	}
	if d := listDiff("scopes", a.Scopes, b.Scopes); d != "" {
		parts = append(parts, d)
	}
	if d := listDiff("resources", a.Resources, b.Resources); d != "" {
		parts = append(parts, d)
	}
	if !sameTime(a.ExpiresAt, b.ExpiresAt) {
		parts = append(parts, fmt.Sprintf("expires %s -> %s", fmtExpiry(a.ExpiresAt), fmtExpiry(b.ExpiresAt)))
	}
	if a.Status != b.Status {
		parts = append(parts, fmt.Sprintf("status %s -> %s", a.Status, b.Status))
	}
	return strings.Join(parts, "; ")
}

func listDiff(label string, a, b []string) string {
	var add, del []string
	for _, x := range b {
		if !slices.Contains(a, x) {
			add = append(add, "+"+x)
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			del = append(del, "-"+x)
		}
	}
	if len(add)+len(del) == 0 {
		return ""
	}
	return label + " " + strings.Join(append(add, del...), " ")
}

// IsConflict reports whether err is an optimistic-concurrency conflict.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }
