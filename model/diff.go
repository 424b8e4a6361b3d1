package model

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// KeyField names a field of a key that people edit or see change.
type KeyField string

// The fields DiffKeys compares, in the order it reports them.
const (
	FieldName        KeyField = "name"
	FieldDescription KeyField = "description"
	FieldRole        KeyField = "role"
	FieldScopes      KeyField = "scopes"
	FieldResources   KeyField = "resources"
	FieldExpires     KeyField = "expires"
	FieldStatus      KeyField = "status"
	FieldSecret      KeyField = "secret" // the hint changed: the secret was regenerated
)

// KeyChange is one field that differs between two versions of a key.
// For the list fields (scopes, resources) Added and Removed say how:
// what the new version has that the old lacks, and the reverse.
type KeyChange struct {
	Field          KeyField
	Added, Removed []string
}

// DiffKeys returns the fields that differ between versions a and b of a
// key, in the order of the KeyField constants. Expiries compare as
// instants; lists compare as sets and as sequences (a reordered list is a
// change with nothing added or removed). It is the one key diff: the audit
// log (AuditDiff) and the TUI's conflict banner both read it.
func DiffKeys(a, b *Key) []KeyChange {
	var out []KeyChange
	add := func(f KeyField, differs bool) {
		if differs {
			out = append(out, KeyChange{Field: f})
		}
	}
	add(FieldName, a.Name != b.Name)
	add(FieldDescription, a.Description != b.Description)
	add(FieldRole, a.Role != b.Role)
	for _, l := range []struct {
		f    KeyField
		a, b []string
	}{{FieldScopes, a.Scopes, b.Scopes}, {FieldResources, a.Resources, b.Resources}} {
		if !slices.Equal(l.a, l.b) {
			out = append(out, KeyChange{Field: l.f, Added: missing(l.b, l.a), Removed: missing(l.a, l.b)})
		}
	}
	add(FieldExpires, !sameInstant(a.ExpiresAt, b.ExpiresAt))
	add(FieldStatus, a.Status != b.Status)
	add(FieldSecret, a.Hint != b.Hint)
	return out
}

// missing returns the elements of xs not in ys, in xs's order.
func missing(xs, ys []string) []string {
	var out []string
	for _, x := range xs {
		if !slices.Contains(ys, x) {
			out = append(out, x)
		}
	}
	return out
}

func sameInstant(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// AuditDiff says what an edit from a to b changed, in the audit log's
// words ("name "a" -> "b"; scopes +x -y"); "" if nothing an edit sets
// changed. A reordered list is no change here, and the secret is not an
// edit (regenerating is its own audit event).
func AuditDiff(a, b *Key) string {
	var parts []string
	for _, c := range DiffKeys(a, b) {
		switch c.Field {
		case FieldName:
			parts = append(parts, fmt.Sprintf("name %q -> %q", a.Name, b.Name))
		case FieldDescription:
			parts = append(parts, "description changed")
		case FieldRole:
			parts = append(parts, fmt.Sprintf("role %s -> %s", a.Role, b.Role))
		case FieldScopes, FieldResources:
			if len(c.Added)+len(c.Removed) > 0 {
				parts = append(parts, string(c.Field)+" "+strings.Join(listChange(c), " "))
			}
		case FieldExpires:
			parts = append(parts, fmt.Sprintf("expires %s -> %s", FormatTime(a.ExpiresAt, "never"), FormatTime(b.ExpiresAt, "never")))
		case FieldStatus:
			parts = append(parts, fmt.Sprintf("status %s -> %s", a.Status, b.Status))
		}
	}
	return strings.Join(parts, "; ")
}

func listChange(c KeyChange) []string {
	out := make([]string, 0, len(c.Added)+len(c.Removed))
	for _, x := range c.Added {
		out = append(out, "+"+x)
	}
	for _, x := range c.Removed {
		out = append(out, "-"+x)
	}
	return out
}
