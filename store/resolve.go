package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// maxSuggestions bounds the "did you mean" list of a failed lookup.
const maxSuggestions = 3

// ResolveKey returns the key that ref names: its id, else the name of a
// live key (names are unique, compared as KeyIDByName does). Otherwise
// the error wraps ErrNotFound and suggests up to three keys whose id or
// name starts with ref.
func (s *Store) ResolveKey(ref string) (*model.Key, error) {
	k, err := s.Key(ref)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return k, err
	}
	if id, ok := s.KeyIDByName(ref); ok {
		return s.Key(id)
	}
	hint := " (keyward keys list shows every key)"
	if sug := s.similarKeys(ref); len(sug) > 0 {
		hint = "; did you mean " + strings.Join(sug, " or ") + "?"
	}
	return nil, &notFound{fmt.Sprintf("no key with id or name %q%s", model.Sanitize(ref), hint)}
}

// notFound is an ErrNotFound with a message of its own.
type notFound struct{ msg string }

func (e *notFound) Error() string { return e.msg }
func (e *notFound) Unwrap() error { return ErrNotFound }

// similarKeys lists keys ("key_… (name)") whose id or folded name starts
// with ref, reading the id and name indexes from ref on: a few page reads
// whatever the key count.
func (s *Store) similarKeys(ref string) []string {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	_ = s.db.View(func(tx *bolt.Tx) error {
		add := func(id []byte) {
			if len(out) >= maxSuggestions || seen[string(id)] {
				return
			}
			seen[string(id)] = true
			if k, err := readKey(tx, string(id)); err == nil {
				out = append(out, fmt.Sprintf("%s (%s)", k.ID, model.Sanitize(k.Name)))
			}
		}
		p := []byte(ref)
		c := tx.Bucket(bKeys).Cursor()
		for id, _ := c.Seek(p); id != nil && bytes.HasPrefix(id, p) && len(out) < maxSuggestions; id, _ = c.Next() {
			add(id)
		}
		if nb := tx.Bucket(bNames); s.indexed && nb != nil {
			p = []byte(foldName(ref))
			c = nb.Cursor()
			for name, id := c.Seek(p); name != nil && bytes.HasPrefix(name, p) && len(out) < maxSuggestions; name, id = c.Next() {
				add(id)
			}
		}
		return nil
	})
	return out
}

// KeyIDByName returns the id of the live key using name (compared the way
// names are kept unique: trimmed, case-insensitive). The TUI form uses it
// to flag a taken name inline, before the admin reaches the save button.
//
// It reads the names bucket. A read-only schema 1 file has none (it could
// not be migrated): every key is read instead; that file refuses
// every save anyway.
func (s *Store) KeyIDByName(name string) (string, bool) {
	if !s.indexed {
		return s.scanName(name)
	}
	var id string
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		id, ok = nameOwner(tx, name)
		return nil
	})
	return id, ok
}

// scanName finds the key whose name folds like name, reading every key.
func (s *Store) scanName(name string) (string, bool) {
	f := foldName(name)
	var id string
	_ = s.db.View(func(tx *bolt.Tx) error {
		return readAllKeys(tx, func(k *model.Key) {
			if id == "" && foldName(k.Name) == f {
				id = k.ID
			}
		})
	})
	return id, id != ""
}
