package model

import (
	"crypto/rand"
	"crypto/sha256"
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
//
// ID is the operator account's identity: random, assigned when the
// operator is added and never reused. A name can be deleted and added
// again; the new account has a new ID, so nothing bound to the old one (an
// SSH session, see Actor) carries over to it.
type Operator struct {
	ID          string       `json:"id"`
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

// KeyByFingerprint returns the operator's registered key with the given
// SHA256 fingerprint.
func (o *Operator) KeyByFingerprint(fp string) (PublicKey, bool) {
	for _, line := range o.PublicKeys {
		if pk, err := ParsePublicKey(line); err == nil && pk.Fingerprint() == fp {
			return pk, true
		}
	}
	return PublicKey{}, false
}

// MaxOperatorKeys bounds how many SSH keys one operator may register.
const MaxOperatorKeys = 32

// NewOperatorID returns a fresh operator identity: "op_" + 16 lowercase
// base32 characters (80 random bits).
func NewOperatorID() (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return "op_" + base32Lower(raw[:]), nil
}

// LegacyOperatorID is the identity of an operator stored before operators
// had one: derived from its name and creation time, so it is the same at
// every open and differs from any later operator of the same name (those
// get a random NewOperatorID). It is written the first time the operator
// record is.
func LegacyOperatorID(name string, created time.Time) string {
	sum := sha256.Sum256([]byte("keyward operator\x00" + name + "\x00" + created.UTC().Format(time.RFC3339Nano)))
	return "op_" + base32Lower(sum[:16])
}

func base32Lower(raw []byte) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	out := make([]byte, len(raw))
	for i, c := range raw {
		out[i] = alphabet[c&31]
	}
	return string(out)
}

// Actor says on whose authority a change is made, as the store's write
// methods take it (a string, see String).
//
//   - Name alone (the CLI, --as): the operator of that name at the time of
//     the call; the CLI is one command, so nothing outlives the check.
//   - With ID (a TUI, local or over SSH): that operator account only. If
//     the operator is deleted and a new one added under the same name, the
//     old session's changes are refused.
//   - With KeyFingerprint (an SSH session): also only while the operator
//     still holds the key that signed the session's login.
//
// Every change is still checked against the account's state then: it must
// exist, be enabled and be ADMIN.
type Actor struct {
	Name           string
	ID             string
	KeyFingerprint string
}

// actorSep cannot occur in an operator name, an operator id or an SSH
// fingerprint.
const actorSep = "#"

// String encodes the actor for the store: "name", "name#id" or
// "name#id#SHA256:fingerprint".
func (a Actor) String() string {
	s := a.Name
	if a.ID != "" || a.KeyFingerprint != "" {
		s += actorSep + a.ID
	}
	if a.KeyFingerprint != "" {
		s += actorSep + a.KeyFingerprint
	}
	return s
}

// ParseActor decodes Actor.String. A plain operator name is an Actor with
// only a Name.
func ParseActor(s string) Actor {
	parts := strings.SplitN(s, actorSep, 3)
	a := Actor{Name: parts[0]}
	if len(parts) > 1 {
		a.ID = parts[1]
	}
	if len(parts) > 2 {
		a.KeyFingerprint = parts[2]
	}
	return a
}

// ActorName returns the operator name in an actor string.
func ActorName(s string) string { return ParseActor(s).Name }

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
	ActOperatorKeyAdd = "operator.key.add"
	ActOperatorKeyDel = "operator.key.remove"
	ActCatalogImport  = "catalog.import"
	ActLogin          = "operator.login"
)
