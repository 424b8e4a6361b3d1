package tui

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// openStoreWithStaleGrant opens a store holding one key, "shop", whose
// coupons:write scope on web-shop the catalog no longer allows: the
// catalog was changed behind the store's back to make coupons:write
// account-wide, as an older keyward's import could.
func openStoreWithStaleGrant(t *testing.T) (*store.Store, *model.Key) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyward.db")
	opts := store.Options{Bootstrap: "alice", DefaultCatalog: testkit.CatalogJSON(t), Now: func() time.Time { return testNow }, FlushInterval: time.Hour}
	st, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	exp := testNow.Add(day(100))
	k, _, err := st.CreateKey("alice", model.KeySpec{Name: "shop", Description: "before", Role: model.RoleEditor,
		Scopes: []string{"coupons:read", "coupons:write"}, Resources: []string{"web-shop"}, ExpiresAt: &exp, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		var c model.Catalog
		if err := json.Unmarshal(meta.Get([]byte("catalog")), &c); err != nil {
			return err
		}
		for i := range c.Scopes {
			if c.Scopes[i].Name == "coupons:write" {
				c.Scopes[i].PerResource = false
			}
		}
		data, _ := json.Marshal(c)
		return meta.Put([]byte("catalog"), data)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(path, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, k
}

// TestFormEditShowsScopeItCannotOffer: editing only the description of a
// key whose scope the catalog no longer offers for it keeps that scope.
// The form lists it, selected and marked with why, instead of dropping it
// unseen (huh keeps only values it has options for); the save keeps it.
func TestFormEditShowsScopeItCannotOffer(t *testing.T) {
	st, k := openStoreWithStaleGrant(t)
	tm := teatest.NewTestModel(t, New(newTestOptions(st, "alice")), teatest.WithInitialTermSize(100, 40))
	waitText(t, tm, "shop")
	tm.Send(keyMsg("e"))
	waitText(t, tm, "Edit shop")
	tm.Send(keyMsg("enter")) // to the description; huh moves focus in a command
	waitText(t, tm, "┃ Description")
	tm.Type(" and after")
	waitText(t, tm, "after")
	tm.Send(keyMsg("enter")) // role
	waitText(t, tm, "┃ Role")
	tm.Send(keyMsg("enter")) // resources
	waitText(t, tm, "┃ Resources")
	tm.Send(keyMsg("enter")) // scopes
	waitText(t, tm, "not per-resource, and resources are chosen")
	tm.Send(keyMsg("enter")) // expiry
	tm.Send(keyMsg("enter")) // active
	tm.Send(keyMsg("enter")) // save
	waitText(t, tm, "Saved key")
	tm.Send(tea.KeyMsg{Type: tea.KeyCtrlC})
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))

	got, err := st.Key(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Description != "before and after" {
		t.Errorf("description = %q", got.Description)
	}
	if !slices.Equal(got.Scopes, k.Scopes) || !slices.Equal(got.Resources, k.Resources) {
		t.Fatalf("the edit dropped data it did not touch: scopes %v (had %v), resources %v (had %v)",
			got.Scopes, k.Scopes, got.Resources, k.Resources)
	}
}

// TestFormRefusesScopeItCannotKeep: when the admin does change the grant
// (here: the role to READONLY), a selected scope the new grant cannot
// have stays on screen and the save is refused on the field, instead of
// the scope vanishing from the key.
func TestFormRefusesScopeItCannotKeep(t *testing.T) {
	st, clk := newTestStore(t)
	keys := seedKeys(t, st, clk)
	k := keys["ci-deploy"] // EDITOR, coupons:read + coupons:write on web-shop
	d := newDriver(t, newTestOptions(st, "alice"), 100, 40)
	d.send(pushMsg{newKeyForm(d.m.c, k)})
	f := d.m.top().(*keyForm)
	d.keys("enter", "enter", "down", "enter") // role: EDITOR -> READONLY
	if f.v.Role != model.RoleReadonly {
		t.Fatalf("role = %s", f.v.Role)
	}
	d.keys("enter") // resources -> scopes
	v := d.view()
	if !strings.Contains(v, "coupons:write") || !strings.Contains(v, "READONLY keys get :read scopes only") {
		t.Fatalf("the write scope vanished from the scopes page:\n%s", v)
	}
	if err := f.fieldErr("scopes"); err == nil || !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("fieldErr(scopes) = %v, want the READONLY refusal", err)
	}
	for i := 0; i < 8 && d.m.top() == screen(f); i++ {
		d.keys("enter")
	}
	if got, _ := st.Key(k.ID); got.Version != k.Version {
		t.Fatalf("the key was saved without its write scope: %+v", got)
	}
}

// TestFormLongNameIsRefusedNotCut: a pasted name longer than 64
// characters is kept in the field and refused there, not cut to 64.
func TestFormLongNameIsRefusedNotCut(t *testing.T) {
	st, _ := newTestStore(t)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	d.keys("n")
	f := d.m.top().(*keyForm)
	long := strings.Repeat("n", 70)
	d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(long), Paste: true})
	if f.v.Name != long {
		t.Fatalf("the pasted name was cut to %d characters", len(f.v.Name))
	}
	d.keys("enter")
	if v := d.view(); !strings.Contains(v, "name is 70 characters; the limit is 64") {
		t.Fatalf("the long name is not refused on the field:\n%s", v)
	}
}

// TestRevealSaysInactive: creating a key with Active? No says on the
// reveal screen that the new token is refused until the key is activated.
func TestRevealSaysInactive(t *testing.T) {
	st, _ := newTestStore(t)
	d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
	openNewForm(t, d, "dormant")
	d.keys("enter", "x", "enter", "enter") // resources: none; scopes: the first; expiry: 1 year
	d.keys("n")                            // Active? No
	for i := 0; i < 3; i++ {
		if _, ok := d.m.top().(*reveal); ok {
			break
		}
		d.keys("enter")
	}
	if _, ok := d.m.top().(*reveal); !ok {
		t.Fatalf("no reveal screen; top is %T:\n%s", d.m.top(), d.view())
	}
	keys := st.Keys()
	if len(keys) != 1 || keys[0].Status != model.StatusDisabled {
		t.Fatalf("keys: %+v", keys)
	}
	if v := d.view(); !strings.Contains(v, "This key is INACTIVE") {
		t.Fatalf("the reveal screen does not say the key is inactive:\n%s", v)
	}
}
