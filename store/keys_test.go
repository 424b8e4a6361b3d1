package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// keyIDRE is the shape of a key id: "key_" and 12 lowercase base32 characters.
var keyIDRE = regexp.MustCompile(`^key_[a-z2-7]{12}$`)

// TestOpenPermissions is about the file, its directory and the master key
// beside it (bbolt only).
func TestOpenPermissions(t *testing.T) {
	e := newBoltEnv(t)
	for _, dir := range []string{filepath.Dir(e.path)} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("dir %s mode %o, want 0700", dir, fi.Mode().Perm())
		}
	}
	fi, err := os.Stat(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("db mode %o, want 0600", fi.Mode().Perm())
	}
	// The large initial mmap reserves address space, not file size.
	if fi.Size() > 1<<20 {
		t.Errorf("a new database file is %d bytes", fi.Size())
	}
	if _, err := os.Stat(store.MasterKeyPath(e.path)); !os.IsNotExist(err) {
		t.Fatalf("master key file exists before any secret: %v", err)
	}
	if _, _, err := e.s.RevealSecret("admin"); err != nil {
		t.Fatal(err)
	}
	fi, err = os.Stat(store.MasterKeyPath(e.path))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("master key mode %o, want 0600", fi.Mode().Perm())
	}
	// A new database has the bootstrap ADMIN and the demo catalog.
	ops := e.s.Operators()
	if len(ops) != 1 || ops[0].Name != "admin" || ops[0].Role != model.OperatorAdmin {
		t.Fatalf("operators %+v", ops)
	}
	if _, ok := func() (model.Scope, bool) { c := e.s.Catalog(); return c.Scope("coupons:read") }(); !ok {
		t.Fatal("demo catalog not loaded")
	}
}

func lastEvent(t *testing.T, e *env) model.AuditEvent {
	t.Helper()
	evs := e.audit()
	if len(evs) == 0 {
		t.Fatal("no audit events")
	}
	return evs[0]
}

func checkEvent(t *testing.T, ev model.AuditEvent, action, target string, secrets ...string) {
	t.Helper()
	if ev.Actor != "admin" || ev.Action != action || ev.Target != target {
		t.Fatalf("audit event %+v, want admin/%s/%s", ev, action, target)
	}
	for _, s := range secrets {
		if strings.Contains(ev.Detail, s) {
			t.Fatalf("audit detail %q holds a secret", ev.Detail)
		}
	}
}

func tokenBody(tok string) string { return tok[len(model.DefaultPrefix):] }

