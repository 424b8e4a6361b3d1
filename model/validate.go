package model

import (
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"
)

// FieldError is a validation failure tied to one form field, so the TUI can
// show it inline and the CLI can name the flag.
type FieldError struct {
	Field string
	Msg   string
	// Err, when set, is the sentinel the error wraps (for errors.Is), such
	// as store.ErrNameTaken.
	Err error
}

func (e *FieldError) Error() string { return e.Msg }

// Unwrap returns the wrapped sentinel, if any.
func (e *FieldError) Unwrap() error { return e.Err }

// Limits on user-entered text.
const (
	MaxNameLen        = 64
	MaxDescriptionLen = 256
)

// ValidateName checks a key name: 1-64 printable characters, no control,
// escape or bidi characters, not only spaces.
func ValidateName(name string) error {
	if err := checkText("name", name, MaxNameLen); err != nil {
		return err
	}
	if name == "" || isBlank(name) {
		return &FieldError{Field: "name", Msg: "name is required"}
	}
	return nil
}

// ValidateDescription checks a description: at most 256 printable characters.
func ValidateDescription(d string) error { return checkText("description", d, MaxDescriptionLen) }

func checkText(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return &FieldError{Field: field, Msg: field + " is not valid UTF-8"}
	}
	if n := utf8.RuneCountInString(s); n > max {
		return &FieldError{Field: field, Msg: fmt.Sprintf("%s is %d characters; the limit is %d", field, n, max)}
	}
	for _, r := range s {
		if unsafeRune(r) {
			return &FieldError{Field: field, Msg: fmt.Sprintf("%s contains a control or escape character (%U); only printable text is allowed", field, r)}
		}
	}
	return nil
}

func isBlank(s string) bool {
	for _, r := range s {
		if !unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// MaxExpiryYears is how far ahead an expiry may lie. Times are stored as
// nanoseconds since 1970 in an int64, which ends in 2262: a later expiry
// would come back as a date in the past.
const MaxExpiryYears = 100

// MaxGrace is the longest grace period a previous token or shared secret
// may keep working after a regeneration or rotation.
const MaxGrace = 30 * 24 * time.Hour

// ValidateGrace refuses a grace period outside 0..MaxGrace: the one rule
// for regenerating a key and rotating the shared secret, whoever calls.
func ValidateGrace(d time.Duration) error {
	if d < 0 || d > MaxGrace {
		return &FieldError{Field: "grace", Msg: "grace must be between 0 and 30 days"}
	}
	return nil
}

// CheckExpiryHorizon refuses an expiry more than MaxExpiryYears after now
// (nil, no expiry, passes).
func CheckExpiryHorizon(exp *time.Time, now time.Time) error {
	if exp != nil && exp.After(now.AddDate(MaxExpiryYears, 0, 0)) {
		return &FieldError{Field: "expires", Msg: fmt.Sprintf("expiry %s is more than %d years away; choose no expiry (never) instead",
			FormatDate(exp, ""), MaxExpiryYears)}
	}
	return nil
}

// ValidateSpec checks a key spec against the catalog at now. Whether its
// name is free is the store's business.
func ValidateSpec(spec KeySpec, cat *Catalog, now time.Time) error {
	if err := validateFields(spec, now); err != nil {
		return err
	}
	return ValidateGrant(spec.Role, spec.Scopes, spec.Resources, cat)
}

// ValidateEdit checks an edit of cur into spec. What the edit does not
// change is not re-judged: an expiry that has passed since may be kept,
// and a grant (role, scopes, resources) left as it is is kept even if the
// catalog no longer allows it, so editing only a description never fails
// over, or drops, a scope the admin did not touch. A changed grant is
// checked in full.
func ValidateEdit(cur *Key, spec KeySpec, cat *Catalog, now time.Time) error {
	check := spec
	if sameExpiry(spec.ExpiresAt, cur.ExpiresAt) {
		check.ExpiresAt = nil
	}
	if err := validateFields(check, now); err != nil {
		return err
	}
	if SameGrant(cur, spec) {
		return nil
	}
	return ValidateGrant(spec.Role, spec.Scopes, spec.Resources, cat)
}

// SameGrant reports whether spec keeps cur's role, scopes and resources,
// in any order (a form may list them in catalog order).
func SameGrant(cur *Key, spec KeySpec) bool {
	return cur.Role == spec.Role && sameSet(cur.Scopes, spec.Scopes) && sameSet(cur.Resources, spec.Resources)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func sameExpiry(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// validateFields checks everything but the grant.
func validateFields(spec KeySpec, now time.Time) error {
	if err := ValidateName(spec.Name); err != nil {
		return err
	}
	if err := ValidateDescription(spec.Description); err != nil {
		return err
	}
	switch spec.Role {
	case RoleAdmin, RoleEditor, RoleReadonly:
	default:
		return &FieldError{Field: "role", Msg: fmt.Sprintf("unknown role %q (want ADMIN, EDITOR or READONLY)", Sanitize(string(spec.Role)))}
	}
	if spec.ExpiresAt != nil && !spec.ExpiresAt.After(now) {
		return &FieldError{Field: "expires", Msg: fmt.Sprintf("expiry %s is not in the future", FormatCompact(spec.ExpiresAt, ""))}
	}
	return CheckExpiryHorizon(spec.ExpiresAt, now)
}

// ValidateGrant checks a role with its scopes and resources against the
// catalog: the rules of the roles, and that every scope and resource
// exists and every scope works per resource when resources are chosen.
// The catalog import checks every live key with it.
func ValidateGrant(role Role, scopes, resources []string, cat *Catalog) error {
	if role == RoleAdmin {
		if len(scopes) > 0 || len(resources) > 0 {
			return &FieldError{Field: "scopes", Msg: "ADMIN keys get every scope on every resource; leave scopes and resources empty"}
		}
		return nil
	}
	if len(scopes) == 0 {
		return &FieldError{Field: "scopes", Msg: "choose at least one scope"}
	}
	for i, r := range resources {
		if _, ok := cat.Resource(r); !ok {
			return &FieldError{Field: "resources", Msg: fmt.Sprintf("unknown resource %q", Sanitize(r))}
		}
		if slices.Contains(resources[:i], r) {
			return &FieldError{Field: "resources", Msg: fmt.Sprintf("resource %q is listed twice", r)}
		}
	}
	for i, name := range scopes {
		sc, ok := cat.Scope(name)
		if !ok {
			return &FieldError{Field: "scopes", Msg: fmt.Sprintf("unknown scope %q", Sanitize(name))}
		}
		if slices.Contains(scopes[:i], name) {
			return &FieldError{Field: "scopes", Msg: fmt.Sprintf("scope %q is listed twice", name)}
		}
		if role == RoleReadonly && !sc.ReadOnly() {
			return &FieldError{Field: "scopes", Msg: fmt.Sprintf("READONLY keys may only have :read scopes; %q writes", name)}
		}
		if len(resources) > 0 && !sc.PerResource {
			return &FieldError{Field: "scopes", Msg: fmt.Sprintf("scope %q does not work per resource; remove it or choose no resources (all)", name)}
		}
	}
	return nil
}
