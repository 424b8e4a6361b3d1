package model

import (
	"math"
	"slices"
	"time"
)

// Code is the outcome of a verification.
type Code string

const (
	CodeValid             Code = "VALID"
	CodeMalformed         Code = "MALFORMED"
	CodeNotFound          Code = "NOT_FOUND"
	CodeDisabled          Code = "DISABLED"
	CodeExpired           Code = "EXPIRED"
	CodeInsufficientScope Code = "INSUFFICIENT_SCOPE"
	CodeForbiddenResource Code = "FORBIDDEN_RESOURCE"
	CodeCreatorDisabled   Code = "CREATOR_DISABLED"
)

// Codes lists every verification code.
var Codes = []Code{CodeValid, CodeMalformed, CodeNotFound, CodeDisabled, CodeExpired,
	CodeInsufficientScope, CodeForbiddenResource, CodeCreatorDisabled}

// VerifyResult is what a verification returns to a caller. It carries no
// secret.
type VerifyResult struct {
	Valid     bool       `json:"valid"`
	Code      Code       `json:"code"`
	KeyID     string     `json:"key_id,omitempty"`
	Role      Role       `json:"role,omitempty"`
	ExpiresAt *time.Time `json:"expires_at"`
	// Reason is a human sentence for the CLI; it never names the token.
	Reason string `json:"reason,omitempty"`
}

// VerifyInput is everything the decision needs, already looked up.
type VerifyInput struct {
	Key *Key // nil when the hash is unknown
	// GraceExpired is true when the token matched only a regenerated key's
	// previous secret and its grace period is over.
	GraceExpired bool
	// CreatorActive is true when the key's creating operator exists and is
	// not disabled.
	CreatorActive bool
	Scope         string // requested scope; empty checks the key only
	Resource      string // requested resource; empty means none named
	Now           time.Time
}

// Decide is the verification decision table. The order is fixed: a key that
// is gone, off or out of date is refused before any question of scope.
//
//	no key / grace over          -> NOT_FOUND
//	status disabled              -> DISABLED
//	expiry passed                -> EXPIRED
//	creator disabled or deleted  -> CREATOR_DISABLED
//	scope not granted            -> INSUFFICIENT_SCOPE
//	resource not granted         -> FORBIDDEN_RESOURCE
//	otherwise                    -> VALID
//
// ADMIN keys have every scope on every resource. A key limited to resources
// refuses a scoped request that names no resource (fail closed).
func Decide(in VerifyInput) VerifyResult {
	k := in.Key
	if k == nil || in.GraceExpired {
		return VerifyResult{Code: CodeNotFound, Reason: "no live key has this secret"}
	}
	f := FactsOf(k)
	res := DecideFacts(&f, in.CreatorActive, in.Scope, in.Resource, in.Now.UnixNano())
	res.ExpiresAt = k.ExpiresAt
	return res
}

// keyRefusal is the head of the decision table, the part that depends on
// the key alone (not on the scope or resource asked for): DISABLED,
// EXPIRED or CREATOR_DISABLED in that order, or "" when the key itself
// verifies. DecideFacts and StatusOf both use it, so what the screens
// show and what verify answers cannot drift apart.
func keyRefusal(active bool, expires int64, creatorActive bool, now int64) Code {
	switch {
	case !active:
		return CodeDisabled
	case now >= expires:
		return CodeExpired
	case !creatorActive:
		return CodeCreatorDisabled
	}
	return ""
}

// CreatorActive reports whether creator, the operator named by a key's
// CreatedBy (nil when no such operator exists), still vouches for a key
// created at keyCreated (Unix ns): the account exists, is not disabled,
// and is not a later account re-added under the same name (keys the old
// one created stay refused).
func CreatorActive(creator *Operator, keyCreated int64) bool {
	return creator != nil && !creator.Disabled && creator.CreatedAt.UnixNano() <= keyCreated
}

// NeverExpires is KeyFacts.Expires of a key without expiry.
const NeverExpires = math.MaxInt64

// KeyFacts is what the decision table reads of a found key, in a form a
// store can keep next to the key's secret hash: a verification at a
// million keys then reads one or two cache lines instead of a whole Key
// and the times and lists it points to.
type KeyFacts struct {
	ID        string
	Role      Role
	Scopes    []string
	Resources []string
	Active    bool
	// Expires is the expiry in Unix nanoseconds, NeverExpires for none.
	// Expiries are at most MaxExpiryYears ahead, so they fit.
	Expires int64
}

// FactsOf returns k's facts.
func FactsOf(k *Key) KeyFacts {
	f := KeyFacts{ID: k.ID, Role: k.Role, Scopes: k.Scopes, Resources: k.Resources, Active: k.Active(), Expires: NeverExpires}
	if k.ExpiresAt != nil {
		f.Expires = k.ExpiresAt.UnixNano()
	}
	return f
}

// DecideFacts is the decision table (see Decide) for a key that was found
// and, if matched by its previous secret, is still in its grace period.
// now is in Unix nanoseconds. The result's ExpiresAt is left to the caller.
func DecideFacts(f *KeyFacts, creatorActive bool, scope, resource string, now int64) VerifyResult {
	res := VerifyResult{KeyID: f.ID, Role: f.Role}
	switch res.Code = keyRefusal(f.Active, f.Expires, creatorActive, now); {
	case res.Code == CodeDisabled:
		res.Reason = "the key is disabled"
	case res.Code == CodeExpired:
		res.Reason = "the key expired on " + time.Unix(0, f.Expires).UTC().Format(time.RFC3339)
	case res.Code == CodeCreatorDisabled:
		res.Reason = "the operator who created the key is disabled or deleted"
	case f.Role == RoleAdmin:
		res.Code = CodeValid
	case scope != "" && !slices.Contains(f.Scopes, scope):
		res.Code, res.Reason = CodeInsufficientScope, "the key is not granted scope "+Sanitize(scope)
	case len(f.Resources) > 0 && resource != "" && !slices.Contains(f.Resources, resource):
		res.Code, res.Reason = CodeForbiddenResource, "the key is not granted resource "+Sanitize(resource)
	case len(f.Resources) > 0 && resource == "" && scope != "":
		res.Code, res.Reason = CodeForbiddenResource, "the key is limited to chosen resources and the request names none"
	default:
		res.Code = CodeValid
	}
	res.Valid = res.Code == CodeValid
	return res
}
