package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/keyward/keyward/model"
)

// maxImportProblems bounds how many keys an import refusal names.
const maxImportProblems = 10

// ImportCatalog replaces the catalog. It refuses a catalog that would
// leave any live key invalid: a scope or resource it uses dropped, or a
// scope it uses on chosen resources no longer per-resource. Every key is
// checked in the import's own write transaction, so no key can change in
// between; the refusal names the keys (up to 10) and what they use.
func (s *Store) ImportCatalog(actor string, cat model.Catalog) error {
	if err := cat.Validate(); err != nil {
		return err
	}
	return s.write(actor, func(t *txn) error {
		rev, err := s.keysFitCatalog(&cat)
		if err != nil {
			return err
		}
		t.w.KeysAt = rev
		data, err := json.Marshal(cat)
		if err != nil {
			return err
		}
		t.setMeta(MetaCatalog, data)
		t.after = append(t.after, func() { s.catalog = cat })
		t.changes = append(t.changes, Change{Kind: CatalogChanged})
		old := s.Catalog()
		return t.audit(model.ActCatalogImport, "catalog", catalogDiff(old, cat))
	})
}

// keysFitCatalog checks every key against cat. Keys share a few grants,
// so each distinct grant is judged once. The caller holds the writer
// lock: no key changes meanwhile.
func (s *Store) keysFitCatalog(cat *model.Catalog) (Rev, error) {
	verdicts := map[string]string{}
	var problems []string
	bad := 0
	rev, err := s.be.Keys(context.Background(), func(k *model.Key) {
		g := string(k.Role) + "\x00" + strings.Join(k.Scopes, ",") + "\x00" + strings.Join(k.Resources, ",")
		why, seen := verdicts[g]
		if !seen {
			why = grantProblem(k, cat)
			verdicts[g] = why
		}
		if why == "" {
			return
		}
		bad++
		if len(problems) < maxImportProblems {
			problems = append(problems, fmt.Sprintf("key %s (%s) %s", k.ID, model.Sanitize(k.Name), why))
		}
	})
	if err != nil {
		return 0, err
	}
	if bad == 0 {
		return rev, nil
	}
	if bad > len(problems) {
		problems = append(problems, fmt.Sprintf("and %d more", bad-len(problems)))
	}
	return 0, fmt.Errorf("catalog not imported: it would leave %s invalid: %s. Edit or delete those keys first, or keep what they use in the catalog",
		model.Count(bad, "key", ""), strings.Join(problems, "; "))
}

// grantProblem says what of k's grant cat does not allow ("" if nothing).
func grantProblem(k *model.Key, cat *model.Catalog) string {
	if k.Role == model.RoleAdmin && len(k.Scopes) == 0 && len(k.Resources) == 0 {
		return ""
	}
	for _, r := range k.Resources {
		if _, ok := cat.Resource(r); !ok {
			return fmt.Sprintf("uses resource %q, which the new catalog lacks", model.Sanitize(r))
		}
	}
	for _, name := range k.Scopes {
		sc, ok := cat.Scope(name)
		if !ok {
			return fmt.Sprintf("uses scope %q, which the new catalog lacks", model.Sanitize(name))
		}
		if len(k.Resources) > 0 && !sc.PerResource {
			return fmt.Sprintf("uses scope %q on resources %s, and the new catalog makes it not per-resource",
				name, strings.Join(k.Resources, ","))
		}
	}
	if err := model.ValidateGrant(k.Role, k.Scopes, k.Resources, cat); err != nil {
		return "has an invalid grant: " + err.Error()
	}
	return ""
}

func catalogDiff(a, b model.Catalog) string {
	name := func(sc model.Scope) string { return sc.Name }
	id := func(r model.Resource) string { return r.ID }
	var as, bs, ar, br []string
	for _, x := range a.Scopes {
		as = append(as, name(x))
	}
	for _, x := range b.Scopes {
		bs = append(bs, name(x))
	}
	for _, x := range a.Resources {
		ar = append(ar, id(x))
	}
	for _, x := range b.Resources {
		br = append(br, id(x))
	}
	parts := []string{model.Count(len(bs), "scope", "") + ", " + model.Count(len(br), "resource", "")}
	if d := listDiff("scopes", as, bs); d != "" {
		parts = append(parts, d)
	}
	if d := listDiff("resources", ar, br); d != "" {
		parts = append(parts, d)
	}
	return strings.Join(parts, "; ")
}

// Backup writes a consistent copy of the database to w (after flushing
// buffered last-used data). The copy holds hashes only; the shared secret
// in it cannot be read without the master key file.
func (s *Store) Backup(w io.Writer) (int64, error) {
	if err := s.FlushLastUsed(); err != nil {
		return 0, err
	}
	return s.be.Backup(w, nil)
}

func listDiff(label string, a, b []string) string {
	var add, del []string
	for _, x := range b {
		if !slices.Contains(a, x) {
			add = append(add, "+"+x)
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			del = append(del, "-"+x)
		}
	}
	if len(add)+len(del) == 0 {
		return ""
	}
	return label + " " + strings.Join(append(add, del...), " ")
}