func TestKeyLifecycle(t *testing.T) {
	e := newEnv(t)
	exp := e.clock.Now().Add(30 * 24 * time.Hour)
	sp := spec("ci-bot", "coupons:read", "coupons:write")
	sp.Description, sp.Resources, sp.ExpiresAt = "pipeline", []string{"web-shop"}, &exp

	// Create.
	k, tok := e.create(sp)
	if !keyIDRE.MatchString(k.ID) || k.Version != 1 || k.CreatedBy != "admin" || !k.Active() || k.Hint != tok[:len(k.Hint)] {
		t.Fatalf("created %+v", k)
	}
	if !k.CreatedAt.Equal(e.clock.Now()) || k.LastUsedAt != nil {
		t.Fatalf("created at %v, last used %v", k.CreatedAt, k.LastUsedAt)
	}
	checkEvent(t, lastEvent(t, e), model.ActKeyCreate, k.ID, tok, tokenBody(tok))
	e.wantCode(tok, "coupons:write", "web-shop", model.CodeValid)
	e.reopen()
	got, err := e.s.Key(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, k, got)
	e.wantCode(tok, "coupons:write", "web-shop", model.CodeValid)

	// Edit.
	e.clock.Advance(time.Minute)
	sp2 := model.SpecOf(got)
	sp2.Name, sp2.Description, sp2.Scopes = "ci-bot-2", "renamed", []string{"coupons:read"}
	k2, err := e.s.EditKey("admin", k.ID, got.Version, sp2)
	if err != nil {
		t.Fatal(err)
	}
	if k2.Version != 2 || k2.Name != "ci-bot-2" || !k2.UpdatedAt.Equal(e.clock.Now()) || !k2.CreatedAt.Equal(k.CreatedAt) {
		t.Fatalf("edited %+v", k2)
	}
	ev := lastEvent(t, e)
	checkEvent(t, ev, model.ActKeyEdit, k.ID, tok)
	if !strings.Contains(ev.Detail, "ci-bot-2") || !strings.Contains(ev.Detail, "-coupons:write") {
		t.Fatalf("edit detail %q does not say what changed", ev.Detail)
	}
	e.wantCode(tok, "coupons:write", "web-shop", model.CodeInsufficientScope)
	e.reopen()
	got, _ = e.s.Key(k.ID)
	sameKey(t, k2, got)

	// Stale edit: conflict, nothing written.
	e.unchanged("stale edit", func() {
		sp3 := sp2
		sp3.Name = "other"
		_, err := e.s.EditKey("admin", k.ID, 1, sp3)
		isErr(t, err, store.ErrConflict)
	})
	// An edit that changes nothing writes nothing and still returns the key.
	e.unchanged("no-op edit", func() {
		k3, err := e.s.EditKey("admin", k.ID, 2, sp2)
		if err != nil || k3 == nil || k3.Version != 2 {
			t.Fatalf("no-op edit: %+v %v", k3, err)
		}
	})

	// Disable and enable.
	kd, err := e.s.SetKeyActive("admin", k.ID, false)
	if err != nil || kd.Version != 3 || kd.Active() {
		t.Fatalf("disable: %+v %v", kd, err)
	}
	checkEvent(t, lastEvent(t, e), model.ActKeyDisable, k.ID)
	e.wantCode(tok, "", "", model.CodeDisabled)
	e.unchanged("disable again", func() {
		if k, err := e.s.SetKeyActive("admin", k.ID, false); err != nil || k == nil || k.Version != 3 {
			t.Fatalf("second disable: %+v %v", k, err)
		}
	})
	e.reopen()
	e.wantCode(tok, "", "", model.CodeDisabled)
	ke, err := e.s.SetKeyActive("admin", k.ID, true)
	if err != nil || ke.Version != 4 || !ke.Active() {
		t.Fatalf("enable: %+v %v", ke, err)
	}
	checkEvent(t, lastEvent(t, e), model.ActKeyEnable, k.ID)
	e.wantCode(tok, "", "", model.CodeValid)
	e.reopen()
	got, _ = e.s.Key(k.ID)
	sameKey(t, ke, got)

	// Regenerate without grace: the old token dies at once.
	kr, tok2, err := e.s.RegenerateKey("admin", k.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if kr.Version != 5 || tok2 == tok || kr.Hint != tok2[:len(kr.Hint)] || kr.GraceUntil != nil {
		t.Fatalf("regenerated %+v", kr)
	}
	checkEvent(t, lastEvent(t, e), model.ActKeyRegenerate, k.ID, tok, tok2, tokenBody(tok2))
	e.wantCode(tok, "", "", model.CodeNotFound)
	e.wantCode(tok2, "coupons:read", "web-shop", model.CodeValid)
	e.reopen()
	e.wantCode(tok, "", "", model.CodeNotFound)
	e.wantCode(tok2, "coupons:read", "web-shop", model.CodeValid)
	got, _ = e.s.Key(k.ID)
	sameKey(t, kr, got)

	// Delete.
	if err := e.s.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, lastEvent(t, e), model.ActKeyDelete, k.ID)
	e.wantCode(tok2, "", "", model.CodeNotFound)
	if _, err := e.s.Key(k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Key after delete: %v", err)
	}
	e.reopen()
	if _, err := e.s.Key(k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Key after delete and reopen: %v", err)
	}
	e.wantCode(tok2, "", "", model.CodeNotFound)
	if e.s.KeyCount() != 0 || len(e.s.Keys()) != 0 {
		t.Fatal("keys remain")
	}
	// Operations on a missing key say so.
	if _, err := e.s.SetKeyActive("admin", k.ID, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetKeyActive on deleted: %v", err)
	}
	if err := e.s.DeleteKey("admin", k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteKey twice: %v", err)
	}
	if _, _, err := e.s.RegenerateKey("admin", k.ID, 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Regenerate deleted: %v", err)
	}
}

