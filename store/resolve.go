package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
// with ref (see Backend.Similar).
func (s *Store) similarKeys(ref string) []string {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil
	}
	keys, _ := s.be.Similar(context.Background(), ref, maxSuggestions)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s (%s)", k.ID, model.Sanitize(k.Name)))
	}
	return out
}

// KeyIDByName returns the id of the live key using name (compared the way
// names are kept unique: trimmed, case-insensitive). The TUI form uses it
// to flag a taken name inline, before the admin reaches the save button.
func (s *Store) KeyIDByName(name string) (string, bool) {
	id, ok, _ := s.be.NameOwner(context.Background(), name)
	return id, ok
}
