package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// TestBoltCommitConditions: the bbolt backend checks a Write's conditions
// in its own transaction, as an etcd Txn's If would, and writes nothing
// when one fails.
func TestBoltCommitConditions(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "k.db"), Options{Bootstrap: "alice", Warn: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	a, _, err := st.CreateKey("alice", model.KeySpec{Name: "a", Role: model.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := st.CreateKey("alice", model.KeySpec{Name: "b", Role: model.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	ha := st.keyHashes(a.ID)
	stale := a.Clone()
	stale.Version = a.Version + 5
	next := a.Clone()
	next.Version++
	renamed := a.Clone()
	renamed.Version++
	renamed.Name = "B " // folds like b's name
	dup := b.Clone()
	rev0, err := st.be.Keys(ctx, func(*model.Key) {})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		w    Write
		want error
	}{
		{"stale version", Write{Keys: []KeyPut{{Old: stale, New: next, Hashes: ha, Was: ha}}}, ErrConflict},
		{"create over an existing id", Write{Keys: []KeyPut{{New: dup, Hashes: KeyHashes{Cur: [32]byte{1}}}}}, ErrConflict},
		{"rename onto a taken name", Write{Keys: []KeyPut{{Old: a, New: renamed, Hashes: ha, Was: ha}}}, ErrNameTaken},
		{"delete a missing key", Write{Keys: []KeyPut{{Old: &model.Key{ID: "key_missing", Name: "zz"}}}}, ErrNotFound},
	}
	for _, c := range cases {
		c.w.Audit = []model.AuditEvent{{Time: time.Now(), Actor: "alice", Action: "test", Detail: c.name}}
		if _, err := st.be.Commit(ctx, &c.w); !errors.Is(err, c.want) {
			t.Fatalf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// A key changed after the revision a write was decided at: refused.
	if _, err := st.SetKeyActive("alice", b.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.be.Commit(ctx, &Write{KeysAt: rev0, Meta: map[MetaName][]byte{MetaCatalog: []byte("{}")}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("KeysAt before a key change: %v, want ErrConflict", err)
	}
	evs, err := st.Audit(AuditFilter{Query: "test"})
	if err != nil || len(evs) != 0 {
		t.Fatalf("refused commits left audit events: %v %v", evs, err)
	}
	got, _, err := st.be.Key(ctx, a.ID)
	if err != nil || got.Name != "a" || got.Version != a.Version {
		t.Fatalf("refused commits changed key a: %+v %v", got, err)
	}
}

// TestBoltWatch: the bbolt backend's change stream reports each commit in
// revision order, and a consumer that falls behind gets Relist.
func TestBoltWatch(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "k.db"), Options{Bootstrap: "alice", Warn: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := st.be.Watch(ctx, 0)
	k, _, err := st.CreateKey("alice", model.KeySpec{Name: "w", Role: model.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-ch
	if len(ev.Keys) != 1 || ev.Keys[0].ID != k.ID || ev.Keys[0].Key == nil || ev.Rev == 0 {
		t.Fatalf("create event: %+v", ev)
	}
	last := ev.Rev
	for i := range 80 { // more than the stream buffers
		if _, err := st.SetKeyActive("alice", k.ID, i%2 == 1); err != nil {
			t.Fatal(err)
		}
	}
	relist := false
	for ev := range ch {
		if ev.Rev <= last && !ev.Relist {
			t.Fatalf("revision %d after %d", ev.Rev, last)
		}
		last = ev.Rev
		relist = relist || ev.Relist
	}
	if !relist {
		t.Fatal("a consumer 80 commits behind got no Relist")
	}
}
