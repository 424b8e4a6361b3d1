package store_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// sessionActor binds an actor to name's current account and, when line is
// given, to that key, as an SSH session does.
func sessionActor(t *testing.T, s *store.Store, name, line string) string {
	t.Helper()
	op, err := s.Operator(name)
	if err != nil {
		t.Fatal(err)
	}
	if op.ID == "" {
		t.Fatalf("operator %s has no id", name)
	}
	a := model.Actor{Name: name, ID: op.ID}
	if line != "" {
		pk, err := model.ParsePublicKey(line)
		if err != nil {
			t.Fatal(err)
		}
		a.KeyFingerprint = pk.Fingerprint()
	}
	return a.String()
}

// TestActorIsTheAccountNotTheName (issue 11.3): alice's session is bound to
// her account. After alice is deleted and a new alice added, the old
// session's writes are refused; the new one's are not. The key the old
// session would have made is never created.
func TestActorIsTheAccountNotTheName(t *testing.T) {
	e := newEnv(t)
	line, _ := newSSHKey(t)
	if _, err := e.s.AddOperator("admin", "alice", model.OperatorAdmin, []string{line}); err != nil {
		t.Fatal(err)
	}
	old := sessionActor(t, e.s, "alice", line)
	if _, _, err := e.s.CreateKey(old, spec("by-old-alice")); err != nil {
		t.Fatalf("the session's own account may write: %v", err)
	}
	if err := e.s.DeleteOperator("admin", "alice"); err != nil {
		t.Fatal(err)
	}
	line2, _ := newSSHKey(t)
	if _, err := e.s.AddOperator("admin", "alice", model.OperatorAdmin, []string{line2}); err != nil {
		t.Fatal(err)
	}
	e.unchanged("old session after delete and re-add", func() {
		_, _, err := e.s.CreateKey(old, model.KeySpec{Name: "sneaky", Role: model.RoleAdmin, Active: true})
		isErr(t, err, store.ErrForbidden)
		if !strings.Contains(err.Error(), "deleted") {
			t.Fatalf("error %q does not say the account was deleted", err)
		}
		_, _, err = e.s.RevealSecret(old)
		isErr(t, err, store.ErrForbidden)
	})
	if _, err := e.s.SessionOperator(old); err == nil {
		t.Fatal("SessionOperator accepted the old session")
	}
	// The new account's own session, and the CLI by name, may write.
	if _, _, err := e.s.CreateKey(sessionActor(t, e.s, "alice", line2), spec("by-new-alice")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.s.CreateKey("alice", spec("by-name")); err != nil {
		t.Fatal(err)
	}
	// The audit names the operator, never the identity string.
	for _, ev := range e.audit() {
		if strings.Contains(ev.Actor, "#") {
			t.Fatalf("audit actor %q holds the session identity", ev.Actor)
		}
	}
}

// TestSessionLosesPower: disable, demote and remove-key each take a bound
// session's write power at once; re-enabling gives it back, a removed
// key does not come back by itself.
func TestSessionLosesPower(t *testing.T) {
	e := newEnv(t)
	line, _ := newSSHKey(t)
	spare, _ := newSSHKey(t)
	if _, err := e.s.AddOperator("admin", "alice", model.OperatorAdmin, []string{line, spare}); err != nil {
		t.Fatal(err)
	}
	sess := sessionActor(t, e.s, "alice", line)
	try := func() error { return e.s.ImportCatalog(sess, e.s.Catalog()) }
	if err := try(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SetOperatorDisabled("admin", "alice", true); err != nil {
		t.Fatal(err)
	}
	isErr(t, try(), store.ErrForbidden)
	if _, err := e.s.SetOperatorDisabled("admin", "alice", false); err != nil {
		t.Fatal(err)
	}
	if err := try(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SetOperatorRole("admin", "alice", model.OperatorReadonly); err != nil {
		t.Fatal(err)
	}
	isErr(t, try(), store.ErrForbidden)
	if _, err := e.s.SessionOperator(sess); err != nil {
		t.Fatalf("a READONLY session may still read: %v", err)
	}
	if _, err := e.s.SetOperatorRole("admin", "alice", model.OperatorAdmin); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.s.RemoveOperatorKey("admin", "alice", line); err != nil {
		t.Fatal(err)
	}
	isErr(t, try(), store.ErrForbidden)
	if _, err := e.s.SessionOperator(sess); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("SessionOperator after the key was removed: %v", err)
	}
	// A session on the other key is untouched.
	if err := e.s.ImportCatalog(sessionActor(t, e.s, "alice", spare), e.s.Catalog()); err != nil {
		t.Fatal(err)
	}
}

// TestNoSelfLockout (issue 12.4): an operator may not disable, demote or
// delete its own account, nor remove the key its session logged in with;
// another ADMIN may. Nothing is written by a refusal.
func TestNoSelfLockout(t *testing.T) {
	e := newEnv(t)
	line, _ := newSSHKey(t)
	if _, err := e.s.AddOperator("admin", "alice", model.OperatorAdmin, []string{line}); err != nil {
		t.Fatal(err)
	}
	sess := sessionActor(t, e.s, "alice", line)
	e.unchanged("self changes", func() {
		for _, actor := range []string{"alice", sess} {
			_, err := e.s.SetOperatorDisabled(actor, "alice", true)
			isErr(t, err, store.ErrSelf)
			_, err = e.s.SetOperatorRole(actor, "alice", model.OperatorReadonly)
			isErr(t, err, store.ErrSelf)
			isErr(t, e.s.DeleteOperator(actor, "alice"), store.ErrSelf)
		}
		_, _, err := e.s.RemoveOperatorKey(sess, "alice", line)
		isErr(t, err, store.ErrSelf)
	})
	// alice may still add a key to herself, and another ADMIN may do the rest.
	other, _ := newSSHKey(t)
	if _, _, err := e.s.AddOperatorKey(sess, "alice", other); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SetOperatorDisabled("admin", "alice", true); err != nil {
		t.Fatal(err)
	}
}

// TestOperatorKeysAddRemove (issue 12.7): keys are added and removed one by one,
// unique across operators, validated, bounded and audited; removing by
// fingerprint or line both work.
func TestOperatorKeysAddRemove(t *testing.T) {
	e := newEnv(t)
	a1, _ := newSSHKey(t)
	a2, _ := newSSHKey(t)
	if _, err := e.s.AddOperator("admin", "alice", model.OperatorReadonly, []string{a1}); err != nil {
		t.Fatal(err)
	}
	// The bootstrap ADMIN gets a key.
	op, pk, err := e.s.AddOperatorKey("admin", "admin", a2+" laptop")
	if err != nil || len(op.PublicKeys) != 1 || pk.Comment != "laptop" {
		t.Fatalf("AddOperatorKey: %+v %+v %v", op, pk, err)
	}
	if got, ok := e.s.OperatorByKey(pk.Blob); !ok || got.Name != "admin" {
		t.Fatalf("OperatorByKey after add: %+v %v", got, ok)
	}
	e.unchanged("refused key additions", func() {
		var fe *model.FieldError
		for _, bad := range []string{a1, a2, "ssh-ed25519 AAAA", "not a key", strings.Repeat("A", model.MaxPublicKeyLine+1), "ssh-ed25519 \x1b]52;c;AAAA"} {
			if _, _, err := e.s.AddOperatorKey("admin", "admin", bad); !asField(err, &fe) {
				t.Fatalf("AddOperatorKey(%.40q) = %v, want a field error", bad, err)
			}
		}
		if _, _, err := e.s.AddOperatorKey("alice", "alice", a2); err == nil {
			t.Fatal("a READONLY operator added a key")
		}
		_, _, err := e.s.RemoveOperatorKey("admin", "alice", "SHA256:nope")
		isErr(t, err, store.ErrNotFound)
		_, _, err = e.s.AddOperatorKey("admin", "nobody", a2)
		isErr(t, err, store.ErrNotFound)
	})
	// The bound on keys per operator.
	for i := 1; i < model.MaxOperatorKeys; i++ {
		k, _ := newSSHKey(t)
		if _, _, err := e.s.AddOperatorKey("admin", "alice", k); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	k, _ := newSSHKey(t)
	if _, _, err := e.s.AddOperatorKey("admin", "alice", k); err == nil {
		t.Fatal("more than MaxOperatorKeys keys were accepted")
	}
	// Remove by fingerprint and by line; the key may then go to another.
	p1, _ := model.ParsePublicKey(a1)
	if _, fp, err := e.s.RemoveOperatorKey("admin", "alice", p1.Fingerprint()); err != nil || fp != p1.Fingerprint() {
		t.Fatalf("remove by fingerprint: %s %v", fp, err)
	}
	if _, _, err := e.s.RemoveOperatorKey("admin", "admin", a2); err != nil {
		t.Fatalf("remove by line: %v", err)
	}
	if _, ok := e.s.OperatorByKey(pk.Blob); ok {
		t.Fatal("a removed key still logs in")
	}
	if _, _, err := e.s.AddOperatorKey("admin", "admin", a1); err != nil {
		t.Fatalf("a removed key could not be reused: %v", err)
	}
	e.reopen()
	if op, _ := e.s.Operator("admin"); len(op.PublicKeys) != 1 || !strings.HasPrefix(op.PublicKeys[0], "ssh-ed25519 ") {
		t.Fatalf("after reopen: %+v", op.PublicKeys)
	}
	var adds, dels int
	for _, ev := range e.audit() {
		switch ev.Action {
		case model.ActOperatorKeyAdd:
			adds++
			if !strings.Contains(ev.Detail, "SHA256:") {
				t.Fatalf("key.add audit lacks the fingerprint: %+v", ev)
			}
		case model.ActOperatorKeyDel:
			dels++
		}
	}
	if adds != model.MaxOperatorKeys+1 || dels != 2 {
		t.Fatalf("audit: %d key additions, %d removals; want %d and 2", adds, dels, model.MaxOperatorKeys+1)
	}
}

func asField(err error, fe **model.FieldError) bool {
	if err == nil {
		return false
	}
	var f *model.FieldError
	ok := errors.As(err, &f)
	*fe = f
	return ok
}

// TestDisableNamesConsequence: disabling or deleting an operator records
// how many of its keys stop verifying.
func TestDisableNamesConsequence(t *testing.T) {
	e := newEnv(t)
	if _, err := e.s.AddOperator("admin", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b1", "b2", "b3"} {
		if _, _, err := e.s.CreateKey("bob", spec(n)); err != nil {
			t.Fatal(err)
		}
	}
	off := spec("b-off")
	off.Active = false
	if _, _, err := e.s.CreateKey("bob", off); err != nil {
		t.Fatal(err)
	}
	if n := e.s.KeysCreatedBy("bob"); n != 3 {
		t.Fatalf("KeysCreatedBy(bob) = %d, want 3 (the inactive key does not verify anyway)", n)
	}
	if _, err := e.s.SetOperatorDisabled("admin", "bob", true); err != nil {
		t.Fatal(err)
	}
	evs := e.audit()
	if d := evs[0].Detail; !strings.Contains(d, "3 keys created by bob stop verifying (CREATOR_DISABLED)") {
		t.Fatalf("disable audit detail %q", d)
	}
}

// TestLegacyOperatorGetsStableID: an operator record written before
// operators had ids gets one derived at open, the same at every open,
// and stored with the record's next write.
//
// bbolt only: legacy records exist only in files an older keyward wrote.
func TestLegacyOperatorGetsStableID(t *testing.T) {
	e := newBoltEnv(t)
	if _, err := e.s.AddOperator("admin", "old", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	db, err := bolt.Open(e.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("operators"))
		var rec map[string]any
		if err := json.Unmarshal(b.Get([]byte("old")), &rec); err != nil {
			return err
		}
		delete(rec, "id")
		out, _ := json.Marshal(rec)
		return b.Put([]byte("old"), out)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.open()
	first, _ := e.s.Operator("old")
	e.reopen()
	again, _ := e.s.Operator("old")
	if first.ID == "" || first.ID != again.ID {
		t.Fatalf("legacy ids %q then %q: want one stable id", first.ID, again.ID)
	}
	bound := model.Actor{Name: "old", ID: first.ID}.String()
	if _, err := e.s.SetOperatorRole("admin", "old", model.OperatorAdmin); err != nil {
		t.Fatal(err)
	}
	if err := e.s.ImportCatalog(bound, e.s.Catalog()); err != nil {
		t.Fatalf("a session bound to the legacy id: %v", err)
	}
}
