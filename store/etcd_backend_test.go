package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keyward/keyward/internal/etcdtest"
	"github.com/keyward/keyward/model"
)

// Backend-level tests of etcdBackend against real etcd processes.

var testT0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// quietOptions are bbolt options for tests in t.TempDir() (mode 0755).
func quietOptions() Options {
	o := Options{NoSync: true, Warn: func(string) {}}
	o.fill()
	return o
}

// newEtcdBackend opens a backend on a fresh prefix of the cluster.
func newEtcdBackend(t testing.TB, endpoints []string, prefix string) *etcdBackend {
	t.Helper()
	opts := Options{}
	opts.fill()
	b, err := openEtcdBackend(EtcdConfig{Endpoints: endpoints, Prefix: prefix}, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func testHashes(id string, prev bool) KeyHashes {
	h := KeyHashes{Cur: sha256.Sum256([]byte("cur " + id))}
	if prev {
		h.Prev, h.HasPrev = sha256.Sum256([]byte("prev "+id)), true
	}
	return h
}

func etcdTestKey(id, name string) *model.Key {
	return &model.Key{ID: id, Name: name, Role: "reader", Scopes: []string{"read"}, Status: model.StatusActive,
		CreatedAt: testT0, CreatedBy: "admin", UpdatedAt: testT0, Hint: "kw_…" + id[len(id)-2:], Version: 1}
}

func testAdmin(name string) *model.Operator {
	return &model.Operator{ID: "op-" + name, Name: name, Role: model.OperatorAdmin, CreatedAt: testT0, CreatedBy: "bootstrap"}
}

func etcdEv(action, target, detail string) model.AuditEvent {
	return model.AuditEvent{Time: testT0, Actor: "admin", Action: action, Target: target, Detail: detail}
}

// initStore bootstraps be as the engine does.
func initStore(t testing.TB, be Backend) Rev {
	t.Helper()
	rev, err := be.Commit(context.Background(), &Write{InitAt: testT0,
		Meta:      map[MetaName][]byte{MetaCatalog: []byte(`{"roles":[]}`)},
		Operators: []OperatorPut{{Name: "admin", New: testAdmin("admin")}},
		Audit:     []model.AuditEvent{etcdEv(model.ActOperatorAdd, "admin", "first ADMIN")}})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func etcdCreate(t testing.TB, be Backend, k *model.Key) Rev {
	t.Helper()
	rev, err := be.Commit(context.Background(), &Write{Keys: []KeyPut{{New: k, Hashes: testHashes(k.ID, false)}},
		Audit: []model.AuditEvent{etcdEv(model.ActKeyCreate, k.ID, k.Name)}})
	if err != nil {
		t.Fatalf("create %s: %v", k.ID, err)
	}
	return rev
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got %v, want %v", what, err, target)
	}
}

func TestEtcdCommitConditions(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	b := newEtcdBackend(t, c.Endpoints(), "/kw-cond/")
	if !b.fresh {
		t.Fatal("an empty prefix is not fresh")
	}
	initStore(t, b)
	_, err := b.Commit(ctx, &Write{InitAt: testT0, Audit: []model.AuditEvent{etcdEv("x", "", "")}})
	wantErr(t, "a second bootstrap", err, ErrConflict)
	b2 := newEtcdBackend(t, c.Endpoints(), "/kw-cond/")
	if b2.fresh {
		t.Fatal("a bootstrapped prefix is fresh")
	}

	etcdCreate(t, b, etcdTestKey("k01", "Alpha"))
	_, err = b.Commit(ctx, &Write{Keys: []KeyPut{{New: etcdTestKey("k02", " alpha"), Hashes: testHashes("k02", false)}}, Audit: []model.AuditEvent{etcdEv("c", "k02", "")}})
	wantErr(t, "a name taken (folded)", err, ErrNameTaken)
	_, err = b.Commit(ctx, &Write{Keys: []KeyPut{{New: etcdTestKey("k01", "Beta"), Hashes: testHashes("k01", false)}}, Audit: []model.AuditEvent{etcdEv("c", "k01", "")}})
	wantErr(t, "an id taken", err, ErrConflict)

	old, rev, err := b.Key(ctx, "k01")
	if err != nil || old.Name != "Alpha" || rev == 0 {
		t.Fatalf("Key: %v %v %d", old, err, rev)
	}
	edit := *old
	edit.Version, edit.Description = 2, "edited"
	if _, err := b.Commit(ctx, &Write{Keys: []KeyPut{{Old: old, New: &edit, OldRev: rev, Hashes: testHashes("k01", false), Was: testHashes("k01", false)}}, Audit: []model.AuditEvent{etcdEv("e", "k01", "")}}); err != nil {
		t.Fatal(err)
	}
	stale := *old
	stale.Version, stale.Description = 2, "stale"
	_, err = b2.Commit(ctx, &Write{Keys: []KeyPut{{Old: old, New: &stale, OldRev: rev, Hashes: testHashes("k01", false)}}, Audit: []model.AuditEvent{etcdEv("e", "k01", "")}})
	wantErr(t, "a stale edit", err, ErrConflict)
	if want := "you had version 1, it is now 2"; err == nil || !contains(err.Error(), want) {
		t.Fatalf("stale edit message %q lacks %q", err, want)
	}
	// Without a read revision, the stored record must be Old's.
	_, err = b2.Commit(ctx, &Write{Keys: []KeyPut{{Old: old, New: &stale, Hashes: testHashes("k01", false), Was: testHashes("k01", false)}}, Audit: []model.AuditEvent{etcdEv("e", "k01", "")}})
	wantErr(t, "a stale edit by value", err, ErrConflict)

	// Rename onto a taken name; then a real rename frees the old one.
	etcdCreate(t, b, etcdTestKey("k03", "Gamma"))
	cur, rev, _ := b.Key(ctx, "k01")
	ren := *cur
	ren.Version, ren.Name = 3, "GAMMA"
	_, err = b.Commit(ctx, &Write{Keys: []KeyPut{{Old: cur, New: &ren, OldRev: rev, Hashes: testHashes("k01", false)}}, Audit: []model.AuditEvent{etcdEv("e", "k01", "")}})
	wantErr(t, "a rename onto a taken name", err, ErrNameTaken)
	ren.Name = "Delta"
	if _, err := b.Commit(ctx, &Write{Keys: []KeyPut{{Old: cur, New: &ren, OldRev: rev, Hashes: testHashes("k01", false)}}, Audit: []model.AuditEvent{etcdEv("e", "k01", "")}}); err != nil {
		t.Fatal(err)
	}
	if id, ok, _ := b.NameOwner(ctx, "alpha"); ok {
		t.Fatalf("old name still owned by %s", id)
	}
	if id, ok, _ := b.NameOwner(ctx, " DELTA"); !ok || id != "k01" {
		t.Fatalf("new name: %q %v", id, ok)
	}

	// Delete, then an edit of the deleted key is ErrNotFound.
	cur, rev, _ = b.Key(ctx, "k03")
	if _, err := b.Commit(ctx, &Write{Keys: []KeyPut{{Old: cur, OldRev: rev, Was: testHashes("k03", false)}}, Audit: []model.AuditEvent{etcdEv("d", "k03", "")}}); err != nil {
		t.Fatal(err)
	}
	gone := *cur
	gone.Version++
	_, err = b.Commit(ctx, &Write{Keys: []KeyPut{{Old: cur, New: &gone, OldRev: rev}}, Audit: []model.AuditEvent{etcdEv("e", "k03", "")}})
	wantErr(t, "an edit of a deleted key", err, ErrNotFound)
	if _, _, err := b.Key(ctx, "k03"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key read: %v", err)
	}
	if _, ok, _ := b.NameOwner(ctx, "gamma"); ok {
		t.Fatal("a deleted key's name stays taken")
	}

	// Seen: a write decided before the operators changed is refused.
	seen := etcdCreate(t, b, etcdTestKey("k04", "Eps"))
	if _, err := b2.Commit(ctx, &Write{Operators: []OperatorPut{{Name: "bob", New: testAdmin("bob")}}, Seen: seen, Audit: []model.AuditEvent{etcdEv("o", "bob", "")}}); err != nil {
		t.Fatal(err)
	}
	_, err = b.Commit(ctx, &Write{Seen: seen, Meta: map[MetaName][]byte{MetaCatalog: []byte("{}")}, Audit: []model.AuditEvent{etcdEv("cat", "catalog", "")}})
	wantErr(t, "a write authorised before the operators changed", err, ErrConflict)
	_, err = b.Commit(ctx, &Write{Seen: seen, Operators: []OperatorPut{{Name: "carol", New: testAdmin("carol")}}, Audit: []model.AuditEvent{etcdEv("o", "carol", "")}})
	wantErr(t, "an operator write authorised before the operators changed", err, ErrConflict)

	// KeysAt: a key changed after the revision the write checked at.
	at := etcdCreate(t, b, etcdTestKey("k05", "Zeta"))
	etcdCreate(t, b2, etcdTestKey("k06", "Eta"))
	_, err = b.Commit(ctx, &Write{KeysAt: at, Meta: map[MetaName][]byte{MetaCatalog: []byte("{}")}, Audit: []model.AuditEvent{etcdEv("cat", "catalog", "")}})
	wantErr(t, "a write checked before a key changed", err, ErrConflict)
	now, _ := b.Keys(ctx, func(*model.Key) {})
	if _, err := b.Commit(ctx, &Write{KeysAt: now, Meta: map[MetaName][]byte{MetaCatalog: []byte("{}")}, Audit: []model.AuditEvent{etcdEv("cat", "catalog", "")}}); err != nil {
		t.Fatal(err)
	}
	ops, _ := b.Meta(ctx, MetaCatalog)
	if string(ops) != "{}" {
		t.Fatalf("catalog %q", ops)
	}
	// Beyond etcd's transaction limits: refused before it is sent.
	var many []KeyPut
	for i := 0; i < 50; i++ {
		k := etcdTestKey(fmt.Sprintf("big%02d", i), fmt.Sprintf("big-%d", i))
		many = append(many, KeyPut{New: k, Hashes: testHashes(k.ID, false)})
	}
	_, err = b.Commit(ctx, &Write{Keys: many, Audit: []model.AuditEvent{etcdEv("c", "", "")}})
	if err == nil || !contains(err.Error(), "more than a transaction holds") {
		t.Fatalf("an oversized write: %v", err)
	}
	if _, ok, _ := b.NameOwner(ctx, "big-0"); ok {
		t.Fatal("part of an oversized write was stored")
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestEtcdConcurrentCreates(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var bs []*etcdBackend
	for i := 0; i < 3; i++ {
		bs = append(bs, newEtcdBackend(t, c.Endpoints()[i:i+1], "/kw-race/"))
	}
	initStore(t, bs[0])
	var ok, taken atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			k := etcdTestKey(fmt.Sprintf("id%03d", i), fmt.Sprintf("name-%d", i%10))
			_, err := bs[i%3].Commit(context.Background(), &Write{Keys: []KeyPut{{New: k, Hashes: testHashes(k.ID, false)}}, Audit: []model.AuditEvent{etcdEv("c", k.ID, "")}})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrNameTaken):
				taken.Add(1)
			default:
				t.Errorf("create %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if ok.Load() != 10 || taken.Load() != 90 {
		t.Fatalf("%d created, %d refused; want 10 and 90", ok.Load(), taken.Load())
	}
	n := 0
	if _, err := bs[1].Keys(context.Background(), func(*model.Key) { n++ }); err != nil || n != 10 {
		t.Fatalf("%d keys stored (%v)", n, err)
	}
	if err := bs[2].Check(); err != nil {
		t.Fatal(err)
	}
}

// nextEvent reads the next non-progress event.
func nextEvent(t *testing.T, ch <-chan WatchEvent, progress *int) WatchEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("watch closed")
			}
			if e.Progress {
				*progress++
				continue
			}
			return e
		case <-timeout:
			t.Fatal("no watch event")
		}
	}
}

