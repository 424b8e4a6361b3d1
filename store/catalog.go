package store

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// ImportCatalog replaces the catalog. It refuses to drop a scope or
// resource that a key still uses, naming the first such key.
func (s *Store) ImportCatalog(actor string, cat model.Catalog) error {
	if err := cat.Validate(); err != nil {
		return err
	}
	return s.write(actor, func(t *txn) error {
		// Checked under the writer lock, so no key can start using a scope
		// between this check and the commit.
		for _, k := range s.Keys() {
			for _, sc := range k.Scopes {
				if _, ok := cat.Scope(sc); !ok {
					return fmt.Errorf("scope %q is still granted to key %s (%s); remove it from the key first", sc, k.ID, model.Sanitize(k.Name))
				}
			}
			for _, r := range k.Resources {
				if _, ok := cat.Resource(r); !ok {
					return fmt.Errorf("resource %q is still granted to key %s (%s); remove it from the key first", r, k.ID, model.Sanitize(k.Name))
				}
			}
		}
		data, err := json.Marshal(cat)
		if err != nil {
			return err
		}
		if err := t.tx.Bucket(bMeta).Put(kCatalog, data); err != nil {
			return err
		}
		t.after = append(t.after, func() { s.catalog = cat })
		t.changes = append(t.changes, Change{Kind: CatalogChanged})
		old := s.Catalog()
		return t.audit(model.ActCatalogImport, "catalog", catalogDiff(old, cat))
	})
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
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}
