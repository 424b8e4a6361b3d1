package store_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// newSSHKey is a fresh ed25519 public key: its authorized_keys line
// (with a newline) and its wire form.
func newSSHKey(t testing.TB) (string, []byte) {
	t.Helper()
	k := testkit.NewSSHKey(t)
	return k.Line + "\n", k.Signer.PublicKey().Marshal()
}

func TestRBAC(t *testing.T) {
	e := newEnv(t)
	if _, err := e.s.AddOperator("admin", "viewer", model.OperatorReadonly, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.AddOperator("admin", "ghost", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SetOperatorDisabled("admin", "ghost", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.AddOperator("admin", "target", model.OperatorReadonly, nil); err != nil {
		t.Fatal(err)
	}
	k, _ := e.create(spec("victim"))
	line, _ := newSSHKey(t)
	cat := e.s.Catalog()

	calls := map[string]func(actor string) error{
		"CreateKey": func(a string) error { _, _, err := e.s.CreateKey(a, spec("new")); return err },
		"CreateKey invalid": func(a string) error {
			_, _, err := e.s.CreateKey(a, spec("victim"))
			return err
		},
		"EditKey": func(a string) error {
			sp := model.SpecOf(k)
			sp.Name = "renamed"
			_, err := e.s.EditKey(a, k.ID, k.Version, sp)
			return err
		},
		"SetKeyActive":  func(a string) error { _, err := e.s.SetKeyActive(a, k.ID, false); return err },
		"RegenerateKey": func(a string) error { _, _, err := e.s.RegenerateKey(a, k.ID, time.Hour); return err },
		"DeleteKey":     func(a string) error { return e.s.DeleteKey(a, k.ID) },
		"ImportKeys":    func(a string) error { _, _, err := e.s.ImportKeys(a, []model.KeySpec{spec("i1")}); return err },
		"AddOperator": func(a string) error {
			_, err := e.s.AddOperator(a, "eve", model.OperatorAdmin, []string{line})
			return err
		},
		"SetOperatorDisabled": func(a string) error { _, err := e.s.SetOperatorDisabled(a, "target", true); return err },
		"SetOperatorRole":     func(a string) error { _, err := e.s.SetOperatorRole(a, "target", model.OperatorAdmin); return err },
		"DeleteOperator":      func(a string) error { return e.s.DeleteOperator(a, "target") },
		"RevealSecret":        func(a string) error { _, _, err := e.s.RevealSecret(a); return err },
		"RotateSecret":        func(a string) error { _, _, err := e.s.RotateSecret(a, 0); return err },
		"ImportCatalog":       func(a string) error { return e.s.ImportCatalog(a, cat) },
	}
	for _, actor := range []string{"viewer", "ghost", "nobody", "", "ADMIN"} {
		for name, call := range calls {
			e.unchanged(actor+" "+name, func() {
				err := call(actor)
				if !errors.Is(err, store.ErrForbidden) {
					t.Fatalf("%s as %q: got %v, want ErrForbidden", name, actor, err)
				}
			})
		}
	}
	if _, err := os.Stat(e.masterKeyPath()); !os.IsNotExist(err) {
		t.Fatal("a refused RevealSecret created the master key file")
	}
	// The same calls succeed for the active ADMIN (so the test above is
	// not passing for some other reason).
	for _, name := range []string{"EditKey", "RevealSecret", "SetOperatorRole", "ImportCatalog", "DeleteKey"} {
		if err := calls[name]("admin"); err != nil {
			t.Fatalf("%s as admin: %v", name, err)
		}
	}
}

func TestLastAdmin(t *testing.T) {
	e := newEnv(t)
	e.unchanged("last admin", func() {
		_, err := e.s.SetOperatorDisabled("admin", "admin", true)
		isErr(t, err, store.ErrLastAdmin)
		_, err = e.s.SetOperatorRole("admin", "admin", model.OperatorReadonly)
		isErr(t, err, store.ErrLastAdmin)
		isErr(t, e.s.DeleteOperator("admin", "admin"), store.ErrLastAdmin)
	})
	// A disabled second ADMIN does not count.
	if _, err := e.s.AddOperator("admin", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SetOperatorDisabled("admin", "bob", true); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.SetOperatorRole("admin", "admin", model.OperatorReadonly)
	isErr(t, err, store.ErrLastAdmin)
	// With bob active, admin may not step down itself (it could not undo
	// it: ErrSelf), but bob may demote it; then bob is the last.
	if _, err := e.s.SetOperatorDisabled("admin", "bob", false); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.SetOperatorRole("admin", "admin", model.OperatorReadonly)
	isErr(t, err, store.ErrSelf)
	if _, err := e.s.SetOperatorRole("bob", "admin", model.OperatorReadonly); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.SetOperatorDisabled("bob", "bob", true)
	isErr(t, err, store.ErrLastAdmin)
	isErr(t, e.s.DeleteOperator("bob", "bob"), store.ErrLastAdmin)
	// admin is READONLY now and may not undo it itself.
	_, err = e.s.SetOperatorRole("admin", "admin", model.OperatorAdmin)
	isErr(t, err, store.ErrForbidden)
	e.reopen()
	op, err := e.s.Operator("admin")
	if err != nil || op.Role != model.OperatorReadonly {
		t.Fatalf("after reopen: %+v %v", op, err)
	}
	// A READONLY operator can be deleted even when only one ADMIN remains.
	if err := e.s.DeleteOperator("bob", "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Operator("admin"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted operator: %v", err)
	}
}

func TestCreatorDisabled(t *testing.T) {
	e := newEnv(t)
	if _, err := e.s.AddOperator("admin", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	k, tok, err := e.s.CreateKey("bob", spec("bobs-key"))
	if err != nil {
		t.Fatal(err)
	}
	if k.CreatedBy != "bob" {
		t.Fatalf("created by %q", k.CreatedBy)
	}
	e.wantCode(tok, "coupons:read", "", model.CodeValid)
	if _, err := e.s.SetOperatorDisabled("admin", "bob", true); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok, "coupons:read", "", model.CodeCreatorDisabled)
	e.reopen()
	e.wantCode(tok, "coupons:read", "", model.CodeCreatorDisabled)
	if _, err := e.s.SetOperatorDisabled("admin", "bob", false); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok, "coupons:read", "", model.CodeValid)
	if err := e.s.DeleteOperator("admin", "bob"); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok, "coupons:read", "", model.CodeCreatorDisabled)
	e.reopen()
	e.wantCode(tok, "coupons:read", "", model.CodeCreatorDisabled)
	// A new operator who happens to take the deleted one's name is another
	// account: it must not bring the old operator's keys back to life.
	e.clock.Advance(time.Minute)
	if _, err := e.s.AddOperator("admin", "bob", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok, "coupons:read", "", model.CodeCreatorDisabled)
	// A key disabled as well reports DISABLED first.
	if _, err := e.s.SetKeyActive("admin", k.ID, false); err != nil {
		t.Fatal(err)
	}
	e.wantCode(tok, "coupons:read", "", model.CodeDisabled)
}

func TestOperatorKeys(t *testing.T) {
	e := newEnv(t)
	line, blob := newSSHKey(t)
	op, err := e.s.AddOperator("admin", "carol", model.OperatorReadonly, []string{line})
	if err != nil {
		t.Fatal(err)
	}
	if len(op.PublicKeys) != 1 {
		t.Fatalf("%+v", op)
	}
	ev := e.audit()[0]
	if ev.Action != model.ActOperatorAdd || ev.Target != "carol" {
		t.Fatalf("audit %+v", ev)
	}
	got, ok := e.s.OperatorByKey(blob)
	if !ok || got.Name != "carol" {
		t.Fatalf("OperatorByKey: %+v %v", got, ok)
	}
	other, otherBlob := newSSHKey(t)
	if _, ok := e.s.OperatorByKey(otherBlob); ok {
		t.Fatal("unknown key matched")
	}
	if _, err := e.s.SetOperatorDisabled("admin", "carol", true); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.s.OperatorByKey(blob); ok {
		t.Fatal("disabled operator returned by OperatorByKey")
	}
	// The key stays carol's while she is disabled: nobody else may claim it.
	e.unchanged("steal key", func() {
		if _, err := e.s.AddOperator("admin", "mallory", model.OperatorAdmin, []string{line}); err == nil {
			t.Fatal("a disabled operator's key was registered again")
		}
	})
	e.unchanged("bad operator input", func() {
		for _, bad := range []struct {
			name string
			role model.OperatorRole
			keys []string
		}{
			{"Bad Name", model.OperatorAdmin, nil},
			{"dave", "ROOT", nil},
			{"dave", model.OperatorAdmin, []string{"ssh-ed25519 AAAA"}},
			{"carol", model.OperatorAdmin, nil},
		} {
			if _, err := e.s.AddOperator("admin", bad.name, bad.role, bad.keys); err == nil {
				t.Fatalf("accepted %+v", bad)
			}
		}
	})
	if _, err := e.s.AddOperator("admin", "dave", model.OperatorAdmin, []string{other}); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if got, ok := e.s.OperatorByKey(otherBlob); !ok || got.Name != "dave" {
		t.Fatal("operator key lost on reopen")
	}
	if err := e.s.RecordLogin("dave", "10.0.0.1:5555"); err != nil {
		t.Fatal(err)
	}
	if op, _ := e.s.Operator("dave"); op.LastLoginAt == nil {
		t.Fatal("login not recorded")
	}
}