func TestEtcdWatch(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := newEtcdBackend(t, c.Endpoints(), "/kw-watch/")
	other := newEtcdBackend(t, c.Endpoints(), "/kw-watch/")
	r0 := initStore(t, b)
	ch := b.Watch(ctx, r0) // the commits after r0
	progress := 0
	r1 := etcdCreate(t, other, etcdTestKey("k01", "One"))
	e := nextEvent(t, ch, &progress)
	if e.Rev != r1 || len(e.Keys) != 1 || e.Keys[0].Key == nil || e.Keys[0].Key.Name != "One" || e.Keys[0].Hashes != testHashes("k01", false) || e.Audit != 1 {
		t.Fatalf("create event %+v", e)
	}
	k, rev, _ := other.Key(ctx, "k01")
	ed := *k
	ed.Version, ed.Status = 2, model.StatusDisabled
	grace := testT0.Add(time.Hour)
	ed.GraceUntil = &grace
	r2, err := other.Commit(ctx, &Write{Keys: []KeyPut{{Old: k, New: &ed, OldRev: rev, Hashes: testHashes("k01", true)}}, Audit: []model.AuditEvent{etcdEv("d", "k01", "")}})
	if err != nil {
		t.Fatal(err)
	}
	e = nextEvent(t, ch, &progress)
	if e.Rev != r2 || e.Keys[0].Key.Status != model.StatusDisabled || !e.Keys[0].Hashes.HasPrev || e.Keys[0].Key.GraceUntil == nil {
		t.Fatalf("disable event %+v", e)
	}
	r3, _ := other.Commit(ctx, &Write{Operators: []OperatorPut{{Name: "bob", New: testAdmin("bob")}}, Meta: map[MetaName][]byte{MetaSecret: []byte("sealed")}, Audit: []model.AuditEvent{etcdEv("o", "bob", ""), etcdEv("s", "secret", "")}})
	e = nextEvent(t, ch, &progress)
	if e.Rev != r3 || !e.OperatorsSet || len(e.Operators) != 2 || string(e.Meta[MetaSecret]) != "sealed" || e.Audit != 2 {
		t.Fatalf("operators event %+v", e)
	}
	if err := other.MergeLastUsed(ctx, []LastUsedRec{{ID: "k01", At: testT0.UnixNano(), From: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	e = nextEvent(t, ch, &progress)
	if len(e.LastUsed) != 1 || e.LastUsed[0] != (LastUsedRec{ID: "k01", At: testT0.UnixNano(), From: "10.0.0.1"}) {
		t.Fatalf("last-used event %+v", e)
	}
	k, rev, _ = other.Key(ctx, "k01")
	r5, _ := other.Commit(ctx, &Write{Keys: []KeyPut{{Old: k, OldRev: rev}}, Audit: []model.AuditEvent{etcdEv("x", "k01", "")}})
	e = nextEvent(t, ch, &progress)
	if e.Rev != r5 || len(e.Keys) != 1 || e.Keys[0].Key != nil || e.Keys[0].ID != "k01" {
		t.Fatalf("delete event %+v", e)
	}
	// Progress marks arrive about every second while nothing changes.
	deadline := time.After(5 * time.Second)
	for progress < 3 {
		select {
		case e := <-ch:
			if !e.Progress {
				t.Fatalf("unexpected event %+v", e)
			}
			progress++
			if e.Rev < r5 {
				t.Fatalf("progress at %d, before %d", e.Rev, r5)
			}
		case <-deadline:
			t.Fatalf("%d progress marks in 5s", progress)
		}
	}
	// A watch from a revision compacted away relists, then closes.
	if _, err := b.cli.Compact(ctx, int64(r5)); err != nil {
		t.Fatal(err)
	}
	old := b.Watch(ctx, r1)
	got := nextEvent(t, old, &progress)
	if !got.Relist {
		t.Fatalf("after compaction: %+v", got)
	}
	if _, open := <-old; open {
		t.Fatal("the watch stays open after a relist")
	}
	cancel()
	for range ch {
	}
}

func TestEtcdMergeLastUsed(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	b := newEtcdBackend(t, c.Endpoints(), "/kw-lu/")
	initStore(t, b)
	for i := 0; i < 200; i++ { // more than one merge transaction
		k := etcdTestKey(fmt.Sprintf("k%03d", i), fmt.Sprintf("n%d", i))
		etcdCreate(t, b, k)
	}
	t1, t2 := testT0.UnixNano(), testT0.Add(time.Minute).UnixNano()
	var recs []LastUsedRec
	for i := 0; i < 200; i++ {
		recs = append(recs, LastUsedRec{ID: fmt.Sprintf("k%03d", i), At: t2, From: "a"})
	}
	recs = append(recs, LastUsedRec{ID: "k000", At: t1, From: "dup-older"})
	if err := b.MergeLastUsed(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// An older time never wins; a deleted key is not brought back.
	k, rev, _ := b.Key(ctx, "k001")
	if _, err := b.Commit(ctx, &Write{Keys: []KeyPut{{Old: k, OldRev: rev}}, Audit: []model.AuditEvent{etcdEv("x", "k001", "")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.MergeLastUsed(ctx, []LastUsedRec{{ID: "k000", At: t1, From: "older"}, {ID: "k001", At: t2 + 1, From: "late"}, {ID: "k002", At: t2 + 5, From: "newer"}}); err != nil {
		t.Fatal(err)
	}
	k, _, _ = b.Key(ctx, "k000")
	if k.LastUsedAt == nil || k.LastUsedAt.UnixNano() != t2 || k.LastUsedFrom != "a" {
		t.Fatalf("k000 last used %v %q", k.LastUsedAt, k.LastUsedFrom)
	}
	k, _, _ = b.Key(ctx, "k002")
	if k.LastUsedAt.UnixNano() != t2+5 || k.LastUsedFrom != "newer" {
		t.Fatalf("k002 last used %v %q", k.LastUsedAt, k.LastUsedFrom)
	}
	if r, _ := b.cli.Get(ctx, b.luKey("k001")); len(r.Kvs) != 0 {
		t.Fatal("a deleted key's last use came back")
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestEtcdAudit(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	a := newEtcdBackend(t, c.Endpoints(), "/kw-audit/")
	b := newEtcdBackend(t, c.Endpoints(), "/kw-audit/")
	initStore(t, a)
	// Two nodes take turns: the log is in commit order across them.
	for i := 0; i < 20; i++ {
		be := []*etcdBackend{a, b}[i%2]
		if _, err := be.Commit(ctx, &Write{Audit: []model.AuditEvent{
			etcdEv("key.edit", fmt.Sprintf("k%d", i%3), fmt.Sprintf("change %d", i)),
			etcdEv("note", "", fmt.Sprintf("Second %d", i))}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	all, err := b.Audit(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 41 {
		t.Fatalf("%d events", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Seq <= all[i].Seq {
			t.Fatalf("not newest first by seq at %d: %d then %d", i, all[i-1].Seq, all[i].Seq)
		}
	}
	if all[0].Detail != "Second 19" || all[1].Detail != "change 19" || all[40].Action != model.ActOperatorAdd {
		t.Fatalf("order: %q %q ... %q", all[0].Detail, all[1].Detail, all[40].Action)
	}
	got, _ := a.Audit(ctx, AuditFilter{Target: "k1", Limit: 3})
	if len(got) != 3 || got[0].Detail != "change 19" || got[1].Detail != "change 16" || got[2].Detail != "change 13" {
		t.Fatalf("target k1: %+v", got)
	}
	got, _ = a.Audit(ctx, AuditFilter{Query: "SECOND 1", Limit: 2})
	if len(got) != 2 || got[0].Detail != "Second 19" || got[1].Detail != "Second 18" {
		t.Fatalf("query: %+v", got)
	}
	got, _ = a.Audit(ctx, AuditFilter{Target: "k2", Query: "change 1"})
	if len(got) != 3 { // 17, 14, 11
		t.Fatalf("target+query: %+v", got)
	}
	got, _ = a.Audit(ctx, AuditFilter{Target: "nobody"})
	if len(got) != 0 {
		t.Fatalf("unknown target: %+v", got)
	}
}

func TestEtcdImport(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	b := newEtcdBackend(t, c.Endpoints(), "/kw-import/")
	initStore(t, b)
	etcdCreate(t, b, etcdTestKey("zz99", "taken"))
	var keys []KeyPut
	var evs []model.AuditEvent
	for i := 0; i < 60; i++ {
		k := etcdTestKey(fmt.Sprintf("im%03d", i), fmt.Sprintf("imp-%d", i))
		if i == 40 {
			k.Name = "TAKEN"
		}
		keys = append(keys, KeyPut{New: k, Hashes: testHashes(k.ID, false)})
		evs = append(evs, etcdEv(model.ActKeyCreate, k.ID, ""))
	}
	done, err := b.Import(ctx, keys, evs, 0)
	wantErr(t, "an import with a taken name", err, ErrNameTaken)
	if done != 25 {
		t.Fatalf("done %d, want 25 (one batch)", done)
	}
	// Resume from done, without the taken name: every key once.
	keys[40].New.Name = "free"
	done2, err := b.Import(ctx, keys[done:], evs[done:], 10)
	if err != nil || done2 != 35 {
		t.Fatalf("resume: %d %v", done2, err)
	}
	n := 0
	b.Keys(ctx, func(*model.Key) { n++ })
	if n != 61 {
		t.Fatalf("%d keys", n)
	}
	got, _ := b.Audit(ctx, AuditFilter{Query: model.ActKeyCreate})
	if len(got) != 61 {
		t.Fatalf("%d create events", len(got))
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdAmbiguousCommits kills the leader again and again while a node
// commits: every commit acknowledged is stored exactly once, and none is
// stored that was reported failed.
func TestEtcdAmbiguousCommits(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx := context.Background()
	b := newEtcdBackend(t, c.Endpoints(), "/kw-amb/")
	b.commitTimeout = 500 * time.Millisecond // ambiguous outcomes, often
	initStore(t, b)
	stop := make(chan struct{})
	var acked, failed []string
	unknown := map[string]bool{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := etcdTestKey(fmt.Sprintf("a%05d", i), fmt.Sprintf("amb-%d", i))
			_, err := b.Commit(ctx, &Write{Keys: []KeyPut{{New: k, Hashes: testHashes(k.ID, false)}}, Audit: []model.AuditEvent{etcdEv("c", k.ID, "")}})
			if err != nil {
				failed = append(failed, k.ID)
				unknown[k.ID] = errors.Is(err, errOutcomeUnknown)
				t.Logf("commit %s: %v", k.ID, err)
			} else {
				acked = append(acked, k.ID)
			}
		}
	}()
	for round := 0; round < 2; round++ {
		time.Sleep(700 * time.Millisecond)
		l := c.MustLeader(t, 5*time.Second)
		l.Kill()
		time.Sleep(1500 * time.Millisecond)
		l.Restart(t)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	check := newEtcdBackend(t, c.Endpoints(), "/kw-amb/")
	stored := map[string]bool{}
	check.Keys(ctx, func(k *model.Key) { stored[k.ID] = true })
	for _, id := range acked {
		if !stored[id] {
			t.Errorf("acknowledged %s is lost", id)
		}
	}
	for _, id := range failed {
		// Only "outcome unknown" may have been stored after all.
		if stored[id] && !unknown[id] {
			t.Errorf("%s was reported failed but is stored", id)
		}
	}
	evs, _ := check.Audit(ctx, AuditFilter{})
	count := map[string]int{}
	for _, e := range evs {
		count[e.Target]++
	}
	for id, n := range count {
		if n > 1 {
			t.Errorf("%s has %d audit events: a commit was doubled", id, n)
		}
	}
	if len(acked) < 10 {
		t.Fatalf("only %d commits acknowledged", len(acked))
	}
	t.Logf("%d acknowledged, %d failed, %d ambiguous outcomes resolved", len(acked), len(failed), b.ambiguous.Load())
	if b.ambiguous.Load() == 0 {
		t.Fatal("no commit had an ambiguous outcome: the test did not test it")
	}
}

// exported is everything an Export hands out, audit Seqs aside (a
// restore into etcd numbers them anew).
type exported struct {
	Created time.Time
	Keys    []string
	Ops     []model.Operator
	Meta    map[MetaName]string
	Audit   []model.AuditEvent
}

func exportOf(t *testing.T, be Backend) exported {
	t.Helper()
	x := exported{Meta: map[MetaName]string{}}
	_, err := be.Export(context.Background(), ExportSink{
		Created: func(at time.Time) error { x.Created = at; return nil },
		Key: func(k *model.Key, h KeyHashes, lu *LastUsedRec) error {
			x.Keys = append(x.Keys, fmt.Sprintf("%s %x %x %v %s %+v", k.ID, h.Cur[:4], h.Prev[:4], h.HasPrev, encodeKey(k), lu))
			return nil
		},
		Operator: func(op model.Operator) error { x.Ops = append(x.Ops, op); return nil },
		Meta:     func(n MetaName, v []byte) error { x.Meta[n] = string(v); return nil },
		Audit: func(e model.AuditEvent) error {
			e.Seq = 0
			x.Audit = append(x.Audit, e)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// fill writes the same records into any backend.
func etcdFill(t *testing.T, be Backend) {
	t.Helper()
	ctx := context.Background()
	initStore(t, be)
	for i := 0; i < 70; i++ {
		k := etcdTestKey(fmt.Sprintf("f%03d", i), fmt.Sprintf("fill-%d", i))
		hs := testHashes(k.ID, i%7 == 0)
		if hs.HasPrev {
			g := testT0.Add(time.Hour)
			k.GraceUntil = &g
		}
		if _, err := be.Commit(ctx, &Write{Keys: []KeyPut{{New: k, Hashes: hs}}, Audit: []model.AuditEvent{etcdEv(model.ActKeyCreate, k.ID, fmt.Sprintf("n %d", i))}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.MergeLastUsed(ctx, []LastUsedRec{{ID: "f003", At: testT0.UnixNano(), From: "1.2.3.4"}, {ID: "f050", At: testT0.Add(time.Second).UnixNano(), From: "ssh"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Commit(ctx, &Write{Operators: []OperatorPut{{Name: "bob", New: testAdmin("bob")}}, Meta: map[MetaName][]byte{MetaSecret: []byte(`{"hint":"sealed"}`)},
		Audit: []model.AuditEvent{etcdEv(model.ActOperatorAdd, "bob", ""), etcdEv(model.ActSecretRotate, "secret", "")}}); err != nil {
		t.Fatal(err)
	}
}

func TestEtcdExportRestoreRoundTrip(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	opts := quietOptions()
	src, err := openBolt(filepath.Join(t.TempDir(), "src.db"), &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	etcdFill(t, src)
	e := newEtcdBackend(t, c.Endpoints(), "/kw-rt/")
	if err := e.Restore(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := e.Restore(ctx, src); err == nil {
		t.Fatal("a restore into a non-empty prefix was accepted")
	}
	dst, err := openBolt(filepath.Join(t.TempDir(), "dst.db"), &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Restore(ctx, e); err != nil {
		t.Fatal(err)
	}
	want := exportOf(t, src)
	if len(want.Keys) != 70 || len(want.Audit) != 73 || len(want.Ops) != 2 {
		t.Fatalf("source export: %d keys, %d events, %d operators", len(want.Keys), len(want.Audit), len(want.Ops))
	}
	for name, be := range map[string]Backend{"etcd": e, "bbolt again": dst} {
		if got := exportOf(t, be); !reflect.DeepEqual(got, want) {
			t.Errorf("%s differs:\n got %+v\nwant %+v", name, got, want)
		}
	}
	// The same writes straight into etcd export alike too: one suite, two backends.
	direct := newEtcdBackend(t, c.Endpoints(), "/kw-direct/")
	etcdFill(t, direct)
	got := exportOf(t, direct)
	got.Created = want.Created
	if !reflect.DeepEqual(got.Keys, want.Keys) || !reflect.DeepEqual(got.Ops, want.Ops) || !reflect.DeepEqual(got.Meta, want.Meta) || !reflect.DeepEqual(got.Audit, want.Audit) {
		t.Errorf("the same writes on etcd export otherwise:\n got %+v\nwant %+v", got, want)
	}
	if err := e.Check(); err != nil {
		t.Fatal(err)
	}
	// The restored etcd store audits targets through its index.
	if evs, _ := e.Audit(ctx, AuditFilter{Target: "f003"}); len(evs) != 1 || evs[0].Detail != "n 3" {
		t.Fatalf("restored target index: %+v", evs)
	}
}

func TestEtcdBackupOpens(t *testing.T) {
	c := etcdtest.Start(t, 1)
	e := newEtcdBackend(t, c.Endpoints(), "/kw-backup/")
	etcdFill(t, e)
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	var announced int64
	n, err := e.Backup(f, func(size int64) error { announced = size; return nil })
	f.Close()
	if err != nil || n != announced || n == 0 {
		t.Fatalf("backup: %d bytes, announced %d, %v", n, announced, err)
	}
	s, err := Open(path, quietOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := s.be.(*boltBackend)
	got, want := exportOf(t, b), exportOf(t, e)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("backup differs:\n got %+v\nwant %+v", got, want)
	}
}

// recordSink keeps what Load hands out.
type recordSink struct {
	meta   map[MetaName][]byte
	ops    []string
	keys   []string
	hashes map[string]string
	pages  int
}

func (r *recordSink) Meta(n MetaName, v []byte) error { r.meta[n] = v; return nil }
func (r *recordSink) Operator(op model.Operator) error {
	r.ops = append(r.ops, op.Name)
	return nil
}
func (r *recordSink) KeyPage(p *KeyPage) error {
	r.pages++
	for i := range p.IDs {
		k, err := decodeKey(p.Vals[i], nil)
		if err != nil {
			return err
		}
		lu := ""
		if p.LastUsed[i] != nil {
			at, from, _ := decodeLastUsed(p.LastUsed[i])
			lu = fmt.Sprint(at, from)
		}
		r.keys = append(r.keys, string(p.IDs[i])+" "+k.Name+" "+lu)
	}
	p.Done()
	return nil
}
func (r *recordSink) HashPage(p *HashPage) error {
	for i := range p.Hashes {
		ref, _ := decodeHashRef(p.Refs[i])
		r.hashes[fmt.Sprintf("%x", p.Hashes[i][:4])] = fmt.Sprint(ref.id, ref.previous)
	}
	p.Done()
	return nil
}
func (r *recordSink) Flush() error { return nil }

func TestEtcdLoad(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	e := newEtcdBackend(t, c.Endpoints(), "/kw-load/")
	etcdFill(t, e)
	load := func(be Backend) *recordSink {
		r := &recordSink{meta: map[MetaName][]byte{}, hashes: map[string]string{}}
		if _, err := be.Load(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	opts := quietOptions()
	bb, err := openBolt(filepath.Join(t.TempDir(), "x.db"), &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	etcdFill(t, bb)
	got, want := load(e), load(bb)
	got.pages, want.pages = 0, 0
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("etcd load differs from bbolt's:\n got %+v\nwant %+v", got, want)
	}
	sim, err := e.Similar(ctx, "f00", 3)
	if err != nil || len(sim) != 3 || sim[0].ID != "f000" {
		t.Fatalf("similar: %v %v", sim, err)
	}
	sim, _ = e.Similar(ctx, "FILL-6", 20)
	if len(sim) != 11 { // fill-6, fill-60..69
		t.Fatalf("similar by name: %d", len(sim))
	}
	// A corrupt record is an error naming the key, never a panic.
	if _, err := e.cli.Put(ctx, e.keyKey("f010"), "\x01short"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Key(ctx, "f010"); err == nil || !contains(err.Error(), `"f010"`) {
		t.Fatalf("corrupt record: %v", err)
	}
	r := &recordSink{meta: map[MetaName][]byte{}, hashes: map[string]string{}}
	if _, err := e.Load(ctx, r); err == nil || !contains(err.Error(), `"f010"`) {
		t.Fatalf("load of a corrupt record: %v", err)
	}
	if err := e.Check(); err == nil {
		t.Fatal("check passed a corrupt record")
	}
}

func TestEtcdCompaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	opts := Options{}
	opts.fill()
	var bs []*etcdBackend
	for i := 0; i < 2; i++ {
		b := newEtcdBackend(t, c.Endpoints(), "/kw-compact/")
		bs = append(bs, b)
	}
	initStore(t, bs[0])
	// Restart both compactors with a short interval.
	for _, b := range bs {
		b.stopCompactor()
		b.compactEvery, b.compactKeep = 200*time.Millisecond, 200*time.Millisecond
		b.startCompactor()
	}
	first := etcdCreate(t, bs[0], etcdTestKey("c001", "c"))
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		etcdCreate(t, bs[1], etcdTestKey(fmt.Sprintf("c%03d", time.Now().Nanosecond()%1000+2), fmt.Sprintf("c%d", time.Now().UnixNano())))
		_, err := bs[0].cli.Get(ctx, "x", clientv3.WithRev(int64(first)))
		if err != nil && contains(err.Error(), "compacted") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("nothing compacted in 5s")
}

// watchUntil reads ch until want returns true, failing on a relist.
func watchUntil(t *testing.T, ch <-chan WatchEvent, within time.Duration, want func(WatchEvent) bool) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("watch closed")
			}
			if e.Relist {
				t.Fatalf("relist: %+v", e)
			}
			if want(e) {
				return
			}
		case <-timeout:
			t.Fatalf("nothing wanted within %v", within)
		}
	}
}

func hasKey(id string) func(WatchEvent) bool {
	return func(e WatchEvent) bool {
		for _, k := range e.Keys {
			if k.ID == id {
				return true
			}
		}
		return false
	}
}

// TestEtcdWatchSurvivesQuorumLoss: with two of three members down the
// watch gets "no leader"; once they are back it carries on from where it
// was, with no relist and nothing missed.
func TestEtcdWatchSurvivesQuorumLoss(t *testing.T) {
	c := etcdtest.Start(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ms := c.Members()
	b := newEtcdBackend(t, []string{ms[0].ClientURL()}, "/kw-quorum/")
	w := newEtcdBackend(t, c.Endpoints(), "/kw-quorum/")
	r0 := initStore(t, w)
	ch := b.Watch(ctx, r0) // the commits after r0
	etcdCreate(t, w, etcdTestKey("q001", "before"))
	watchUntil(t, ch, 5*time.Second, hasKey("q001"))
	ms[1].Kill()
	ms[2].Kill()
	// No progress while the quorum is gone (the engine's staleness).
	time.Sleep(4 * time.Second)
	drained := 0
	for len(ch) > 0 {
		<-ch
		drained++
	}
	quiet := time.After(2 * time.Second)
	for done := false; !done; {
		select {
		case e := <-ch:
			if e.Progress || e.Relist {
				t.Fatalf("without a quorum: %+v", e)
			}
		case <-quiet:
			done = true
		}
	}
	ms[1].Restart(t)
	ms[2].Restart(t)
	etcdCreate(t, w, etcdTestKey("q002", "after"))
	watchUntil(t, ch, 10*time.Second, hasKey("q002"))
	watchUntil(t, ch, 5*time.Second, func(e WatchEvent) bool { return e.Progress })
}

// TestEtcdWatchPartitioned: a node cut off from etcd gets no error, only
// silence (no progress marks: its staleness grows); once healed, the
// change made meanwhile arrives, with no relist.
var partitionFor = 3 * time.Second

func TestEtcdWatchPartitioned(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := etcdtest.NewProxy(t, c.Endpoints()[0])
	b := newEtcdBackend(t, []string{p.URL()}, "/kw-part/")
	w := newEtcdBackend(t, c.Endpoints(), "/kw-part/")
	r0 := initStore(t, w)
	ch := b.Watch(ctx, r0) // the commits after r0
	watchUntil(t, ch, 5*time.Second, func(e WatchEvent) bool { return e.Progress })
	p.Blackhole(true)
	for len(ch) > 0 {
		<-ch
	}
	time.Sleep(200 * time.Millisecond)
	for len(ch) > 0 {
		<-ch
	}
	etcdCreate(t, w, etcdTestKey("p001", "while cut off"))
	quiet := time.After(partitionFor)
	for done := false; !done; {
		select {
		case e := <-ch:
			t.Fatalf("cut off, yet: %+v", e)
		case <-quiet:
			done = true
		}
	}
	p.Blackhole(false)
	watchUntil(t, ch, 15*time.Second, hasKey("p001"))
}

func TestEtcdAuthAndUnreachable(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	cli := c.Client(t)
	if _, err := cli.UserAdd(ctx, "root", "rootpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	opts := quietOptions()
	if _, err := openEtcdBackend(EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/kw-auth/", Username: "root", Password: "wrong"}, &opts); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	b, err := openEtcdBackend(EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/kw-auth/", Username: "root", Password: "rootpw"}, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	initStore(t, b)
	etcdCreate(t, b, etcdTestKey("u001", "authed"))

	// Nothing listening: a clear error naming the endpoint, in time.
	dead := "http://" + etcdtest.NewProxy(t, "127.0.0.1:1").Addr()
	start := time.Now()
	_, err = openEtcdBackend(EtcdConfig{Endpoints: []string{dead}, DialTimeout: time.Second}, &opts)
	if err == nil || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("unreachable: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("unreachable took %v", d)
	}
}
