package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/keyward/keyward/model"
)

// ErrSelf: an operator may not disable, demote or delete their own
// account, nor remove the SSH key their session logged in with: they could
// not undo it (a disabled or READONLY operator changes nothing). Another
// ADMIN must do it.
var ErrSelf = errors.New("you cannot do that to your own operator account: you could not undo it; another ADMIN must")

// Operators returns every operator, by name.
func (s *Store) Operators() []model.Operator {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]model.Operator, 0, len(s.ops))
	for _, op := range s.ops {
		c := *op
		c.PublicKeys = append([]string(nil), op.PublicKeys...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Operator returns one operator by name.
func (s *Store) Operator(name string) (model.Operator, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	op := s.ops[name]
	if op == nil {
		return model.Operator{}, errNoOperator(name)
	}
	c := *op
	c.PublicKeys = append([]string(nil), op.PublicKeys...)
	return c, nil
}

// OperatorByKey finds the active operator owning an SSH public key (wire
// format, as ssh.PublicKey.Marshal returns). Disabled operators are not
// returned.
func (s *Store) OperatorByKey(blob []byte) (model.Operator, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, op := range s.ops {
		if op.Disabled {
			continue
		}
		for _, line := range op.PublicKeys {
			pk, err := model.ParsePublicKey(line)
			if err == nil && pk.Equal(blob) {
				return *op, true
			}
		}
	}
	return model.Operator{}, false
}

// ownerOfKey names the operator (enabled or not) holding a public key.
func (s *Store) ownerOfKey(blob []byte) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, op := range s.ops {
		for _, line := range op.PublicKeys {
			if pk, err := model.ParsePublicKey(line); err == nil && pk.Equal(blob) {
				return op.Name
			}
		}
	}
	return ""
}

// AddOperator registers an operator. publicKeys are authorized_keys lines;
// each is validated and stored in canonical form.
func (s *Store) AddOperator(actor, name string, role model.OperatorRole, publicKeys []string) (model.Operator, error) {
	if err := model.ValidateOperatorName(name); err != nil {
		return model.Operator{}, err
	}
	if role != model.OperatorAdmin && role != model.OperatorReadonly {
		return model.Operator{}, &model.FieldError{Field: "role", Msg: "operator role must be ADMIN or READONLY"}
	}
	if len(publicKeys) > model.MaxOperatorKeys {
		return model.Operator{}, &model.FieldError{Field: "key", Msg: fmt.Sprintf("%d public keys; an operator may have at most %d", len(publicKeys), model.MaxOperatorKeys)}
	}
	var keys []string
	for _, line := range publicKeys {
		pk, err := model.ParsePublicKey(line)
		if err != nil {
			return model.Operator{}, &model.FieldError{Field: "key", Msg: err.Error()}
		}
		keys = append(keys, pk.String())
	}
	var op model.Operator
	err := s.write(actor, func(t *txn) error {
		s.mu.RLock()
		_, exists := s.ops[name]
		s.mu.RUnlock()
		if exists {
			return &model.FieldError{Field: "name", Msg: fmt.Sprintf("operator %q already exists", name)}
		}
		// Checked under the writer lock and against disabled operators too:
		// one key must never log in as two operators once they are enabled.
		seen := map[string]bool{}
		for _, k := range keys {
			pk, _ := model.ParsePublicKey(k)
			if seen[pk.Fingerprint()] {
				return &model.FieldError{Field: "key", Msg: fmt.Sprintf("public key %s is given twice", pk.Fingerprint())}
			}
			seen[pk.Fingerprint()] = true
			if other := s.ownerOfKey(pk.Blob); other != "" {
				return &model.FieldError{Field: "key", Msg: fmt.Sprintf("that public key already belongs to operator %q", other)}
			}
		}
		id, err := model.NewOperatorID()
		if err != nil {
			return err
		}
		op = model.Operator{ID: id, Name: name, Role: role, PublicKeys: keys, CreatedAt: t.now, CreatedBy: t.actor}
		if err := s.putOperator(t, &op); err != nil {
			return err
		}
		var fps []string
		for _, k := range keys {
			pk, _ := model.ParsePublicKey(k)
			fps = append(fps, pk.Fingerprint())
		}
		return t.audit(model.ActOperatorAdd, name, fmt.Sprintf("role %s, keys %s", role, strings.Join(fps, ",")))
	})
	return op, err
}

func (s *Store) putOperator(t *txn, op *model.Operator) error {
	if _, err := json.Marshal(op); err != nil {
		return err
	}
	c := *op
	t.w.Operators = append(t.w.Operators, OperatorPut{Name: op.Name, New: &c})
	t.after = append(t.after, func() { s.ops[c.Name] = &c })
	t.changes = append(t.changes, Change{Kind: OperatorsChanged, ID: op.Name})
	return nil
}

// activeAdminsExcept counts active ADMIN operators other than name.
func (s *Store) activeAdminsExcept(name string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, op := range s.ops {
		if op.Name != name && !op.Disabled && op.Role == model.OperatorAdmin {
			n++
		}
	}
	return n
}

// indexedOperator returns the named operator as the index holds it (the
// record is replaced, never changed in place), or ErrNotFound.
func (s *Store) indexedOperator(name string) (*model.Operator, error) {
	s.mu.RLock()
	op := s.ops[name]
	s.mu.RUnlock()
	if op == nil {
		return nil, errNoOperator(name)
	}
	return op, nil
}

func errNoOperator(name string) error {
	return fmt.Errorf("operator %q: %w", model.Sanitize(name), ErrNotFound)
}

func (s *Store) modifyOperator(actor, name string, fn func(t *txn, op *model.Operator) (string, string, error)) (model.Operator, error) {
	var out model.Operator
	err := s.write(actor, func(t *txn) error {
		cur, err := s.indexedOperator(name)
		if err != nil {
			return err
		}
		next := *cur
		next.PublicKeys = append([]string(nil), cur.PublicKeys...)
		action, detail, err := fn(t, &next)
		if err != nil {
			return err
		}
		if action == "" {
			out = next
			return errNoChange
		}
		// Whatever the change, one active ADMIN must remain.
		if (next.Disabled || next.Role != model.OperatorAdmin) && s.activeAdminsExcept(name) == 0 {
			return fmt.Errorf("%w: %q is the last one", ErrLastAdmin, name)
		}
		// And no one takes their own power away: they could not undo it.
		if name == t.who.Name {
			switch {
			case next.Disabled && !cur.Disabled:
				return fmt.Errorf("%w (disabling %q would refuse every key it created and lock it out)", ErrSelf, name)
			case cur.Role == model.OperatorAdmin && next.Role != model.OperatorAdmin:
				return fmt.Errorf("%w (a READONLY %q could not make itself ADMIN again)", ErrSelf, name)
			}
		}
		out = next
		if err := s.putOperator(t, &next); err != nil {
			return err
		}
		return t.audit(action, name, detail)
	})
	return out, err
}

// SetOperatorDisabled disables or enables an operator. Keys an operator
// created stop verifying while they are disabled (CREATOR_DISABLED), and
// their SSH sessions end. No one may disable themself (ErrSelf).
func (s *Store) SetOperatorDisabled(actor, name string, disabled bool) (model.Operator, error) {
	return s.modifyOperator(actor, name, func(t *txn, op *model.Operator) (string, string, error) {
		if op.Disabled == disabled {
			return "", "", nil
		}
		op.Disabled = disabled
		if disabled {
			return model.ActOperatorEdit, fmt.Sprintf("disabled; %s", s.consequence(op)), nil
		}
		return model.ActOperatorEdit, "enabled", nil
	})
}

// SetOperatorRole changes an operator's role. Demoting an ADMIN ends
// their SSH sessions; no one may demote themself (ErrSelf).
func (s *Store) SetOperatorRole(actor, name string, role model.OperatorRole) (model.Operator, error) {
	return s.modifyOperator(actor, name, func(t *txn, op *model.Operator) (string, string, error) {
		if role != model.OperatorAdmin && role != model.OperatorReadonly {
			return "", "", &model.FieldError{Field: "role", Msg: "operator role must be ADMIN or READONLY"}
		}
		if op.Role == role {
			return "", "", nil
		}
		d := fmt.Sprintf("role %s -> %s", op.Role, role)
		op.Role = role
		return model.ActOperatorEdit, d, nil
	})
}

// DeleteOperator removes an operator. Keys it created then verify as
// CREATOR_DISABLED, and its SSH sessions end. The last active ADMIN cannot
// be deleted, and no one may delete themself (ErrSelf).
func (s *Store) DeleteOperator(actor, name string) error {
	return s.write(actor, func(t *txn) error {
		cur, err := s.indexedOperator(name)
		if err != nil {
			return err
		}
		if !cur.Disabled && cur.Role == model.OperatorAdmin && s.activeAdminsExcept(name) == 0 {
			return fmt.Errorf("%w: %q is the last one", ErrLastAdmin, name)
		}
		if name == t.who.Name {
			return fmt.Errorf("%w (deleting %q would refuse every key it created and lock it out)", ErrSelf, name)
		}
		t.w.Operators = append(t.w.Operators, OperatorPut{Name: name})
		t.after = append(t.after, func() { delete(s.ops, name) })
		t.changes = append(t.changes, Change{Kind: OperatorsChanged, ID: name})
		return t.audit(model.ActOperatorDelete, name, fmt.Sprintf("deleted (%s); %s", cur.Role, s.consequence(cur)))
	})
}

// KeysCreatedBy counts the keys that verify on the authority of the
// operator account name now (created by it, active and not expired): the
// keys that would stop verifying (CREATOR_DISABLED) if it were disabled
// or deleted. Keys of an earlier, deleted account of the same name do not
// count; they are refused already.
func (s *Store) KeysCreatedBy(name string) int {
	now := s.now().UnixNano()
	s.mu.RLock()
	defer s.mu.RUnlock()
	op := s.ops[name]
	if op == nil {
		return 0
	}
	since := op.CreatedAt.UnixNano()
	n := 0
	s.slots.each(func(i uint32, e *entry) {
		if e.active && (e.expires == model.NeverExpires || e.expires > now) && e.created >= since &&
			s.grantTab[e.grant].creator == name {
			n++
		}
	})
	return n
}

// consequence says what disabling or deleting op does to its keys.
func (s *Store) consequence(op *model.Operator) string {
	return model.CreatorConsequence(s.KeysCreatedBy(op.Name), op.Name)
}

// AddOperatorKey registers one more SSH public key (an authorized_keys
// line) for an operator. A key belongs to one operator at most; an
// operator holds at most model.MaxOperatorKeys.
func (s *Store) AddOperatorKey(actor, name, line string) (model.Operator, model.PublicKey, error) {
	pk, err := model.ParsePublicKey(line)
	if err != nil {
		return model.Operator{}, model.PublicKey{}, &model.FieldError{Field: "key", Msg: err.Error()}
	}
	op, err := s.modifyOperator(actor, name, func(t *txn, op *model.Operator) (string, string, error) {
		if other := s.ownerOfKey(pk.Blob); other != "" {
			return "", "", &model.FieldError{Field: "key", Msg: fmt.Sprintf("that public key (%s) already belongs to operator %q", pk.Fingerprint(), other)}
		}
		if len(op.PublicKeys) >= model.MaxOperatorKeys {
			return "", "", &model.FieldError{Field: "key", Msg: fmt.Sprintf("operator %q already has %d keys, the most allowed", op.Name, len(op.PublicKeys))}
		}
		op.PublicKeys = append(op.PublicKeys, pk.String())
		return model.ActOperatorKeyAdd, fmt.Sprintf("added %s key %s", pk.Type, pk.Fingerprint()), nil
	})
	return op, pk, err
}

// RemoveOperatorKey removes one of an operator's SSH keys, named by its
// fingerprint ("SHA256:…") or by its authorized_keys line. SSH sessions
// that logged in with it end. A session may not remove the key it logged
// in with (ErrSelf).
func (s *Store) RemoveOperatorKey(actor, name, which string) (model.Operator, string, error) {
	fp := strings.TrimSpace(which)
	if !strings.HasPrefix(fp, "SHA256:") {
		pk, err := model.ParsePublicKey(fp)
		if err != nil {
			return model.Operator{}, "", &model.FieldError{Field: "key", Msg: "give the key's fingerprint (SHA256:…) or its public key line: " + err.Error()}
		}
		fp = pk.Fingerprint()
	}
	fp = model.Sanitize(fp)
	if len(fp) > 64 {
		return model.Operator{}, "", &model.FieldError{Field: "key", Msg: "that is not an SSH key fingerprint"}
	}
	op, err := s.modifyOperator(actor, name, func(t *txn, op *model.Operator) (string, string, error) {
		idx := -1
		for i, line := range op.PublicKeys {
			if pk, err := model.ParsePublicKey(line); err == nil && pk.Fingerprint() == fp {
				idx = i
			}
		}
		if idx < 0 {
			return "", "", fmt.Errorf("operator %q has no SSH key %s: %w", op.Name, fp, ErrNotFound)
		}
		if op.Name == t.who.Name && t.who.KeyFingerprint == fp {
			return "", "", fmt.Errorf("%w (this session logged in with key %s; remove it from another session or the CLI)", ErrSelf, fp)
		}
		op.PublicKeys = append(op.PublicKeys[:idx:idx], op.PublicKeys[idx+1:]...)
		return model.ActOperatorKeyDel, fmt.Sprintf("removed key %s; SSH sessions that logged in with it end", fp), nil
	})
	return op, fp, err
}

// RecordLogin notes an operator's login time and audits it. It needs no
// ADMIN right: every operator may log in.
func (s *Store) RecordLogin(name, from string) error {
	rev, err := s.recordLogin(name, from)
	if err == nil {
		s.waitApplied(rev) // on etcd: once the sync loop holds it (not under wmu)
	}
	return err
}

func (s *Store) recordLogin(name, from string) (Rev, error) {
	if err := s.Stale(); err != nil {
		return 0, err // (a login on a cut-off node is not held up by it)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cur, err := s.indexedOperator(name)
	if err != nil {
		return 0, err
	}
	t := &txn{now: s.now().UTC(), actor: name, w: &Write{Seen: s.Applied()}}
	next := *cur
	now := t.now
	next.LastLoginAt = &now
	if err := s.putOperator(t, &next); err != nil {
		return 0, err
	}
	_ = t.audit(model.ActLogin, name, "from "+model.Sanitize(from))
	rev, err := s.be.Commit(context.Background(), t.w)
	if err != nil {
		return 0, err
	}
	if !s.shared { // (on etcd the sync loop applies it)
		s.apply(t)
	}
	return rev, nil
}
