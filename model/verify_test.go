package model

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	past := now.Add(-time.Second)
	future := now.Add(time.Hour)
	key := func(mod func(k *Key)) *Key {
		k := &Key{ID: "key_aaaaaaaaaaaa", Role: RoleEditor, Status: StatusActive,
			Scopes: []string{"coupons:read", "analytics:read"}, ExpiresAt: &future}
		if mod != nil {
			mod(k)
		}
		return k
	}
	disabled := func(k *Key) { k.Status = StatusDisabled }
	expired := func(k *Key) { k.ExpiresAt = &past }
	limited := func(k *Key) { k.Resources = []string{"web-shop", "eu-store"}; k.Scopes = []string{"coupons:read"} }
	admin := func(k *Key) { k.Role = RoleAdmin; k.Scopes = nil }

	cases := []struct {
		name     string
		in       VerifyInput
		want     Code
		resource string
	}{
		{"unknown hash", VerifyInput{Key: nil, CreatorActive: true}, CodeNotFound, ""},
		{"grace over", VerifyInput{Key: key(nil), GraceExpired: true, CreatorActive: true}, CodeNotFound, ""},
		{"grace over beats disabled", VerifyInput{Key: key(disabled), GraceExpired: true}, CodeNotFound, ""},
		{"disabled", VerifyInput{Key: key(disabled), CreatorActive: true}, CodeDisabled, ""},
		{"disabled and expired", VerifyInput{Key: key(func(k *Key) { disabled(k); expired(k) }), CreatorActive: true}, CodeDisabled, ""},
		{"disabled and creator disabled", VerifyInput{Key: key(disabled)}, CodeDisabled, ""},
		{"expired", VerifyInput{Key: key(expired), CreatorActive: true}, CodeExpired, ""},
		{"expires exactly now", VerifyInput{Key: key(func(k *Key) { k.ExpiresAt = &now }), CreatorActive: true}, CodeExpired, ""},
		{"expired and creator disabled", VerifyInput{Key: key(expired)}, CodeExpired, ""},
		{"expired beats bad scope", VerifyInput{Key: key(expired), CreatorActive: true, Scope: "coupons:write"}, CodeExpired, ""},
		{"creator disabled", VerifyInput{Key: key(nil)}, CodeCreatorDisabled, ""},
		{"creator disabled beats bad scope", VerifyInput{Key: key(nil), Scope: "coupons:write"}, CodeCreatorDisabled, ""},
		{"creator disabled admin", VerifyInput{Key: key(admin)}, CodeCreatorDisabled, ""},
		{"insufficient scope", VerifyInput{Key: key(nil), CreatorActive: true, Scope: "coupons:write"}, CodeInsufficientScope, ""},
		{"scope beats resource", VerifyInput{Key: key(limited), CreatorActive: true, Scope: "coupons:write", Resource: "us-store"}, CodeInsufficientScope, ""},
		{"forbidden resource", VerifyInput{Key: key(limited), CreatorActive: true, Scope: "coupons:read", Resource: "us-store"}, CodeForbiddenResource, ""},
		{"limited key, scope but no resource", VerifyInput{Key: key(limited), CreatorActive: true, Scope: "coupons:read"}, CodeForbiddenResource, ""},
		{"limited key, resource only, wrong", VerifyInput{Key: key(limited), CreatorActive: true, Resource: "us-store"}, CodeForbiddenResource, ""},
		{"limited key, resource only, right", VerifyInput{Key: key(limited), CreatorActive: true, Resource: "eu-store"}, CodeValid, ""},
		{"limited key, no scope no resource", VerifyInput{Key: key(limited), CreatorActive: true}, CodeValid, ""},
		{"limited key, granted", VerifyInput{Key: key(limited), CreatorActive: true, Scope: "coupons:read", Resource: "web-shop"}, CodeValid, ""},
		{"all resources key with any resource", VerifyInput{Key: key(nil), CreatorActive: true, Scope: "coupons:read", Resource: "anything"}, CodeValid, ""},
		{"valid, key only", VerifyInput{Key: key(nil), CreatorActive: true}, CodeValid, ""},
		{"valid scope", VerifyInput{Key: key(nil), CreatorActive: true, Scope: "analytics:read"}, CodeValid, ""},
		{"never expires", VerifyInput{Key: key(func(k *Key) { k.ExpiresAt = nil }), CreatorActive: true, Scope: "coupons:read"}, CodeValid, ""},
		{"admin bypasses scope", VerifyInput{Key: key(admin), CreatorActive: true, Scope: "exports:read"}, CodeValid, ""},
		{"admin bypasses resource", VerifyInput{Key: key(admin), CreatorActive: true, Scope: "coupons:write", Resource: "us-store"}, CodeValid, ""},
		{"admin with stray resources still bypasses", VerifyInput{Key: key(func(k *Key) { admin(k); k.Resources = []string{"web-shop"} }), CreatorActive: true, Scope: "coupons:write"}, CodeValid, ""},
		{"admin disabled", VerifyInput{Key: key(func(k *Key) { admin(k); disabled(k) }), CreatorActive: true}, CodeDisabled, ""},
	}
	covered := map[Code]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.in
			in.Now = now
			got := Decide(in)
			if got.Code != c.want {
				t.Fatalf("Decide = %s (%s), want %s", got.Code, got.Reason, c.want)
			}
			if got.Valid != (c.want == CodeValid) {
				t.Fatalf("Valid = %v for %s", got.Valid, got.Code)
			}
			if c.want != CodeValid && c.want != CodeMalformed && got.Reason == "" {
				t.Fatalf("refusal %s has no reason", got.Code)
			}
			if in.Key != nil && c.want != CodeNotFound && got.KeyID != in.Key.ID {
				t.Fatalf("KeyID = %q", got.KeyID)
			}
			if c.want == CodeNotFound && got.KeyID != "" {
				t.Fatalf("NOT_FOUND leaks key id %q", got.KeyID)
			}
		})
		covered[c.want] = true
	}
	// MALFORMED is decided by the token parser, before Decide; every other
	// code must come out of the table above.
	for _, code := range Codes {
		if code != CodeMalformed && !covered[code] {
			t.Errorf("no case covers %s", code)
		}
	}
	if len(Codes) != 8 {
		t.Errorf("Codes lists %d codes, want 8", len(Codes))
	}
}