func TestNameUniqueness(t *testing.T) {
	e := newEnv(t)
	a, _ := e.create(spec("Alpha"))
	for _, name := range []string{"Alpha", "alpha", "  ALPHA  "} {
		e.unchanged("duplicate "+name, func() {
			_, _, err := e.s.CreateKey("admin", spec(name))
			isErr(t, err, store.ErrNameTaken)
			var fe *model.FieldError
			if !errors.As(err, &fe) || fe.Field != "name" {
				t.Fatalf("not a name FieldError: %v", err)
			}
		})
	}
	b, _ := e.create(spec("Beta"))
	// Rename onto another key's name (any case) is refused.
	sp := model.SpecOf(b)
	sp.Name = "ALPHA"
	if _, err := e.s.EditKey("admin", b.ID, b.Version, sp); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("rename onto Alpha: %v", err)
	}
	// Renaming a key to a case variant of its own name is fine.
	sp = model.SpecOf(a)
	sp.Name = "ALPHA"
	a2, err := e.s.EditKey("admin", a.ID, a.Version, sp)
	if err != nil {
		t.Fatal(err)
	}
	// Rename frees the old name and takes the new one.
	sp = model.SpecOf(a2)
	sp.Name = "Gamma"
	if _, err := e.s.EditKey("admin", a.ID, a2.Version, sp); err != nil {
		t.Fatal(err)
	}
	e.create(spec("alpha"))
	if _, _, err := e.s.CreateKey("admin", spec("gamma")); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("gamma after rename: %v", err)
	}
	e.reopen()
	if _, _, err := e.s.CreateKey("admin", spec("GAMMA")); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("gamma after reopen: %v", err)
	}
	// Delete frees the name.
	if err := e.s.DeleteKey("admin", b.ID); err != nil {
		t.Fatal(err)
	}
	e.create(spec("beta"))
	// Import refuses duplicates within itself and against live keys.
	if _, _, err := e.s.ImportKeys("admin", []model.KeySpec{spec("n1"), spec("N1")}); err == nil {
		t.Fatal("import with internal duplicate accepted")
	}
	if _, _, err := e.s.ImportKeys("admin", []model.KeySpec{spec("n2"), spec("beta")}); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("import onto a live name: %v", err)
	}
	if e.s.KeyCount() != 3 {
		t.Fatalf("a refused import wrote keys: %d", e.s.KeyCount())
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	e := newEnv(t)
	k, _ := e.create(spec("base"))
	past := e.clock.Now().Add(-time.Hour)
	bad := map[string]model.KeySpec{
		"empty name":     spec(""),
		"65 chars":       spec(strings.Repeat("x", 65)),
		"escape":         spec("x\x1b[2J"),
		"osc52":          spec("x\x1b]52;c;QUJD\x07"),
		"unknown scope":  spec("x", "coupons:delete"),
		"past expiry":    {Name: "x", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, ExpiresAt: &past},
		"readonly write": {Name: "x", Role: model.RoleReadonly, Scopes: []string{"coupons:write"}},
	}
	for name, sp := range bad {
		e.unchanged(name, func() {
			if _, _, err := e.s.CreateKey("admin", sp); err == nil {
				t.Fatalf("%s: accepted", name)
			} else if fe := (*model.FieldError)(nil); !errors.As(err, &fe) {
				t.Fatalf("%s: %v is not a FieldError", name, err)
			}
			if _, err := e.s.EditKey("admin", k.ID, k.Version, sp); err == nil {
				t.Fatalf("%s: edit accepted", name)
			}
			if _, _, err := e.s.ImportKeys("admin", []model.KeySpec{spec("fine"), sp}); err == nil {
				t.Fatalf("%s: import accepted", name)
			}
		})
	}
	e.unchanged("bad grace", func() {
		if _, _, err := e.s.RegenerateKey("admin", k.ID, -time.Hour); err == nil {
			t.Fatal("negative grace accepted")
		}
	})
	if e.s.KeyCount() != 1 {
		t.Fatal("bad input created keys")
	}
}

func TestEditKeepsPassedExpiry(t *testing.T) {
	e := newEnv(t)
	exp := e.clock.Now().Add(time.Hour)
	sp := spec("soon")
	sp.ExpiresAt = &exp
	k, tok := e.create(sp)
	e.clock.Advance(2 * time.Hour)
	e.wantCode(tok, "", "", model.CodeExpired)
	// Editing the description of an expired key keeps its expiry.
	sp2 := model.SpecOf(k)
	sp2.Description = "still expired"
	if _, err := e.s.EditKey("admin", k.ID, k.Version, sp2); err != nil {
		t.Fatal(err)
	}
	// Moving the expiry to another past date is refused.
	p := e.clock.Now().Add(-time.Minute)
	sp2.ExpiresAt = &p
	if _, err := e.s.EditKey("admin", k.ID, k.Version+1, sp2); err == nil {
		t.Fatal("new past expiry accepted")
	}
	// Extending it revives the key.
	f := e.clock.Now().Add(time.Hour)
	sp2.ExpiresAt = &f
	if _, err := e.s.EditKey("admin", k.ID, k.Version+1, sp2); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok, "", "", model.CodeValid)
}

func TestImportKeys(t *testing.T) {
	e := newEnv(t)
	specs := []model.KeySpec{spec("  one  "), spec("two"), {Name: "three", Role: model.RoleAdmin, Active: false}}
	keys, toks, err := e.s.ImportKeys("admin", specs)
	if err != nil {
		t.Fatal(err)
	}
	if specs[0].Name != "  one  " {
		t.Fatal("ImportKeys modified the caller's specs")
	}
	if len(keys) != 3 || len(toks) != 3 || keys[0].Name != "one" || keys[2].Active() {
		t.Fatalf("imported %+v", keys)
	}
	e.reopen()
	for i, k := range keys {
		got, err := e.s.Key(k.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameKey(t, k, got)
		want := model.CodeValid
		if i == 2 {
			want = model.CodeDisabled
		}
		e.wantCode(toks[i], "coupons:read", "", want)
	}
	if n := len(e.audit()); n != 1+3 {
		t.Fatalf("%d audit events, want bootstrap + 3", n)
	}
}
