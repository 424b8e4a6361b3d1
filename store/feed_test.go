package store_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// nextChanges waits for the feed to signal and returns what it holds.
func nextChanges(t *testing.T, sub *store.Subscription) []store.Change {
	t.Helper()
	select {
	case <-sub.Ready():
	case <-time.After(2 * time.Second):
		t.Fatal("no change signalled")
	}
	return sub.Next()
}

func hasChange(cs []store.Change, kind store.ChangeKind, id string) bool {
	for _, c := range cs {
		if c.Kind == kind && (id == "" || c.ID == id || slices.Contains(c.IDs, id)) {
			return true
		}
	}
	return false
}

func TestChangeFeed(t *testing.T) {
	e := newEnv(t)
	sub := e.s.Subscribe()
	defer sub.Close()

	k, tok := e.create(spec("a"))
	if cs := nextChanges(t, sub); !hasChange(cs, store.KeyCreated, k.ID) {
		t.Fatalf("create: %+v", cs)
	}
	if _, err := e.s.SetKeyActive("admin", k.ID, false); err != nil {
		t.Fatal(err)
	}
	if cs := nextChanges(t, sub); !hasChange(cs, store.KeyUpdated, k.ID) {
		t.Fatalf("disable: %+v", cs)
	}
	if _, err := e.s.SetKeyActive("admin", k.ID, true); err != nil {
		t.Fatal(err)
	}
	nextChanges(t, sub)
	e.wantCode(tok, "", "", model.CodeValid)
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if cs := nextChanges(t, sub); !hasChange(cs, store.LastUsed, k.ID) {
		t.Fatalf("last used: %+v", cs)
	}
	if _, err := e.s.AddOperator("admin", "bob", model.OperatorReadonly, nil); err != nil {
		t.Fatal(err)
	}
	if cs := nextChanges(t, sub); !hasChange(cs, store.OperatorsChanged, "bob") {
		t.Fatalf("operator: %+v", cs)
	}
	if err := e.s.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	if cs := nextChanges(t, sub); !hasChange(cs, store.KeyDeleted, k.ID) {
		t.Fatalf("delete: %+v", cs)
	}
	// A refused write publishes nothing.
	if _, _, err := e.s.CreateKey("bob", spec("x")); err == nil {
		t.Fatal("readonly create")
	}
	select {
	case <-sub.Ready():
		t.Fatalf("refused write published %+v", sub.Next())
	case <-time.After(50 * time.Millisecond):
	}
	// A closed subscription gets nothing more.
	sub2 := e.s.Subscribe()
	sub2.Close()
	e.create(spec("b"))
	if cs := sub2.Next(); len(cs) != 0 {
		t.Fatalf("closed subscription got %+v", cs)
	}
}

func TestChangeFeedOverflowAndClose(t *testing.T) {
	e := newEnv(t)
	e.opts.NoSync = true
	e.reopen()
	sub := e.s.Subscribe()
	// Never read: more than the queue bound of changes collapses to Resync.
	for i := 0; i < 70; i++ {
		batch := make([]model.KeySpec, 60) // under the import's own Resync threshold
		for j := range batch {
			batch[j] = spec(fmt.Sprintf("k-%d-%d", i, j))
		}
		if _, _, err := e.s.ImportKeys("admin", batch); err != nil {
			t.Fatal(err)
		}
	}
	cs := nextChanges(t, sub)
	if len(cs) != 1 || cs[0].Kind != store.Resync {
		t.Fatalf("overflow gave %d changes (first %+v), want one Resync", len(cs), cs[0])
	}
	// Close closes Ready.
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	deadline := time.After(2 * time.Second)
	for {
		select {
		case _, ok := <-sub.Ready():
			if !ok {
				sub.Close() // safe after the store closed
				return
			}
		case <-deadline:
			t.Fatal("Ready not closed by Close")
		}
	}
}

