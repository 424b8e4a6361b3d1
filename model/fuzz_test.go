package model

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzParseToken(f *testing.F) {
	good := mustToken(f, "").String()
	for _, s := range []string{"", "kw_", good, good[:len(good)-1], good + "x", flip(good, 5), flip(good, len(good)-1),
		"kw_" + strings.Repeat("0", bodyLen+checksumLen), "kw_" + strings.Repeat("z", bodyLen+checksumLen),
		"kw_\x00\x00\x00", "kw_" + strings.Repeat("é", 24) + "a", strings.ToUpper(good)} {
		f.Add(s, "")
	}
	f.Add(mustToken(f, "acme_").String(), "acme_")
	f.Fuzz(func(t *testing.T, s, prefix string) {
		tok, err := ParseToken(s, prefix)
		if err != nil {
			return
		}
		if tok.String() != s {
			t.Fatalf("accepted %q but it re-serialises as %q", s, tok.String())
		}
		if again, err := ParseToken(tok.String(), prefix); err != nil || again != tok {
			t.Fatalf("re-parse: %v %+v", err, again)
		}
		if !strings.HasPrefix(s, tok.Hint()) {
			t.Fatalf("hint %q not a prefix of %q", tok.Hint(), s)
		}
	})
}

func fuzzCatalog() *Catalog {
	return &Catalog{
		Scopes: []Scope{{Name: "coupons:read", PerResource: true}, {Name: "coupons:write", PerResource: true},
			{Name: "analytics:read"}, {Name: "apps:write"}},
		Resources: []Resource{{ID: "web", Name: "Web", Kind: "application"}, {ID: "eu", Name: "EU", Kind: "property"}},
	}
}

func FuzzValidateSpec(f *testing.F) {
	f.Add("ci-bot", "desc", "EDITOR", "coupons:read", "", int64(3600))
	f.Add("", "", "ADMIN", "", "", int64(0))
	f.Add("ro", "", "READONLY", "coupons:read,coupons:write", "web", int64(-5))
	f.Add("x\x1b[2J", "\u202e", "EDITOR", "analytics:read", "web,eu", int64(10))
	f.Add(strings.Repeat("é", 65), "", "EDITOR", "coupons:read,coupons:read", "web,web", int64(1))
	f.Add("ok", "", "ADMIN", "apps:write", "", int64(-1<<62))
	cat := fuzzCatalog()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	f.Fuzz(func(t *testing.T, name, desc, role, scopes, resources string, expiresIn int64) {
		spec := KeySpec{Name: name, Description: desc, Role: Role(role), Scopes: split(scopes), Resources: split(resources)}
		if expiresIn != 0 {
			e := now.Add(time.Duration(expiresIn))
			spec.ExpiresAt = &e
		}
		err := ValidateSpec(spec, cat, now)
		if err != nil {
			if !utf8.ValidString(err.Error()) || hasUnsafe(err.Error()) {
				t.Fatalf("unsafe error text %q", err.Error())
			}
			return
		}
		if hasUnsafe(name) || hasUnsafe(desc) || utf8.RuneCountInString(name) > MaxNameLen || isBlank(name) {
			t.Fatalf("accepted unsafe spec %+v", spec)
		}
		if spec.ExpiresAt != nil && !spec.ExpiresAt.After(now) {
			t.Fatal("accepted a past expiry")
		}
		// What is accepted is something the decision table will grant.
		k := &Key{ID: "key_aaaaaaaaaaaa", Role: spec.Role, Scopes: spec.Scopes, Resources: spec.Resources, Status: StatusActive, ExpiresAt: spec.ExpiresAt}
		for _, sc := range spec.Scopes {
			if _, ok := cat.Scope(sc); !ok {
				t.Fatalf("accepted unknown scope %q", sc)
			}
			if spec.Role == RoleReadonly && !IsReadScope(sc) {
				t.Fatalf("READONLY accepted %q", sc)
			}
			res := ""
			if len(spec.Resources) > 0 {
				res = spec.Resources[0]
			}
			if d := Decide(VerifyInput{Key: k, CreatorActive: true, Scope: sc, Resource: res, Now: now}); !d.Valid {
				t.Fatalf("accepted spec not granted its own scope: %s", d.Code)
			}
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"", " ", "ci-bot", strings.Repeat("a", 64), strings.Repeat("a", 65), "\x1b]52;c;QUJD\x07",
		"a\u202eb", "a\u2066b", "\u009b2J", "a\nb", "\xff", "\u3000", "é" + strings.Repeat("x", 63), "a\u200bb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxNameLen || isBlank(name) {
			t.Fatalf("accepted %q", name)
		}
		for _, r := range name {
			if unsafeRune(r) {
				t.Fatalf("accepted %q holding %U", name, r)
			}
		}
		if Sanitize(name) != name {
			t.Fatalf("accepted name %q changes under Sanitize", name)
		}
	})
}

func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b]52;c;aGk=\x07", "\x1b]52;c;aGk=\x1b\\", "\x1b]8;;http://x\x1b\\t\x1b]8;;\x1b\\",
		"\x1b[2J\x1b[H", "\u009b2J", "\u009dx\u009c", "\u202e\u2066\u2067\u2068\u2069", "a\nb\tc", "\x7f", "\x1b", "\x1b[",
		"\x1b]", "\x1bP", "\x1b(", "\x1b\x1b[31m", "\x1b]0;\x1b[2J", "\xc2", "\xe2\x80", "東京\x1b[1m🎉"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Sanitize(s)
		assertSafe(t, s, out)
		if Sanitize(out) != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, out, Sanitize(out))
		}
		if len(out) > len(s) {
			t.Fatalf("output longer than input: %q -> %q", s, out)
		}
	})
}

func FuzzParseCatalog(f *testing.F) {
	f.Add([]byte(`{"scopes":[{"name":"a:read","description":"d","per_resource":true}],"resources":[{"id":"r","name":"R","kind":"application"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"scopes":[{"name":"a"},{"name":"a"}]}`))
	f.Add([]byte(`{"scopes":[{"name":"a","description":"\u001b[2J"}]}`))
	f.Add([]byte(`{"resources":[{"id":"x","name":"<b>&","kind":"property"}]} {}`))
	f.Add([]byte(`{"scopes":[{"name":"a","description":"\ud800"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCatalog(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted catalog does not validate: %v", err)
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCatalog(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(normCatalog(c), normCatalog(back)) {
			t.Fatalf("round trip changed the catalog:\n%+v\n%+v", c, back)
		}
	})
}

// normCatalog treats nil and empty lists alike.
func normCatalog(c Catalog) Catalog {
	if len(c.Scopes) == 0 {
		c.Scopes = nil
	}
	if len(c.Resources) == 0 {
		c.Resources = nil
	}
	return c
}
