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

// DisplayStatus is what the table shows: the stored status combined with
// the expiry clock.
type DisplayStatus string

const (
	ShowActive   DisplayStatus = "ACTIVE"
	ShowDisabled DisplayStatus = "DISABLED"
	ShowExpired  DisplayStatus = "EXPIRED"
	ShowExpiring DisplayStatus = "EXPIRING"
)

// ExpiringWindow is how close to expiry a key counts as "expiring soon".
const ExpiringWindow = 14 * 24 * time.Hour

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

// Display returns the status column value at now.
func (k *Key) Display(now time.Time) DisplayStatus {
	switch {
	case !k.Active():
		return ShowDisabled
	case k.Expired(now):
		return ShowExpired
	case k.ExpiresAt != nil && k.ExpiresAt.Sub(now) <= ExpiringWindow:
		return ShowExpiring
	}
	return ShowActive
}

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
