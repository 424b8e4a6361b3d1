package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/model"
)

// txn is one write: the bbolt work plus the memory updates and change
// events to apply once it has committed.
type txn struct {
	w       *Write // what the commit writes
	now     time.Time
	actor   string      // the operator's name, for the audit log and CreatedBy
	who     model.Actor // the whole actor write authorised
	hashes  *KeyHashes  // set by a modifyKey fn that replaces the secret
	after   []func()
	changes []Change
}

func (t *txn) audit(action, target, detail string) error {
	t.w.Audit = append(t.w.Audit, model.AuditEvent{Time: t.now, Actor: t.actor, Action: action, Target: target, Detail: detail})
	return nil
}

// setMeta writes a metadata record with t.
func (t *txn) setMeta(name MetaName, v []byte) {
	if t.w.Meta == nil {
		t.w.Meta = map[MetaName][]byte{}
	}
	t.w.Meta[name] = v
}

// errNoChange, returned by a write's fn, rolls the transaction back and
// makes write succeed: the request was valid but changed nothing.
var errNoChange = errors.New("no change")

// write runs fn in one bbolt transaction as actor. The actor must be an
// active ADMIN operator: READONLY operators are refused here, not only in
// the UI. Memory is updated only after the commit succeeds.
func (s *Store) write(actor string, fn func(t *txn) error) error {
	rev, err := s.writeLocked(actor, fn)
	if err == nil {
		// On a shared backend memory follows the watch: return once it
		// holds this write (read your writes). Not under wmu: the sync
		// loop applies other writes meanwhile.
		s.waitApplied(rev)
	}
	return err
}

// writeLocked is write's part under the writer lock. It returns the
// revision committed (0 if nothing was).
func (s *Store) writeLocked(actor string, fn func(t *txn) error) (Rev, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	// A node out of touch with etcd refuses at once, rather than after
	// the commit's own timeouts (up to half a minute during a quorum
	// loss): its memory, which authorised the write, may be behind.
	if err := s.Stale(); err != nil {
		return 0, fmt.Errorf("nothing was changed: %w", err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.authorize(actor); err != nil {
		return 0, err
	}
	if s.readOnly {
		return 0, s.readOnlyError()
	}
	// Audit and CreatedBy name the operator; the rest of the actor (its
	// identity and key) only decides the authorisation above.
	who := model.ParseActor(actor)
	t := &txn{now: s.now().UTC(), actor: who.Name, who: who, w: &Write{Seen: s.Applied()}}
	if err := fn(t); err != nil {
		if errors.Is(err, errNoChange) {
			return 0, nil // nothing to commit, no fsync, no events
		}
		return 0, err
	}
	rev, err := s.commit(t.w)
	if err != nil {
		if refused(err) {
			return 0, err
		}
		// The commit itself failed (disk full, I/O error): the backend
		// rolled back, so nothing of this change is stored or in memory.
		return 0, fmt.Errorf("saving to %s failed, nothing was changed: %w", s.where(), err)
	}
	if !s.shared {
		s.apply(t)
	}
	return rev, nil
}

// where names the database in messages: the file, or the etcd cluster.
func (s *Store) where() string {
	if s.shared {
		return "etcd"
	}
	return "database " + s.path
}

// commit hands w to the backend: a bulk write to Import, every other
// one to Commit. It returns the revision to wait for.
func (s *Store) commit(w *Write) (Rev, error) {
	ctx := context.Background()
	if !w.Bulk {
		return s.be.Commit(ctx, w)
	}
	done, err := s.be.Import(ctx, w.Keys, w.Audit, 0)
	if err != nil {
		if s.shared && done > 0 {
			// etcd imports in batches: those before the error stay.
			return 0, fmt.Errorf("%d of %d keys were imported before the error (etcd imports in batches, not atomically; the rest were not): %w", done, len(w.Keys), err)
		}
		return 0, err
	}
	if !s.shared || len(w.Keys) == 0 {
		return 0, nil
	}
	// Import reports no revision: a read after it has one at least as
	// new as its last batch.
	last := w.Keys[len(w.Keys)-1].New
	_, rev, err := s.be.Key(ctx, last.ID)
	if err != nil {
		return 0, nil // written; memory catches up by itself
	}
	return rev, nil
}

// refused reports whether a commit failed on a condition (a key changed
// or gone, a name taken) rather than in the backend.
func refused(err error) bool {
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrNameTaken) || errors.Is(err, ErrNotFound)
}

// apply makes a committed t's memory updates and publishes its changes.
func (s *Store) apply(t *txn) {
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
