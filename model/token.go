// Package model is keyward's pure domain: keys, roles, the catalog,
// operators, audit events, tokens, validation, the verification decision
// table and display sanitising. It does no I/O.
package model

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
	"math/bits"
	"strings"
)

// DefaultPrefix starts every token keyward issues unless configured otherwise.
const DefaultPrefix = "kw_"

const (
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	secretBytes    = 32
	// bodyLen is the base62 length of 32 random bytes, zero-padded:
	// ceil(256 / log2(62)) = 43.
	bodyLen     = 43
	checksumLen = 6
	// HintLen is how many characters of the body the display hint keeps.
	HintLen = 4
)

// Token parse errors. All of them map to the MALFORMED verify code; they
// are distinct so the CLI and tests can say exactly what was wrong.
var (
	ErrTokenPrefix   = errors.New("token does not start with the expected prefix")
	ErrTokenLength   = errors.New("token has the wrong length")
	ErrTokenCharset  = errors.New("token contains characters outside base62")
	ErrTokenChecksum = errors.New("token checksum does not match")
)

// Token is a parsed, checksum-verified token. It is never stored.
type Token struct {
	Prefix string
	Body   string // base62 of the random part
}

// String reassembles the token.
func (t Token) String() string {
	return t.Prefix + t.Body + checksum(t.Body)
}

// Hint is the display hint kept in the database: prefix and the first
// HintLen characters of the body. It is not enough to guess the token.
func (t Token) Hint() string { return t.Prefix + t.Body[:HintLen] }

// Hash is the only form of a token that is persisted.
func (t Token) Hash() [32]byte { return HashToken(t.String()) }

// HashToken returns SHA-256 of the full token text.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// GenerateToken returns a new token with the given prefix (DefaultPrefix
// when empty), drawing 32 bytes from crypto/rand.
func GenerateToken(prefix string) (Token, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	var raw [secretBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Token{}, fmt.Errorf("reading random bytes: %w", err)
	}
	return Token{Prefix: prefix, Body: encodeBase62(raw[:], bodyLen)}, nil
}

// ParseToken checks prefix, length, alphabet and checksum without touching
// any database. The checksum lets garbage be refused before a lookup.
func ParseToken(s, prefix string) (Token, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasPrefix(s, prefix) {
		return Token{}, ErrTokenPrefix
	}
	rest := s[len(prefix):]
	if len(rest) != bodyLen+checksumLen {
		return Token{}, ErrTokenLength
	}
	for i := 0; i < len(rest); i++ {
		if !isBase62(rest[i]) {
			return Token{}, ErrTokenCharset
		}
	}
	body, sum := rest[:bodyLen], rest[bodyLen:]
	if !checksumOK(body, sum) {
		return Token{}, ErrTokenChecksum
	}
	return Token{Prefix: prefix, Body: body}, nil
}

func isBase62(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
}

var crcTable = crc32.MakeTable(crc32.IEEE)

// crcOf is crc32.ChecksumIEEE over a string, without converting it to a
// byte slice (which would allocate on every verification).
func crcOf(body string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(body); i++ {
		crc = crcTable[byte(crc)^body[i]] ^ (crc >> 8)
	}
	return ^crc
}

// checksum is the 6-character base62 CRC32 of body. It uses plain integer
// arithmetic (equal to encodeBase62 of the CRC's 4 big-endian bytes), because
// it runs on every verification.
func checksum(body string) string {
	var out [checksumLen]byte
	checksumInto(&out, crcOf(body))
	return string(out[:])
}

func checksumInto(out *[checksumLen]byte, sum uint32) {
	n := uint64(sum)
	for i := checksumLen - 1; i >= 0; i-- {
		out[i] = base62Alphabet[n%62]
		n /= 62
	}
}

// checksumOK compares body's checksum with sum without allocating.
func checksumOK(body, sum string) bool {
	var want [checksumLen]byte
	checksumInto(&want, crcOf(body))
	return string(want[:]) == sum
}

// pow62x10 is 62^10, the largest power of 62 that fits in 64 bits with
// room to spare; dividing by it yields ten digits per pass.
const pow62x10 = 839299365868340224

// encodeBase62 encodes b big-endian, left-padded with '0' to width (only
// the low width digits are kept). Up to 32 bytes it uses four 64-bit limbs
// instead of math/big: token generation is a bulk import's hot path.
func encodeBase62(b []byte, width int) string {
	if len(b) > 32 {
		return encodeBase62Big(b, width)
	}
	var buf [32]byte
	copy(buf[32-len(b):], b)
	var limbs [4]uint64
	for i := range limbs {
		limbs[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	out := make([]byte, width)
	for i := width - 1; i >= 0; {
		var rem uint64
		for j := range limbs {
			limbs[j], rem = bits.Div64(rem, limbs[j], pow62x10)
		}
		for k := 0; k < 10 && i >= 0; k++ {
			out[i] = base62Alphabet[rem%62]
			rem /= 62
			i--
		}
	}
	return string(out)
}

// encodeBase62Big is the general form of encodeBase62, for any length.
func encodeBase62Big(b []byte, width int) string {
	n := new(big.Int).SetBytes(b)
	out := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62Alphabet[mod.Int64()]
	}
	return string(out)
}

// RandomBase62 returns n random bytes encoded as base62 of the given width;
// used for the shared secret.
func RandomBase62(n, width int) (string, error) {
	raw := make([]byte, n)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return encodeBase62(raw, width), nil
}

// NewKeyID returns a short public id: "key_" + 12 lowercase base32 characters.
func NewKeyID() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	out := make([]byte, 0, 16)
	out = append(out, "key_"...)
	for _, c := range raw {
		out = append(out, alphabet[c&31])
	}
	return string(out), nil
}

// validKeyID reports whether s has the shape of a key id.
func validKeyID(s string) bool {
	if len(s) != 16 || !strings.HasPrefix(s, "key_") {
		return false
	}
	for i := 4; i < len(s); i++ {
		c := s[i]
		if !((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')) {
			return false
		}
	}
	return true
}
