package model

import (
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
	res := VerifyResult{KeyID: k.ID, Role: k.Role, ExpiresAt: k.ExpiresAt}
	switch {
	case !k.Active():
		res.Code, res.Reason = CodeDisabled, "the key is disabled"
	case k.Expired(in.Now):
		res.Code, res.Reason = CodeExpired, "the key expired on "+k.ExpiresAt.UTC().Format(time.RFC3339)
	case !in.CreatorActive:
		res.Code, res.Reason = CodeCreatorDisabled, "the operator who created the key is disabled or deleted"
	case k.Role == RoleAdmin:
		res.Code = CodeValid
	case in.Scope != "" && !slices.Contains(k.Scopes, in.Scope):
		res.Code, res.Reason = CodeInsufficientScope, "the key is not granted scope "+Sanitize(in.Scope)
	case len(k.Resources) > 0 && in.Resource != "" && !slices.Contains(k.Resources, in.Resource):
		res.Code, res.Reason = CodeForbiddenResource, "the key is not granted resource "+Sanitize(in.Resource)
	case len(k.Resources) > 0 && in.Resource == "" && in.Scope != "":
		res.Code, res.Reason = CodeForbiddenResource, "the key is limited to chosen resources and the request names none"
	default:
		res.Code = CodeValid
	}
	res.Valid = res.Code == CodeValid
	return res
}
