package model

import (
	"fmt"
	"strings"
	"time"
)

// Role is what a key may do.
type Role string

const (
	RoleAdmin    Role = "ADMIN"    // every scope on every resource
	RoleEditor   Role = "EDITOR"   // the chosen scopes on the chosen resources
	RoleReadonly Role = "READONLY" // like EDITOR, restricted to ":read" scopes
)

// Roles lists key roles in display order.
var Roles = []Role{RoleAdmin, RoleEditor, RoleReadonly}

// ParseRole accepts a role name in any case.
func ParseRole(s string) (Role, error) {
	switch Role(strings.ToUpper(strings.TrimSpace(s))) {
	case RoleAdmin:
		return RoleAdmin, nil
	case RoleEditor:
		return RoleEditor, nil
	case RoleReadonly:
		return RoleReadonly, nil
	}
	return "", fmt.Errorf("unknown role %q (want admin, editor or readonly)", Sanitize(s))
}

// Status is the stored state of a key. Expiry is computed, not stored.
type Status string

const (
	StatusActive   Status = "active"
	StatusDisabled Status = "disabled"
)

// DisplayStatus is what the screens and the CLI show for a key: what a
// verification answers for it now (before any question of scope), from
// the stored status, the expiry clock and its creator's account. See
// StatusOf.
type DisplayStatus string

const (
	ShowActive   DisplayStatus = "ACTIVE"
	ShowDisabled DisplayStatus = "DISABLED"
	ShowExpired  DisplayStatus = "EXPIRED"
	ShowExpiring DisplayStatus = "EXPIRING" // still verifies; expires within ExpiringWindow
	// ShowCreatorDisabled: the key is active and in date, but the operator
	// who created it is disabled or deleted, so verification refuses it
	// with CREATOR_DISABLED.
	ShowCreatorDisabled DisplayStatus = "CREATOR_DISABLED"
)

// ExpiringWindow is how close to expiry a key counts as "expiring soon".
const ExpiringWindow = 14 * 24 * time.Hour

// UnusedAfter is how long without use makes a key stale ("unused 90d" in
// the keys table's counts).
const UnusedAfter = 90 * 24 * time.Hour

// DefaultLifetime is the expiry of a new key unless told otherwise.
const DefaultLifetime = 365 * 24 * time.Hour

// Key is one API key. It never holds the token; only the store's hash
// index knows the token's SHA-256.
type Key struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Description  string     `json:"description"`
	Role         Role       `json:"role"`
	Scopes       []string   `json:"scopes"`
	Resources    []string   `json:"resources"`
	Status       Status     `json:"status"`
	CreatedAt    time.Time  `json:"created_at"`
	CreatedBy    string     `json:"created_by"`
	UpdatedAt    time.Time  `json:"updated_at"`
	ExpiresAt    *time.Time `json:"expires_at"`
	LastUsedAt   *time.Time `json:"last_used_at"`
	LastUsedFrom string     `json:"last_used_from"`
	Hint         string     `json:"hint"`
	Version      uint64     `json:"version"`
	// GraceUntil is set after a regeneration with a grace period: until
	// then the previous secret still verifies.
	GraceUntil *time.Time `json:"grace_until,omitempty"`
}

// Active reports whether the stored status is active.
func (k *Key) Active() bool { return k.Status == StatusActive }

// Expired reports whether the key's expiry has passed at now.
func (k *Key) Expired(now time.Time) bool {
	return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)
}

// StatusOf is the one derivation of a key's displayed status: what
// verification answers for k at now, with creator the operator named by
// k.CreatedBy (nil when there is none). The table, the detail page, the
// status-bar counts, sorting, filtering and the CLI all use it, so no
// screen shows ACTIVE for a key that verify refuses. It follows the
// decision table's own order (keyRefusal, shared with DecideFacts).
func StatusOf(k *Key, creator *Operator, now time.Time) DisplayStatus {
	expires := int64(NeverExpires)
	if k.ExpiresAt != nil {
		expires = k.ExpiresAt.UnixNano()
	}
	switch keyRefusal(k.Active(), expires, CreatorActive(creator, k.CreatedAt.UnixNano()), now.UnixNano()) {
	case CodeDisabled:
		return ShowDisabled
	case CodeExpired:
		return ShowExpired
	case CodeCreatorDisabled:
		return ShowCreatorDisabled
	}
	if k.ExpiresAt != nil && k.ExpiresAt.Sub(now) <= ExpiringWindow {
		return ShowExpiring
	}
	return ShowActive
}

// Unused reports whether k has gone UnusedAfter or longer without use at
// now; a key never used counts from its creation.
func (k *Key) Unused(now time.Time) bool {
	last := k.CreatedAt
	if k.LastUsedAt != nil {
		last = *k.LastUsedAt
	}
	return now.Sub(last) >= UnusedAfter
}

// Verifies reports whether a key with this status passes verification
// (scope and resource aside).
func (s DisplayStatus) Verifies() bool { return s == ShowActive || s == ShowExpiring }

// AllResources reports whether the key applies to every resource.
func (k *Key) AllResources() bool { return k.Role == RoleAdmin || len(k.Resources) == 0 }

// KeySpec is what an admin fills in to create or edit a key.
type KeySpec struct {
	Name        string
	Description string
	Role        Role
	Scopes      []string
	Resources   []string
	// ExpiresAt nil means the key never expires.
	ExpiresAt *time.Time
	Active    bool
}

// SpecOf returns the editable fields of k as a spec, for edits.
func SpecOf(k *Key) KeySpec {
	return KeySpec{
		Name:        k.Name,
		Description: k.Description,
		Role:        k.Role,
		Scopes:      append([]string(nil), k.Scopes...),
		Resources:   append([]string(nil), k.Resources...),
		ExpiresAt:   k.ExpiresAt,
		Active:      k.Active(),
	}
}

// Clone returns a deep copy of k.
func (k *Key) Clone() *Key {
	c := *k
	c.Scopes = append([]string(nil), k.Scopes...)
	c.Resources = append([]string(nil), k.Resources...)
	return &c
}
