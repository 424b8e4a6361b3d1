package model

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func testCatalog(t testing.TB) *Catalog {
	t.Helper()
	data, err := os.ReadFile("../testdata/catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCatalog(data)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestValidateName(t *testing.T) {
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty", "", false},
		{"blank", "   ", false},
		{"blank tabs", "\u3000 ", false},
		{"one char", "x", true},
		{"64 ascii", strings.Repeat("a", 64), true},
		{"65 ascii", strings.Repeat("a", 65), false},
		{"64 runes multi-byte", strings.Repeat("é", 64), true},
		{"65 runes multi-byte", strings.Repeat("é", 65), false},
		{"64 emoji", strings.Repeat("🎉", 64), true},
		{"csi", "bot\x1b[2J", false},
		{"osc52", "bot\x1b]52;c;QUJD\x07", false},
		{"c1 csi", "bot\u009b2J", false},
		{"rlo", "bot\u202Egpj.exe", false},
		{"newline", "bot\nname", false},
		{"tab", "bot\tname", false},
		{"del", "bot\x7f", false},
		{"nul", "bot\x00", false},
		{"invalid utf8", "bot\xff", false},
		{"ok unicode", "Café bot — prod", true},
		{"ok punctuation", "ci-bot (prod) #1", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ValidateName(c.in)
			if (err == nil) != c.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", c.in, err, c.ok)
			}
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != "name" {
					t.Fatalf("error %v is not a name FieldError", err)
				}
				if hasUnsafe(err.Error()) {
					t.Fatalf("error message carries unsafe text: %q", err.Error())
				}
			}
		})
	}
}

func TestValidateSpec(t *testing.T) {
	cat := testCatalog(t)
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute), now.Add(24*time.Hour)
	base := func(mod func(*KeySpec)) KeySpec {
		s := KeySpec{Name: "ci-bot", Role: RoleEditor, Scopes: []string{"coupons:read"}, ExpiresAt: &future, Active: true}
		if mod != nil {
			mod(&s)
		}
		return s
	}
	cases := []struct {
		name  string
		spec  KeySpec
		field string // "" means valid
	}{
		{"ok editor", base(nil), ""},
		{"ok never expires", base(func(s *KeySpec) { s.ExpiresAt = nil }), ""},
		{"ok readonly read scopes", base(func(s *KeySpec) { s.Role = RoleReadonly; s.Scopes = []string{"coupons:read", "analytics:read"} }), ""},
		{"ok admin", base(func(s *KeySpec) { s.Role = RoleAdmin; s.Scopes = nil }), ""},
		{"ok resources with per-resource scopes", base(func(s *KeySpec) {
			s.Scopes = []string{"coupons:read", "coupons:write"}
			s.Resources = []string{"web-shop", "eu-store"}
		}), ""},
		{"ok 64 char name", base(func(s *KeySpec) { s.Name = strings.Repeat("n", 64) }), ""},
		{"empty name", base(func(s *KeySpec) { s.Name = "" }), "name"},
		{"blank name", base(func(s *KeySpec) { s.Name = "  " }), "name"},
		{"65 char name", base(func(s *KeySpec) { s.Name = strings.Repeat("n", 65) }), "name"},
		{"escape in name", base(func(s *KeySpec) { s.Name = "a\x1b[31mb" }), "name"},
		{"escape in description", base(func(s *KeySpec) { s.Description = "x\x1b]52;c;QUJD\x07" }), "description"},
		{"long description", base(func(s *KeySpec) { s.Description = strings.Repeat("d", MaxDescriptionLen+1) }), "description"},
		{"unknown role", base(func(s *KeySpec) { s.Role = "ROOT" }), "role"},
		{"empty role", base(func(s *KeySpec) { s.Role = "" }), "role"},
		{"past expiry", base(func(s *KeySpec) { s.ExpiresAt = &past }), "expires"},
		{"expiry exactly now", base(func(s *KeySpec) { s.ExpiresAt = &now }), "expires"},
		{"expiry 100 years away", base(func(s *KeySpec) { t := now.AddDate(100, 0, 0); s.ExpiresAt = &t }), ""},
		// Past 2262 an expiry no longer fits the stored nanoseconds and
		// came back as a date in the past (2500-01-01 read as 1915).
		{"expiry past 100 years", base(func(s *KeySpec) { t := now.AddDate(100, 0, 0).Add(time.Second); s.ExpiresAt = &t }), "expires"},
		{"expiry in 2500", base(func(s *KeySpec) { t := time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC); s.ExpiresAt = &t }), "expires"},
		{"no scopes", base(func(s *KeySpec) { s.Scopes = nil }), "scopes"},
		{"unknown scope", base(func(s *KeySpec) { s.Scopes = []string{"coupons:delete"} }), "scopes"},
		{"unknown scope with escape", base(func(s *KeySpec) { s.Scopes = []string{"x\x1b[2J"} }), "scopes"},
		{"duplicate scope", base(func(s *KeySpec) { s.Scopes = []string{"coupons:read", "coupons:read"} }), "scopes"},
		{"unknown resource", base(func(s *KeySpec) { s.Resources = []string{"nope"} }), "resources"},
		{"duplicate resource", base(func(s *KeySpec) { s.Resources = []string{"web-shop", "web-shop"} }), "resources"},
		{"readonly with write", base(func(s *KeySpec) { s.Role = RoleReadonly; s.Scopes = []string{"coupons:read", "coupons:write"} }), "scopes"},
		{"resources with account-wide scope", base(func(s *KeySpec) {
			s.Scopes = []string{"coupons:read", "analytics:read"}
			s.Resources = []string{"web-shop"}
		}), "scopes"},
		{"admin with scopes", base(func(s *KeySpec) { s.Role = RoleAdmin }), "scopes"},
		{"admin with resources", base(func(s *KeySpec) { s.Role = RoleAdmin; s.Scopes = nil; s.Resources = []string{"web-shop"} }), "scopes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ValidateSpec(c.spec, cat, now)
			if c.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a FieldError on %q", err, c.field)
			}
			if fe.Field != c.field {
				t.Fatalf("error on field %q (%v), want %q", fe.Field, err, c.field)
			}
			if hasUnsafe(err.Error()) {
				t.Fatalf("error message carries unsafe text: %q", err.Error())
			}
		})
	}
}

