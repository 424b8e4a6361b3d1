package model

import (
	"fmt"
	"strings"
	"time"
)

// OperatorRole is what an operator (an admin of keyward itself) may do.
type OperatorRole string

const (
	OperatorAdmin    OperatorRole = "ADMIN"    // may change anything
	OperatorReadonly OperatorRole = "READONLY" // may look, never change
)

// ParseOperatorRole accepts admin or readonly in any case.
func ParseOperatorRole(s string) (OperatorRole, error) {
	switch OperatorRole(strings.ToUpper(strings.TrimSpace(s))) {
	case OperatorAdmin:
		return OperatorAdmin, nil
	case OperatorReadonly:
		return OperatorReadonly, nil
	}
	return "", fmt.Errorf("unknown operator role %q (want admin or readonly)", Sanitize(s))
}

// Operator is a person who administers keys, locally or over SSH.
type Operator struct {
	Name        string       `json:"name"`
	Role        OperatorRole `json:"role"`
	Disabled    bool         `json:"disabled"`
	PublicKeys  []string     `json:"public_keys"` // authorized_keys lines
	CreatedAt   time.Time    `json:"created_at"`
	CreatedBy   string       `json:"created_by"`
	LastLoginAt *time.Time   `json:"last_login_at"`
}

// CanWrite reports whether the operator may change state.
func (o *Operator) CanWrite() bool { return o != nil && !o.Disabled && o.Role == OperatorAdmin }

// ValidateOperatorName checks an operator (login) name: 1–32 characters of
// [a-z0-9._-], starting with a letter or digit.
func ValidateOperatorName(name string) error {
	if name == "" {
		return &FieldError{Field: "name", Msg: "operator name is required"}
	}
	if len(name) > 32 {
		return &FieldError{Field: "name", Msg: "operator name is longer than 32 characters"}
	}
	for i, c := range name {
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '.' || c == '_' || c == '-'))
		if !ok {
			return &FieldError{Field: "name", Msg: fmt.Sprintf("operator name %q may hold only a-z, 0-9, '.', '_' and '-', starting with a letter or digit", Sanitize(name))}
		}
	}
	return nil
}

// AuditEvent is one entry in the append-only audit log. It never holds a
// secret: keys are named by id and name, tokens only by hint.
type AuditEvent struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"` // key id, operator name, "secret" or "catalog"
	Detail string    `json:"detail"`
}

// Audit actions.
const (
	ActKeyCreate      = "key.create"
	ActKeyEdit        = "key.edit"
	ActKeyDisable     = "key.disable"
	ActKeyEnable      = "key.enable"
	ActKeyRegenerate  = "key.regenerate"
	ActKeyDelete      = "key.delete"
	ActSecretReveal   = "secret.reveal"
	ActSecretRotate   = "secret.rotate"
	ActOperatorAdd    = "operator.add"
	ActOperatorEdit   = "operator.edit"
	ActOperatorDelete = "operator.delete"
	ActCatalogImport  = "catalog.import"
	ActLogin          = "operator.login"
)
