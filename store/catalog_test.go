package store_test

import (
	"encoding/json"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// withScope returns cat with scope name's per_resource flag set to per.
func withScope(cat model.Catalog, name string, per bool) model.Catalog {
	out := model.Catalog{Scopes: append([]model.Scope(nil), cat.Scopes...), Resources: cat.Resources}
	for i := range out.Scopes {
		if out.Scopes[i].Name == name {
			out.Scopes[i].PerResource = per
		}
	}
	return out
}

// TestImportCatalogKeepsEveryKeyValid: an import that would leave a live
// key invalid is refused whole, naming the keys and what they use. Here:
// coupons:read stops being per-resource while keys use it on resources,
// and an empty catalog.
func TestImportCatalogKeepsEveryKeyValid(t *testing.T) {
	e := newEnv(t)
	cat := e.s.Catalog()
	shop := spec("shop", "coupons:read")
	shop.Resources = []string{"web-shop"}
	k1, _ := e.create(shop)
	app := spec("app", "coupons:read", "coupons:write")
	app.Resources = []string{"mobile-app"}
	k2, _ := e.create(app)
	e.create(spec("account-wide", "coupons:read")) // fine either way

	e.unchanged("flip per_resource", func() {
		err := e.s.ImportCatalog("admin", withScope(cat, "coupons:read", false))
		if err == nil {
			t.Fatal("import making coupons:read account-wide was accepted while keys use it on resources")
		}
		for _, want := range []string{"leave 2 keys invalid", k1.ID, "shop", k2.ID, "app", "coupons:read", "web-shop"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal lacks %q: %v", want, err)
			}
		}
	})
	e.unchanged("empty catalog", func() {
		if err := e.s.ImportCatalog("admin", model.Catalog{}); err == nil || !strings.Contains(err.Error(), "no scopes") {
			t.Fatalf("empty catalog: %v", err)
		}
	})
	// Flipping a scope no key uses on resources is fine.
	if err := e.s.ImportCatalog("admin", withScope(cat, "campaigns:read", false)); err != nil {
		t.Fatal(err)
	}
}

// TestEditKeepsUntouchedGrant: a key whose grant the catalog no longer
// allows (written by an older keyward, which accepted such imports) can
// still have its description edited; the edit keeps its scopes. Changing
// the grant is still checked in full.
//
// bbolt only: it writes an old keyward's record into the file itself.
func TestEditKeepsUntouchedGrant(t *testing.T) {
	e := newBoltEnv(t)
	shop := spec("shop", "coupons:read", "coupons:write")
	shop.Resources = []string{"web-shop"}
	k, _ := e.create(shop)

	// Make coupons:write account-wide behind the store's back, as an old
	// import could.
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	db, err := bolt.Open(e.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		var cat model.Catalog
		if err := json.Unmarshal(tx.Bucket([]byte("meta")).Get([]byte("catalog")), &cat); err != nil {
			return err
		}
		data, _ := json.Marshal(withScope(cat, "coupons:write", false))
		return tx.Bucket([]byte("meta")).Put([]byte("catalog"), data)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	e.open()

	next := model.SpecOf(k)
	next.Description = "only the description"
	got, err := e.s.EditKey("admin", k.ID, k.Version, next)
	if err != nil {
		t.Fatalf("editing only the description: %v", err)
	}
	if got.Description != next.Description || len(got.Scopes) != 2 || len(got.Resources) != 1 {
		t.Fatalf("edit changed the grant: %+v", got)
	}
	// A changed grant is judged against the catalog.
	next = model.SpecOf(got)
	next.Scopes = []string{"coupons:write"}
	if _, err := e.s.EditKey("admin", k.ID, got.Version, next); err == nil || !strings.Contains(err.Error(), "per resource") {
		t.Fatalf("changing the grant to an invalid one: %v", err)
	}
}