func TestOfferedScopes(t *testing.T) {
	cat := testCatalog(t)
	names := func(ss []Scope) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	all := names(cat.Scopes)
	cases := []struct {
		role      Role
		resources bool
		want      []string
	}{
		{RoleAdmin, false, nil},
		{RoleAdmin, true, nil},
		{RoleEditor, false, all},
		{RoleEditor, true, []string{"coupons:read", "coupons:write", "campaigns:read", "campaigns:write", "customers:read", "customers:write"}},
		{RoleReadonly, false, []string{"coupons:read", "campaigns:read", "customers:read", "analytics:read", "applications:read", "exports:read"}},
		{RoleReadonly, true, []string{"coupons:read", "campaigns:read", "customers:read"}},
	}
	for _, c := range cases {
		got := names(cat.OfferedScopes(c.role, c.resources))
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("OfferedScopes(%s, %v) = %v, want %v", c.role, c.resources, got, c.want)
		}
		// Every offered scope must pass validation for that role.
		for _, sc := range got {
			spec := KeySpec{Name: "n", Role: c.role, Scopes: []string{sc}}
			if c.resources {
				spec.Resources = []string{"web-shop"}
			}
			if err := ValidateSpec(spec, cat, time.Now()); err != nil {
				t.Errorf("offered %s for %s/%v but validation refuses: %v", sc, c.role, c.resources, err)
			}
		}
	}
}

