package model

import (
	crand "crypto/rand"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func mustToken(t testing.TB, prefix string) Token {
	t.Helper()
	tok, err := GenerateToken(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenRoundTrip(t *testing.T) {
	for _, prefix := range []string{"", "kw_", "acme_live_"} {
		tok := mustToken(t, prefix)
		want := prefix
		if want == "" {
			want = DefaultPrefix
		}
		s := tok.String()
		if !strings.HasPrefix(s, want) {
			t.Fatalf("token %q does not start with %q", s, want)
		}
		if got := len(s) - len(want); got != bodyLen+checksumLen {
			t.Fatalf("token body+checksum is %d characters, want %d", got, bodyLen+checksumLen)
		}
		back, err := ParseToken(s, prefix)
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", s, err)
		}
		if back != tok || back.String() != s {
			t.Fatalf("round trip: got %+v, want %+v", back, tok)
		}
		if back.Hash() != HashToken(s) {
			t.Fatal("Hash differs from HashToken of the text")
		}
	}
}

// flip replaces the byte at i with a different base62 character.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

func TestParseTokenErrors(t *testing.T) {
	tok := mustToken(t, "")
	s := tok.String()
	p := len(DefaultPrefix)
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrTokenPrefix},
		{"wrong prefix", "xx_" + s[p:], ErrTokenPrefix},
		{"prefix case", "KW_" + s[p:], ErrTokenPrefix},
		{"only prefix", DefaultPrefix, ErrTokenLength},
		{"one short", s[:len(s)-1], ErrTokenLength},
		{"one long", s + "0", ErrTokenLength},
		{"trailing newline", s + "\n", ErrTokenLength},
		{"charset dash", s[:p+3] + "-" + s[p+4:], ErrTokenCharset},
		{"charset non-ascii", s[:p+3] + "\xff" + s[p+4:], ErrTokenCharset},
		{"charset space", s[:len(s)-1] + " ", ErrTokenCharset},
		{"body flipped first", flip(s, p), ErrTokenChecksum},
		{"body flipped last", flip(s, p+bodyLen-1), ErrTokenChecksum},
		{"checksum flipped first", flip(s, p+bodyLen), ErrTokenChecksum},
		{"checksum flipped last", flip(s, len(s)-1), ErrTokenChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseToken(c.in, "")
			if !errors.Is(err, c.want) {
				t.Fatalf("ParseToken(%q) = %v, want %v", c.in, err, c.want)
			}
		})
	}
	// A token of another prefix is refused even when otherwise intact.
	other := mustToken(t, "acme_")
	if _, err := ParseToken(other.String(), ""); !errors.Is(err, ErrTokenPrefix) {
		t.Fatalf("foreign prefix: %v", err)
	}
}

func TestTokenHint(t *testing.T) {
	tok := mustToken(t, "")
	h := tok.Hint()
	if h != DefaultPrefix+tok.Body[:HintLen] {
		t.Fatalf("hint %q", h)
	}
	if len(h) != len(DefaultPrefix)+HintLen || !strings.HasPrefix(tok.String(), h) {
		t.Fatalf("hint %q is not a short prefix of the token", h)
	}
}

func TestTokenUniqueness(t *testing.T) {
	const n = 20000
	seen := make(map[string]bool, n)
	firstChars := map[byte]int{}
	for i := 0; i < n; i++ {
		s := mustToken(t, "").String()
		if seen[s] {
			t.Fatalf("duplicate token after %d", i)
		}
		seen[s] = true
		firstChars[s[len(DefaultPrefix)+5]]++
	}
	// A fixed or poorly mixed body would concentrate on a few characters.
	if len(firstChars) < 50 {
		t.Fatalf("body characters poorly distributed: %d distinct", len(firstChars))
	}
}

func TestChecksumFast(t *testing.T) {
	// checksum must agree with the generic base62 encoder.
	for i := 0; i < 200; i++ {
		body := mustToken(t, "").Body
		sum := crcOf(body)
		b := []byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)}
		if got, want := checksum(body), encodeBase62(b, checksumLen); got != want {
			t.Fatalf("checksum(%q) = %q, want %q", body, got, want)
		}
	}
}

func TestKeyIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 2000; i++ {
		id, err := NewKeyID()
		if err != nil {
			t.Fatal(err)
		}
		if !validKeyID(id) {
			t.Fatalf("NewKeyID gave %q, which validKeyID refuses", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "key_", "key_abcdefghijk", "key_abcdefghijklm", "KEY_abcdefghijkl",
		"key_abcdefghijk1", "key_abcdefghijk8", "key_ABCDEFGHIJKL", "kex_abcdefghijkl", "key_abcdefghijk\x00"} {
		if validKeyID(bad) {
			t.Errorf("validKeyID(%q) = true", bad)
		}
	}
	if !validKeyID("key_abcdefgh2345") {
		t.Error("validKeyID refuses a well-formed id")
	}
}

func TestRandomBase62(t *testing.T) {
	a, err := RandomBase62(32, 43)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RandomBase62(32, 43)
	if len(a) != 43 || a == b {
		t.Fatalf("RandomBase62: %q %q", a, b)
	}
	for i := 0; i < len(a); i++ {
		if !isBase62(a[i]) {
			t.Fatalf("non-base62 %q", a)
		}
	}
}

func BenchmarkParseToken(b *testing.B) {
	s := mustToken(b, "").String()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseToken(s, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerateToken(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := GenerateToken(""); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCrcOfMatchesStdlib(t *testing.T) {
	for _, s := range []string{"", "a", "hello world", mustToken(t, "").Body} {
		if got, want := crcOf(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Fatalf("crcOf(%q) = %08x, want %08x", s, got, want)
		}
	}
}

func TestEncodeBase62Fast(t *testing.T) {
	inputs := [][]byte{nil, {0}, {1}, {61}, {62}, {0xff}, bytes32(0xff), bytes32(0), {0xde, 0xad, 0xbe, 0xef}}
	for i := 0; i < 500; i++ {
		b := make([]byte, 1+i%32)
		if _, err := crand.Read(b); err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b)
	}
	for _, b := range inputs {
		for _, width := range []int{1, 6, 11, 43, 50} {
			if got, want := encodeBase62(b, width), encodeBase62Big(b, width); got != want {
				t.Fatalf("encodeBase62(%x, %d) = %q, want %q", b, width, got, want)
			}
		}
	}
}

func bytes32(c byte) []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = c
	}
	return b
}