func TestDecideReasonSanitised(t *testing.T) {
	k := &Key{ID: "key_aaaaaaaaaaaa", Role: RoleEditor, Status: StatusActive, Scopes: []string{"a:read"}}
	r := Decide(VerifyInput{Key: k, CreatorActive: true, Scope: "x\x1b]52;c;QUJD\x07", Now: time.Now()})
	if r.Code != CodeInsufficientScope || hasUnsafe(r.Reason) {
		t.Fatalf("reason not sanitised: %q", r.Reason)
	}
}

func TestKeyDisplay(t *testing.T) {
	now := time.Now()
	soon, later, past := now.Add(time.Hour), now.Add(60*24*time.Hour), now.Add(-time.Hour)
	cases := []struct {
		k    Key
		want DisplayStatus
	}{
		{Key{Status: StatusActive}, ShowActive},
		{Key{Status: StatusActive, ExpiresAt: &later}, ShowActive},
		{Key{Status: StatusActive, ExpiresAt: &soon}, ShowExpiring},
		{Key{Status: StatusActive, ExpiresAt: &past}, ShowExpired},
		{Key{Status: StatusDisabled, ExpiresAt: &past}, ShowDisabled},
	}
	creator := &Operator{Name: "alice"} // created at the zero time: before every key
	for i, c := range cases {
		if got := StatusOf(&c.k, creator, now); got != c.want {
			t.Errorf("%d: Display = %s, want %s", i, got, c.want)
		}
	}
}

func TestParseRoles(t *testing.T) {
	for in, want := range map[string]Role{"admin": RoleAdmin, " Editor ": RoleEditor, "READONLY": RoleReadonly} {
		if got, err := ParseRole(in); err != nil || got != want {
			t.Errorf("ParseRole(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("ParseRole(root) accepted")
	}
	if r, err := ParseOperatorRole("readonly"); err != nil || r != OperatorReadonly {
		t.Errorf("ParseOperatorRole: %v %v", r, err)
	}
	if _, err := ParseOperatorRole("editor"); err == nil {
		t.Error("operators have no EDITOR role")
	}
}

func TestValidateOperatorName(t *testing.T) {
	for _, ok := range []string{"alice", "a", "bob.smith", "x_1-2", "0day"} {
		if err := ValidateOperatorName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Alice", "-x", ".x", "a b", "a\x1b", "ünï", "abcdefghijabcdefghijabcdefghijabc"} {
		if err := ValidateOperatorName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCloneIsDeep(t *testing.T) {
	k := &Key{Scopes: []string{"a"}, Resources: []string{"r"}}
	c := k.Clone()
	c.Scopes[0], c.Resources[0] = "b", "s"
	if k.Scopes[0] != "a" || k.Resources[0] != "r" {
		t.Fatal("Clone shares slices")
	}
	spec := SpecOf(k)
	spec.Scopes[0] = "z"
	if k.Scopes[0] != "a" {
		t.Fatal("SpecOf shares slices")
	}
}