func TestParseCatalog(t *testing.T) {
	good := `{"scopes":[{"name":"a:read","description":"d","per_resource":true}],"resources":[{"id":"r1","name":"R","kind":"application"}]}`
	c, err := ParseCatalog([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := c.Scope("a:read"); !ok || !s.PerResource || !s.ReadOnly() {
		t.Fatalf("Scope lookup: %+v %v", s, ok)
	}
	if _, ok := c.Resource("r1"); !ok {
		t.Fatal("Resource lookup failed")
	}
	bad := map[string]string{
		"not json":           `{`,
		"unknown field":      `{"scopes":[],"extra":1}`,
		"trailing garbage":   good + `{"scopes":[]}`,
		"bad scope name":     `{"scopes":[{"name":"A:READ"}]}`,
		"empty scope name":   `{"scopes":[{"name":""}]}`,
		"duplicate scope":    `{"scopes":[{"name":"a"},{"name":"a"}]}`,
		"escape in desc":     `{"scopes":[{"name":"a","description":"\u001b[2J"}]}`,
		"bad resource id":    `{"resources":[{"id":"a:b","name":"x","kind":"application"}]}`,
		"duplicate resource": `{"resources":[{"id":"a","name":"x","kind":"application"},{"id":"a","name":"y","kind":"property"}]}`,
		"bad kind":           `{"resources":[{"id":"a","name":"x","kind":"planet"}]}`,
		"bidi in name":       `{"resources":[{"id":"a","name":"x\u202e","kind":"property"}]}`,
	}
	for name, in := range bad {
		if _, err := ParseCatalog([]byte(in)); err == nil {
			t.Errorf("%s: accepted %s", name, in)
		}
	}
	sorted := testCatalog(t).Sorted()
	for i := 1; i < len(sorted.Scopes); i++ {
		if sorted.Scopes[i-1].Name > sorted.Scopes[i].Name {
			t.Fatal("Sorted scopes out of order")
		}
	}
}

// sshLine builds an authorized_keys line for an ed25519 key by hand.
func sshLine(t testing.TB, comment string) (string, []byte) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blob := wire("ssh-ed25519", pub)
	line := "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob)
	if comment != "" {
		line += " " + comment
	}
	return line, blob
}

func wire(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		var data []byte
		switch v := p.(type) {
		case string:
			data = []byte(v)
		case []byte:
			data = v
		case ed25519.PublicKey:
			data = v
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	return b
}

func TestParsePublicKey(t *testing.T) {
	line, blob := sshLine(t, "alice@laptop")
	pk, err := ParsePublicKey("  " + line + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if pk.Type != "ssh-ed25519" || pk.Comment != "alice@laptop" || !pk.Equal(blob) {
		t.Fatalf("parsed %+v", pk)
	}
	if pk.String() != line {
		t.Fatalf("String() = %q, want %q", pk.String(), line)
	}
	// The fingerprint matches x/crypto/ssh's and OpenSSH's format.
	sk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if fp := pk.Fingerprint(); fp != ssh.FingerprintSHA256(sk) || !strings.HasPrefix(fp, "SHA256:") || strings.HasSuffix(fp, "=") {
		t.Fatalf("fingerprint %q, ssh says %q", fp, ssh.FingerprintSHA256(sk))
	}
	sum := sha256.Sum256(blob)
	if pk.Fingerprint() != "SHA256:"+base64.RawStdEncoding.EncodeToString(sum[:]) {
		t.Fatal("fingerprint is not SHA256 of the blob")
	}
	if !pk.Equal(sk.Marshal()) {
		t.Fatal("blob differs from ssh.PublicKey.Marshal")
	}

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	bad := map[string]string{
		"empty":           "",
		"type only":       "ssh-ed25519",
		"unknown type":    "ssh-dss " + b64(wire("ssh-dss", []byte("x"))),
		"type mismatch":   "ssh-rsa " + b64(blob),
		"blob says rsa":   "ssh-ed25519 " + b64(wire("ssh-rsa", pub)),
		"bad base64":      "ssh-ed25519 AAAA$$$$",
		"truncated":       "ssh-ed25519 " + b64([]byte{0, 0}),
		"length overflow": "ssh-ed25519 " + b64([]byte{0xff, 0xff, 0xff, 0xff, 's'}),
		"short key":       "ssh-ed25519 " + b64(wire("ssh-ed25519", pub[:31])),
		"long key":        "ssh-ed25519 " + b64(wire("ssh-ed25519", append(append([]byte{}, pub...), 0))),
		"trailing data":   "ssh-ed25519 " + b64(append(wire("ssh-ed25519", pub), 0, 0, 0, 0)),
	}
	for name, in := range bad {
		if _, err := ParsePublicKey(in); err == nil {
			t.Errorf("%s: accepted %q", name, in)
		}
	}
	// A hostile comment is sanitised.
	pk, err = ParsePublicKey(line + " \x1b]52;c;QUJD\x07x")
	if err != nil || hasUnsafe(pk.Comment) {
		t.Fatalf("comment %q, %v", pk.Comment, err)
	}
}

func TestFieldErrorJSONSafe(t *testing.T) {
	// FieldError messages are plain text fit for JSON output.
	err := ValidateSpec(KeySpec{Name: "x", Role: RoleEditor, Scopes: []string{"\u202e"}}, &Catalog{}, time.Now())
	if _, jerr := json.Marshal(err.Error()); jerr != nil || hasUnsafe(err.Error()) {
		t.Fatalf("%q", err.Error())
	}
}
