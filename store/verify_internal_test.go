package store

import (
	"context"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// TestLastUsedSourcesShared: keys verified from the same address point at
// one shared source string (so the string stays in the cache at scale);
// a source with control characters or over 128 bytes is stored cleaned
// and cut.
func TestLastUsedSourcesShared(t *testing.T) {
	open := testOpener(t, filepath.Join(t.TempDir(), "s.db"))
	s, err := open(Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var toks, ids []string
	for _, name := range []string{"a", "b", "c"} {
		k, tok, err := s.CreateKey("admin", model.KeySpec{Name: name, Role: model.RoleAdmin, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		toks, ids = append(toks, tok), append(ids, k.ID)
	}
	for _, tok := range toks[:2] {
		if r := s.Verify(tok, "", "", "10.0.0.7"); r.Code != model.CodeValid {
			t.Fatal(r.Code)
		}
	}
	from := func(id string) *atomic.Pointer[string] {
		i, _ := s.slots.lookup(id)
		return s.slots.from(i)
	}
	pa, pb := from(ids[0]).Load(), from(ids[1]).Load()
	if pa == nil || pa != pb || *pa != "10.0.0.7" {
		t.Fatalf("two keys used from 10.0.0.7 hold %p and %p, want one shared string", pa, pb)
	}
	evil := "\x1b]52;c;aGk=\x07" + strings.Repeat("é", 100)
	s.Verify(toks[2], "", "", evil)
	got := *from(ids[2]).Load()
	if got != cleanSource(evil) || len(got) > 128 || strings.ContainsAny(got, "\x1b\x07") {
		t.Fatalf("stored source %q: want it cleaned and at most 128 bytes", got)
	}
}

// checkFacts fails unless slot i's verification facts are those of k,
// its key: a write that changed a key without setKey would let Verify
// decide on stale facts.
func checkFacts(t *testing.T, s *Store, i uint32, k *model.Key) {
	t.Helper()
	want := model.FactsOf(k)
	got, g := s.facts(i)
	e := s.slots.at(i)
	if !reflect.DeepEqual(got, want) || e.created != k.CreatedAt.UnixNano() || g.creator != k.CreatedBy {
		t.Fatalf("key %s: entry facts %+v (created %d, creator %q), key says %+v (created %d, creator %q)",
			k.ID, got, e.created, g.creator, want, k.CreatedAt.UnixNano(), k.CreatedBy)
	}
}

// checkAllFacts checks every key's facts against its record in the
// backend (the file, or etcd: each write returned once memory held it).
func checkAllFacts(t *testing.T, s *Store) {
	t.Helper()
	s.wmu.Lock() // the backend and memory agree
	defer s.wmu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	_, err := s.be.Keys(context.Background(), func(k *model.Key) {
		i, ok := s.slots.lookup(k.ID)
		if !ok {
			t.Fatalf("key %s is in the backend, not in memory", k.ID)
		}
		if snap := s.slots.snap(i); (snap == nil) != (s.slots.snaps == nil) || snap != nil && !reflect.DeepEqual(snap, k) {
			t.Fatalf("key %s: snapshot %+v, backend %+v", k.ID, snap, k)
		}
		checkFacts(t, s, i, k)
		n++
	})
	if err != nil || n != s.slots.live {
		t.Fatalf("%d keys in the backend, %d in memory (%v)", n, s.slots.live, err)
	}
}

// TestEntryFactsFollowEveryWrite: after every kind of write, and after a
// reopen, each entry's facts match its snapshot, and Verify answers as
// model.Decide does over the snapshot.
func TestEntryFactsFollowEveryWrite(t *testing.T) {
	for _, lean := range []bool{false, true} {
		t.Run(map[bool]string{false: "snapshots", true: "lean"}[lean], func(t *testing.T) { testEntryFacts(t, lean) })
	}
}

func testEntryFacts(t *testing.T, lean bool) {
	open := testOpener(t, filepath.Join(t.TempDir(), "f.db"))
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	cat := testkit.CatalogJSON(t)
	opts := Options{Bootstrap: "admin", DefaultCatalog: cat, FlushInterval: time.Hour, NoSync: true, Now: func() time.Time { return clock }, Lean: lean}
	s, err := open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	exp := now.Add(48 * time.Hour)
	toks := map[string]string{} // id -> current token
	if _, err := s.AddOperator("admin", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	createAs := func(actor string, spec model.KeySpec) *model.Key {
		k, tok, err := s.CreateKey(actor, spec)
		if err != nil {
			t.Fatal(err)
		}
		toks[k.ID] = tok
		return k
	}
	create := func(spec model.KeySpec) *model.Key { return createAs("admin", spec) }
	ed := create(model.KeySpec{Name: "ed", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, ExpiresAt: &exp, Active: true})
	ro := create(model.KeySpec{Name: "ro", Role: model.RoleReadonly, Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}, Active: true})
	ad := create(model.KeySpec{Name: "ad", Role: model.RoleAdmin, Active: false})
	// Same grant as ed: shared.
	ed2 := create(model.KeySpec{Name: "ed2", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, ExpiresAt: &exp, Active: true})
	bobs := createAs("bob", model.KeySpec{Name: "bobs", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Active: true})
	check := func(step string) {
		t.Helper()
		checkAllFacts(t, s)
		for id, tok := range toks {
			for _, req := range [][2]string{{"", ""}, {"coupons:read", ""}, {"coupons:write", "web-shop"}, {"coupons:read", "web-shop"}, {"coupons:read", "eu-store"}} {
				got := s.Verify(tok, req[0], req[1], "")
				k, err := s.Key(id)
				if err != nil {
					t.Fatal(err)
				}
				op, _ := s.Operator(k.CreatedBy)
				want := model.Decide(model.VerifyInput{Key: k, CreatorActive: !op.Disabled, Scope: req[0], Resource: req[1], Now: clock})
				if got.Code != want.Code || got.KeyID != want.KeyID || got.Role != want.Role || got.Reason != want.Reason ||
					(got.ExpiresAt == nil) != (want.ExpiresAt == nil) || (got.ExpiresAt != nil && !got.ExpiresAt.Equal(*want.ExpiresAt)) {
					t.Fatalf("%s: key %s %v: Verify %+v, Decide over the snapshot %+v", step, id, req, got, want)
				}
			}
		}
	}
	check("create")
	grantOf := func(id string) uint32 {
		i, _ := s.slots.lookup(id)
		return s.slots.at(i).grant
	}
	if grantOf(ed.ID) != grantOf(ed2.ID) {
		t.Fatal("two keys with one role, scope list and creator do not share a grant")
	}
	if grantOf(ed.ID) == grantOf(bobs.ID) {
		t.Fatal("keys of two creators share a grant")
	}
	// A lean store keeps snapshots while a subscriber watches: from here
	// to the expiry step, every write must keep them equal to the file.
	var sub *Subscription
	if lean {
		if s.slots.snaps != nil || len(s.Keys()) != 5 || s.slots.snaps != nil {
			t.Fatal("a lean store without subscribers keeps snapshots")
		}
		sub = s.Subscribe()
		if len(s.Keys()) != 5 || s.slots.snaps == nil {
			t.Fatal("a lean store with a subscriber does not keep snapshots")
		}
	}
	later := now.Add(24 * 365 * time.Hour)
	if _, err := s.EditKey("admin", ed.ID, ed.Version, model.KeySpec{Name: "ed", Role: model.RoleEditor,
		Scopes: []string{"coupons:read", "coupons:write"}, Resources: []string{"web-shop"}, ExpiresAt: &later, Active: true}); err != nil {
		t.Fatal(err)
	}
	check("edit")
	if _, err := s.SetKeyActive("admin", ro.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetKeyActive("admin", ad.ID, true); err != nil {
		t.Fatal(err)
	}
	check("disable and enable")
	old := toks[ro.ID]
	_, tok, err := s.RegenerateKey("admin", ro.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	toks[ro.ID] = tok
	if r := s.Verify(old, "", "", ""); r.Code != model.CodeDisabled || r.KeyID != ro.ID {
		t.Fatalf("previous secret in its grace period: %+v", r)
	}
	check("regenerate")
	if err := s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	check("flush")
	imported, itoks, err := s.ImportKeys("admin", []model.KeySpec{{Name: "imp", Role: model.RoleReadonly, Scopes: []string{"coupons:read"}, ExpiresAt: &exp, Active: true}})
	if err != nil {
		t.Fatal(err)
	}
	toks[imported[0].ID] = itoks[0]
	if _, err := s.SeedKeys("admin", []SeedKey{{Spec: model.KeySpec{Name: "seeded", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Active: true}}}); err != nil {
		t.Fatal(err)
	}
	check("import and seed")
	if lean {
		if k, _ := s.Key(ro.ID); k.LastUsedAt == nil {
			t.Fatal("a kept snapshot missed a flushed last-used")
		}
		sub.Close()
		if s.slots.snaps != nil {
			t.Fatal("a lean store kept its snapshots after its last subscriber left")
		}
		check("after the subscriber left")
	}
	clock = now.Add(72 * time.Hour) // ed2 and imp expired, ro's grace over
	if r := s.Verify(old, "", "", ""); r.Code != model.CodeNotFound {
		t.Fatalf("previous secret after its grace period: %+v", r)
	}
	check("expiry")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = open(opts); err != nil {
		t.Fatal(err)
	}
	check("reopen")
	if r := s.Verify(toks[bobs.ID], "", "", ""); r.Code != model.CodeValid {
		t.Fatalf("bob's key after reopen: %+v", r)
	}
	if _, err := s.SetOperatorDisabled("admin", "bob", true); err != nil {
		t.Fatal(err)
	}
	if r := s.Verify(toks[bobs.ID], "", "", ""); r.Code != model.CodeCreatorDisabled {
		t.Fatalf("bob's key with bob disabled: %+v", r)
	}
	check("creator disabled")
	if err := s.DeleteOperator("admin", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddOperator("admin", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	if r := s.Verify(toks[bobs.ID], "", "", ""); r.Code != model.CodeCreatorDisabled {
		t.Fatalf("old bob's key after a new bob was added: %+v", r)
	}
}

// TestEntryLayout: the facts a verification reads sit in the entry's
// first 64 bytes, an entry is 128 bytes (so each starts a cache line), and
// it holds no pointer, so that the garbage collector never scans the
// entries (see slots.go).
func TestEntryLayout(t *testing.T) {
	var e entry
	if sz := unsafe.Sizeof(e); sz != 128 {
		t.Errorf("entry is %d bytes, want 128", sz)
	}
	for name, end := range map[string]uintptr{
		"cur":     unsafe.Offsetof(e.cur) + unsafe.Sizeof(e.cur),
		"expires": unsafe.Offsetof(e.expires) + 8,
		"created": unsafe.Offsetof(e.created) + 8,
		"grant":   unsafe.Offsetof(e.grant) + unsafe.Sizeof(e.grant),
		"active":  unsafe.Offsetof(e.active) + 1,
		"hasPrev": unsafe.Offsetof(e.hasPrev) + 1,
		"live":    unsafe.Offsetof(e.live) + 1,
	} {
		if end > 64 {
			t.Errorf("entry.%s ends at byte %d, past the first cache line", name, end)
		}
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[entry](), reflect.TypeFor[map[uint64]uint32](), reflect.TypeFor[map[[16]byte]uint32]()} {
		if p := pointerIn(typ); p != "" {
			t.Errorf("%s holds a pointer (%s): the garbage collector would scan every key's", typ, p)
		}
	}
}

// pointerIn names a part of typ that is or holds a pointer, "" if none.
func pointerIn(typ reflect.Type) string {
	switch typ.Kind() {
	case reflect.Struct:
		for i := range typ.NumField() {
			if p := pointerIn(typ.Field(i).Type); p != "" {
				return typ.Field(i).Name + ": " + p
			}
		}
		return ""
	case reflect.Array:
		return pointerIn(typ.Elem())
	case reflect.Map:
		if p := pointerIn(typ.Key()); p != "" {
			return "key " + p
		}
		if p := pointerIn(typ.Elem()); p != "" {
			return "value " + p
		}
		return ""
	case reflect.Pointer, reflect.UnsafePointer, reflect.Slice, reflect.String, reflect.Interface, reflect.Chan, reflect.Func:
		return typ.String()
	}
	return ""
}

// TestFlushSkipsDeletedKeys: a key deleted after it verified gets no
// last-used record when the buffer is flushed (the flush asks memory, not
// the keys bucket, whether it still exists).
func TestFlushSkipsDeletedKeys(t *testing.T) {
	cat := testkit.CatalogJSON(t)
	s, err := testOpener(t, filepath.Join(t.TempDir(), "d.db"))(Options{Bootstrap: "admin", DefaultCatalog: cat, FlushInterval: time.Hour, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	for _, name := range []string{"gone", "kept"} {
		k, tok, err := s.CreateKey("admin", model.KeySpec{Name: name, Role: model.RoleAdmin, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		if r := s.Verify(tok, "", "", "10.0.0.1"); r.Code != model.CodeValid {
			t.Fatal(r.Code)
		}
		ids = append(ids, k.ID)
	}
	if err := s.DeleteKey("admin", ids[0]); err != nil {
		t.Fatal(err)
	}
	// The new key takes the deleted one's slot, which is still listed as
	// holding buffered last-used.
	fresh, _, err := s.CreateKey("admin", model.KeySpec{Name: "fresh", Role: model.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if i, _ := s.slots.lookup(fresh.ID); s.slots.idOf(i) != fresh.ID || len(s.slots.free) != 0 {
		t.Fatal("the new key did not reuse the freed slot")
	}
	if err := s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if lastUsedRecord(t, s, ids[0]) != nil {
		t.Error("the deleted key got a last-used record")
	}
	if lastUsedRecord(t, s, fresh.ID) != nil {
		t.Error("a key never used got a last-used record (its slot's previous key's)")
	}
	if v := lastUsedRecord(t, s, ids[1]); v == nil {
		t.Error("the kept key has no last-used record")
	} else if _, from, err := decodeLastUsed(v); err != nil || from != "10.0.0.1" {
		t.Errorf("kept key's record: from %q, %v", from, err)
	}
}

// TestSlotReuseUnderTraffic: keys are deleted and new ones created (taking
// the freed slots) while other goroutines verify the deleted keys' tokens
// as fast as they can. No new key may come out with a last-used record:
// none of them was ever verified.
func TestSlotReuseUnderTraffic(t *testing.T) {
	s, err := testOpener(t, filepath.Join(t.TempDir(), "r.db"))(Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const victims = 64
	var toks []string
	var ids []string
	for i := range victims {
		k, tok, err := s.CreateKey("admin", model.KeySpec{Name: "victim-" + strconv.Itoa(i), Role: model.RoleAdmin, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		toks, ids = append(toks, tok), append(ids, k.ID)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.Verify(toks[i%victims], "", "", "10.0.0.9")
			}
		})
	}
	var fresh []string
	for i, id := range ids {
		if err := s.DeleteKey("admin", id); err != nil {
			t.Fatal(err)
		}
		k, _, err := s.CreateKey("admin", model.KeySpec{Name: "fresh-" + strconv.Itoa(i), Role: model.RoleAdmin, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		fresh = append(fresh, k.ID)
		if i%8 == 0 {
			if err := s.FlushLastUsed(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if err := s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	for _, id := range fresh {
		k, err := s.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		i, _ := s.slots.lookup(id)
		if k.LastUsedAt != nil || s.slots.at(i).lastAt.Load() != 0 {
			t.Fatalf("key %s was never verified, yet has a last-used time (a deleted key's, through its reused slot)", id)
		}
	}
	if s.slots.used != victims+1 && s.slots.used != victims {
		// Every create after the first delete reused the freed slot.
		t.Fatalf("%d slots used for %d live keys: freed slots were not reused", s.slots.used, s.slots.live)
	}
}
