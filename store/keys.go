package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
)

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
func (s *Store) newToken() (model.Token, [32]byte, error) {
	for {
		tok, err := model.GenerateToken(s.prefix)
		if err != nil {
			return model.Token{}, [32]byte{}, err
		}
		h := tok.Hash()
		if !s.hashTaken(&h) {
			return tok, h, nil
		}
	}
}

// hashTaken reports whether a key's secret hashes to h. The in-memory
// index holds every live hash.
func (s *Store) hashTaken(h *[32]byte) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, _, ok := s.hashes.lookup(h, &s.slots)
	return ok
}

// idTaken reports whether a key has id.
func (s *Store) idTaken(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.slots.lookup(id)
	return ok
}

// checkNameFree refuses name if a key other than selfID uses it. The
// backend checks again in the commit, so two writes cannot both take it.
func (s *Store) checkNameFree(name, selfID string) error {
	other, taken, err := s.be.NameOwner(context.Background(), name)
	if err != nil {
		return err
	}
	if taken && other != selfID {
		return nameTaken(name, other)
	}
	return nil
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

// insertKey adds one new key to t and schedules its memory update.
func (s *Store) insertKey(t *txn, spec model.KeySpec) (*model.Key, string, error) {
	nk, err := s.newKey(t, spec, nil)
	if err != nil {
		return nil, "", err
	}
	t.w.Keys = append(t.w.Keys, KeyPut{New: nk.key, Hashes: KeyHashes{Cur: nk.hash}})
	s.scheduleInsert(t, nk)
	return nk.key, nk.token, nil
}

// newKeyRec is a key built in a transaction but not yet written.
type newKeyRec struct {
	key   *model.Key
	token string
	hash  [32]byte
}

// newKey draws an id and a token for spec, checking the name is free (in
// the write transaction: two creates may race) and that id and hash are
// unused. The caller writes the key, its hash and its name. Names within a
// batch are checked by the caller before the transaction.
func (s *Store) newKey(t *txn, spec model.KeySpec, batch *pendingBatch) (newKeyRec, error) {
	// On etcd a bulk write skips the early check: it is a round trip to
	// the cluster per key (a 1M-key seed spent minutes on it before
	// writing anything), and each batch's commit refuses a taken name
	// anyway (ErrNameTaken).
	if batch == nil || !s.shared {
		if err := s.checkNameFree(spec.Name, ""); err != nil {
			return newKeyRec{}, err
		}
	}
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
		if !s.hashTaken(&h) {
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
		if !s.idTaken(id) {
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
		e := s.slots.at(i)
		e.cur = h
		if k.LastUsedAt != nil { // a seeded key: loaded the way Open loads it
			e.lastAt.Store(k.LastUsedAt.UnixNano())
		}
		s.setKey(i, k, g)
		s.hashes.add(h, i)
	})
	t.changes = append(t.changes, Change{Kind: KeyCreated, ID: k.ID})
}

// modifyKey is the read-modify-write of one key: fn returns the new key
// (or nil for no change), and the write is conditioned on the version
// read. t.hashes, if fn sets it, replaces the key's secret hashes.
func (s *Store) modifyKey(actor, id string, fn func(t *txn, cur *model.Key) (*model.Key, error)) (*model.Key, error) {
	var out *model.Key
	read, err := s.readForWrite(id)
	if err != nil {
		return nil, err
	}
	err = s.write(actor, func(t *txn) error {
		cur, rev, err := read()
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
		was := s.keyHashes(id)
		now := was
		if t.hashes != nil {
			now = *t.hashes
		}
		t.w.Keys = append(t.w.Keys, KeyPut{Old: cur, New: next, Hashes: now, Was: was, OldRev: rev})
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

// readForWrite returns how a read-modify-write of key id reads the key,
// to be called under the writer lock.
//
// On the bbolt file, the backend and memory agree under wmu: read then.
// On a shared backend (etcd) the key is read first, and memory brought
// up to the revision read before the writer lock is taken: the write
// takes the key's secret hashes from memory, so memory must hold at least
// the version read (the commit's condition then guarantees that nothing
// changed after it). Waiting under wmu would stall behind the sync loop.
func (s *Store) readForWrite(id string) (func() (*model.Key, Rev, error), error) {
	if !s.shared {
		return func() (*model.Key, Rev, error) { return s.be.Key(context.Background(), id) }, nil
	}
	k, rev, err := s.be.Key(context.Background(), id)
	if err != nil {
		return nil, err
	}
	s.waitApplied(rev)
	return func() (*model.Key, Rev, error) { return k, rev, nil }, nil
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
		if err := s.checkNameFree(spec.Name, id); err != nil {
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
		diff := model.AuditDiff(cur, next)
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

// RegenerateKey issues a new secret for key id. With grace > 0 the
// previous secret keeps verifying until now+grace; otherwise it dies at
// once. Any older previous secret is dropped.
func (s *Store) RegenerateKey(actor, id string, grace time.Duration) (*model.Key, string, error) {
	if err := model.ValidateGrace(grace); err != nil {
		return nil, "", err
	}
	var token string
	k, err := s.modifyKey(actor, id, func(t *txn, cur *model.Key) (*model.Key, error) {
		oldHashes := s.hashesOf(id)
		tok, h, err := s.newToken()
		if err != nil {
			return nil, err
		}
		// The current secret becomes the previous one for the grace;
		// an older previous one is dropped.
		keep := map[[32]byte]hashRef{}
		hashes := KeyHashes{Cur: h}
		for oh, ref := range oldHashes {
			if grace > 0 && !ref.previous {
				keep[oh] = hashRef{id: id, previous: true}
				hashes.Prev, hashes.HasPrev = oh, true
			}
		}
		t.hashes = &hashes
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
	read, err := s.readForWrite(id)
	if err != nil {
		return err
	}
	return s.write(actor, func(t *txn) error {
		cur, rev, err := read()
		if err != nil {
			return err
		}
		hashes := s.hashesOf(id)
		t.w.Keys = append(t.w.Keys, KeyPut{Old: cur, Was: s.keyHashes(id), OldRev: rev})
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

// keyHashes returns key id's secret hashes as memory holds them.
func (s *Store) keyHashes(id string) KeyHashes {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var h KeyHashes
	if i, ok := s.slots.lookup(id); ok {
		e := s.slots.at(i)
		h.Cur, h.Prev, h.HasPrev = e.cur, e.prev, e.hasPrev
	}
	return h
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
		w := &Write{}
		for h, ref := range s.hashesOf(id) {
			if ref.previous {
				w.Expired = append(w.Expired, ExpiredHash{ID: id, Hash: h})
			}
		}
		// A shared backend keeps the grace's end in the key record: each
		// node drops the previous secret on its own clock, nothing is
		// written.
		var err error
		if !s.shared {
			_, err = s.be.Commit(context.Background(), w)
		}
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
		k.Name, k.Role, scopes, res, model.FormatTime(k.ExpiresAt, "never"), k.Status, k.Hint)
}