func TestAudit(t *testing.T) {
	e := newEnv(t)
	a, _ := e.create(spec("alpha"))
	b, _ := e.create(spec("beta"))
	c, _ := e.create(spec("gamma"))
	for i := 0; i < 3; i++ {
		for _, k := range []*model.Key{a, b, c} {
			e.clock.Advance(time.Second)
			if _, err := e.s.SetKeyActive("admin", k.ID, i%2 == 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, _, err := e.s.RegenerateKey("admin", b.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteKey("admin", c.ID); err != nil {
		t.Fatal(err)
	}
	all := e.audit()
	// bootstrap + 3 creates + 9 toggles + regenerate + delete
	if len(all) != 15 {
		t.Fatalf("%d events", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Seq <= all[i].Seq || all[i-1].Time.Before(all[i].Time) {
			t.Fatalf("not newest first at %d: %+v then %+v", i, all[i-1], all[i])
		}
	}
	if all[0].Action != model.ActKeyDelete || all[len(all)-1].Actor != "bootstrap" {
		t.Fatalf("ends: %+v %+v", all[0], all[len(all)-1])
	}
	for _, k := range []*model.Key{a, b, c} {
		evs, err := e.s.Audit(store.AuditFilter{Target: k.ID})
		if err != nil {
			t.Fatal(err)
		}
		var want []uint64
		for _, ev := range all {
			if ev.Target == k.ID {
				want = append(want, ev.Seq)
			}
		}
		var got []uint64
		for _, ev := range evs {
			if ev.Target != k.ID {
				t.Fatalf("target filter %s returned %+v", k.ID, ev)
			}
			got = append(got, ev.Seq)
		}
		if !reflect.DeepEqual(got, want) || len(got) < 4 {
			t.Fatalf("target %s: seqs %v, want %v", k.ID, got, want)
		}
		lim, _ := e.s.Audit(store.AuditFilter{Target: k.ID, Limit: 2})
		if len(lim) != 2 || lim[0].Seq != want[0] || lim[1].Seq != want[1] {
			t.Fatalf("target+limit: %+v", lim)
		}
	}
	// The last target in index order and an unknown target.
	if evs, _ := e.s.Audit(store.AuditFilter{Target: "zzzz"}); len(evs) != 0 {
		t.Fatalf("unknown target: %+v", evs)
	}
	if evs, _ := e.s.Audit(store.AuditFilter{Target: "admin"}); len(evs) != 1 || evs[0].Actor != "bootstrap" {
		t.Fatalf("operator target: %+v", evs)
	}
	q, _ := e.s.Audit(store.AuditFilter{Query: "KEY.REGENERATE"})
	if len(q) != 1 || q[0].Target != b.ID {
		t.Fatalf("query: %+v", q)
	}
	q, _ = e.s.Audit(store.AuditFilter{Query: "gamma"})
	if len(q) != 2 { // its create and its delete name it
		t.Fatalf("query by name: %+v", q)
	}
	lim, _ := e.s.Audit(store.AuditFilter{Limit: 3})
	if len(lim) != 3 || lim[0].Seq != all[0].Seq || lim[2].Seq != all[2].Seq {
		t.Fatalf("limit: %+v", lim)
	}
	ql, _ := e.s.Audit(store.AuditFilter{Query: "key.disable", Limit: 2})
	if len(ql) != 2 || ql[0].Action != model.ActKeyDisable {
		t.Fatalf("query+limit: %+v", ql)
	}
	e.reopen()
	if again := e.audit(); !reflect.DeepEqual(again, all) {
		t.Fatal("audit changed on reopen")
	}
}

func TestBackup(t *testing.T) {
	e := newEnv(t)
	var toks []string
	for i := 0; i < 5; i++ {
		_, tok := e.create(spec(fmt.Sprintf("k%d", i)))
		toks = append(toks, tok)
	}
	e.s.Verify(toks[0], "", "", "src")
	dst := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.s.Backup(f)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(dst); fi.Size() != n || n == 0 {
		t.Fatalf("wrote %d bytes, file has %d", n, fi.Size())
	}
	b, err := store.Open(dst, store.Options{Bootstrap: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
	if b.KeyCount() != 5 {
		t.Fatalf("backup has %d keys", b.KeyCount())
	}
	for _, k := range e.s.Keys() {
		got, err := b.Key(k.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameKey(t, k, got)
	}
	for _, tok := range toks {
		if r := b.Verify(tok, "coupons:read", "", "x"); r.Code != model.CodeValid {
			t.Fatalf("token in backup: %s", r.Code)
		}
	}
	if k, _ := b.Key(e.s.Keys()[0].ID); k == nil {
		t.Fatal("missing")
	}
	if ops := b.Operators(); len(ops) != 1 || ops[0].Name != "admin" {
		t.Fatalf("backup operators %+v", ops)
	}
}

func TestCatalogImport(t *testing.T) {
	e := newEnv(t)
	e.create(spec("uses-coupons", "coupons:read"))
	sp := spec("uses-resource", "customers:read")
	sp.Resources = []string{"loyalty"}
	e.create(sp)
	orig := e.s.Catalog()

	drop := func(c model.Catalog, scope, res string) model.Catalog {
		var out model.Catalog
		for _, s := range c.Scopes {
			if s.Name != scope {
				out.Scopes = append(out.Scopes, s)
			}
		}
		for _, r := range c.Resources {
			if r.ID != res {
				out.Resources = append(out.Resources, r)
			}
		}
		return out
	}
	e.unchanged("drop used scope", func() {
		err := e.s.ImportCatalog("admin", drop(orig, "coupons:read", ""))
		if err == nil || !strings.Contains(err.Error(), "coupons:read") || !strings.Contains(err.Error(), "uses-coupons") {
			t.Fatalf("dropping a used scope: %v", err)
		}
		err = e.s.ImportCatalog("admin", drop(orig, "", "loyalty"))
		if err == nil || !strings.Contains(err.Error(), "loyalty") {
			t.Fatalf("dropping a used resource: %v", err)
		}
		bad := orig
		bad.Scopes = append(slices.Clone(orig.Scopes), model.Scope{Name: "Bad Name"})
		if err := e.s.ImportCatalog("admin", bad); err == nil {
			t.Fatal("invalid catalog accepted")
		}
	})
	// Dropping an unused scope and adding one is fine, and round-trips.
	next := drop(orig, "exports:read", "us-store")
	next.Scopes = append(next.Scopes, model.Scope{Name: "vouchers:read", Description: "new", PerResource: true})
	data, err := json.Marshal(next)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := model.ParseCatalog(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.ImportCatalog("admin", parsed); err != nil {
		t.Fatal(err)
	}
	ev := e.audit()[0]
	if ev.Action != model.ActCatalogImport || !strings.Contains(ev.Detail, "+vouchers:read") || !strings.Contains(ev.Detail, "-exports:read") {
		t.Fatalf("audit %+v", ev)
	}
	e.reopen()
	got := e.s.Catalog()
	if !reflect.DeepEqual(got, parsed) {
		t.Fatalf("catalog after reopen:\n%+v\nwant\n%+v", got, parsed)
	}
	out, _ := json.Marshal(got)
	if again, err := model.ParseCatalog(out); err != nil || !reflect.DeepEqual(again, got) {
		t.Fatalf("export/import round trip: %v", err)
	}
	// The new scope can be granted; the dropped one cannot.
	e.create(spec("vouchers", "vouchers:read"))
	if _, _, err := e.s.CreateKey("admin", spec("exports", "exports:read")); err == nil {
		t.Fatal("dropped scope still grantable")
	}
}
