package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Scope is one allowed endpoint group, such as "coupons:read".
type Scope struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// PerResource scopes work against a single application/property, so
	// they may be granted on a key limited to chosen resources.
	PerResource bool `json:"per_resource"`
}

// ReadOnly reports whether the scope only reads.
func (s Scope) ReadOnly() bool { return IsReadScope(s.Name) }

// IsReadScope reports whether a scope name ends in ":read".
func IsReadScope(name string) bool { return strings.HasSuffix(name, ":read") }

// Resource is an application or property a key may be limited to.
type Resource struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"` // "application" or "property"
}

// Catalog lists what keys can be granted.
type Catalog struct {
	Scopes    []Scope    `json:"scopes"`
	Resources []Resource `json:"resources"`
}

// Scope looks up a scope by name.
func (c *Catalog) Scope(name string) (Scope, bool) {
	for _, s := range c.Scopes {
		if s.Name == name {
			return s, true
		}
	}
	return Scope{}, false
}

// Resource looks up a resource by id.
func (c *Catalog) Resource(id string) (Resource, bool) {
	for _, r := range c.Resources {
		if r.ID == id {
			return r, true
		}
	}
	return Resource{}, false
}

// OfferedScopes returns the scopes a key with this role may be given, in
// catalog order. ADMIN gets none offered (it has all implicitly); READONLY
// only ":read" scopes; with resources chosen, only per-resource scopes.
func (c *Catalog) OfferedScopes(role Role, resourcesChosen bool) []Scope {
	if role == RoleAdmin {
		return nil
	}
	var out []Scope
	for _, s := range c.Scopes {
		if role == RoleReadonly && !s.ReadOnly() {
			continue
		}
		if resourcesChosen && !s.PerResource {
			continue
		}
		out = append(out, s)
	}
	return out
}

// ParseCatalog decodes and validates a catalog document.
func ParseCatalog(data []byte) (Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Catalog{}, fmt.Errorf("catalog is not valid JSON: %w", err)
	}
	// One document only: trailing data means a truncated or concatenated file.
	if _, err := dec.Token(); err != io.EOF {
		return Catalog{}, fmt.Errorf("catalog has data after the JSON document")
	}
	// encoding/json keeps the last of two equal (or case-folded equal)
	// field names; which one the admin meant is anyone's guess.
	if err := checkDuplicateFields(data); err != nil {
		return Catalog{}, err
	}
	if err := c.Validate(); err != nil {
		return Catalog{}, err
	}
	return c, nil
}

// checkDuplicateFields refuses a JSON document in which one object names
// the same field twice, compared the way encoding/json matches fields
// (case-insensitively). data has already decoded without error.
func checkDuplicateFields(data []byte) error {
	type frame struct {
		obj     bool
		wantKey bool
		keys    map[string]bool
	}
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // end of the document (a syntax error was reported by Decode)
		}
		if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].wantKey {
			top := stack[n-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			name, _ := tok.(string)
			f := strings.ToLower(strings.ToUpper(name))
			if top.keys[f] {
				return fmt.Errorf("catalog names the field %q twice in one object", Sanitize(name))
			}
			top.keys[f], top.wantKey = true, false
			continue
		}
		switch d := tok.(type) {
		case json.Delim:
			switch d {
			case '{':
				stack = append(stack, &frame{obj: true, wantKey: true, keys: map[string]bool{}})
			case '[':
				stack = append(stack, &frame{})
			default: // ']' ('}' ends an object above, where a key is wanted)
				stack = stack[:len(stack)-1]
				valueDone()
			}
		default:
			valueDone()
		}
		if len(stack) == 0 {
			return nil // one document only
		}
	}
}

// Validate checks names are well formed and unique, and that there is at
// least one scope: a catalog without scopes ("{}", "null", an empty file
// written by mistake) leaves nothing but ADMIN keys grantable.
func (c *Catalog) Validate() error {
	if len(c.Scopes) == 0 {
		return fmt.Errorf("catalog has no scopes; it must list at least one (an empty catalog would leave nothing to grant)")
	}
	seen := map[string]bool{}
	for i, s := range c.Scopes {
		if !validIdent(s.Name, true) {
			return fmt.Errorf("scope %d: name %q must be 1-64 characters of a-z, 0-9, '.', '_', '-' and ':'", i+1, Sanitize(s.Name))
		}
		if seen[s.Name] {
			return fmt.Errorf("scope %q is listed twice", s.Name)
		}
		seen[s.Name] = true
		if err := checkText("description", s.Description, 200); err != nil {
			return fmt.Errorf("scope %q: %w", s.Name, err)
		}
	}
	seen = map[string]bool{}
	for i, r := range c.Resources {
		if !validIdent(r.ID, false) {
			return fmt.Errorf("resource %d: id %q must be 1-64 characters of a-z, 0-9, '.', '_' and '-'", i+1, Sanitize(r.ID))
		}
		if seen[r.ID] {
			return fmt.Errorf("resource %q is listed twice", r.ID)
		}
		seen[r.ID] = true
		if err := checkText("name", r.Name, 64); err != nil {
			return fmt.Errorf("resource %q: %w", r.ID, err)
		}
		if r.Kind != "application" && r.Kind != "property" {
			return fmt.Errorf("resource %q: kind %q must be application or property", r.ID, Sanitize(r.Kind))
		}
	}
	return nil
}

// Sorted returns a copy with scopes and resources in name order.
func (c Catalog) Sorted() Catalog {
	out := Catalog{Scopes: append([]Scope(nil), c.Scopes...), Resources: append([]Resource(nil), c.Resources...)}
	sort.Slice(out.Scopes, func(i, j int) bool { return out.Scopes[i].Name < out.Scopes[j].Name })
	sort.Slice(out.Resources, func(i, j int) bool { return out.Resources[i].ID < out.Resources[j].ID })
	return out
}

func validIdent(s string, colon bool) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || (colon && c == ':')
		if !ok {
			return false
		}
	}
	return true
}
