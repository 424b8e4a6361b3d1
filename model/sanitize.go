package model

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// unsafeRune reports characters that must never reach a terminal, a log or
// the database from user data: C0/C1 controls (ESC, BEL, CSI, OSC…), DEL,
// bidi overrides and isolates, and line/paragraph separators.
func unsafeRune(r rune) bool {
	if unicode.IsControl(r) || r == utf8.RuneError {
		return true
	}
	switch {
	case r >= 0x202A && r <= 0x202E, // LRE RLE PDF LRO RLO
		r >= 0x2066 && r <= 0x2069,            // LRI RLI FSI PDI
		r == 0x200E, r == 0x200F, r == 0x061C, // LRM RLM ALM
		r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}

// Sanitize makes a string from users or the database safe to render:
// ANSI/OSC/DCS escape sequences are removed whole, whitespace controls
// become spaces, and any other control, bidi or invalid character is
// dropped. Safe strings are returned without allocating.
func Sanitize(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == 0x1b: // ESC: skip the whole sequence
			i = skipEscape(s, i+1)
			continue
		case r == 0x9b: // C1 CSI
			i = skipCSI(s, i+size)
			continue
		case r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f: // C1 OSC, DCS, SOS, PM, APC
			i = skipString(s, i+size)
			continue
		case r == '\t' || r == '\n' || r == '\r':
			b.WriteByte(' ')
		case unsafeRune(r):
			// dropped
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// skipEscape returns the index after the escape sequence whose ESC byte
// ended just before i.
func skipEscape(s string, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '[':
		return skipCSI(s, i+1)
	case ']', 'P', 'X', '^', '_':
		return skipString(s, i+1)
	}
	// Two-character sequence, possibly with intermediates (0x20-0x2F).
	// A control or non-ASCII byte ends it unconsumed, so that a following
	// ESC starts its own sequence and a multi-byte character stays whole.
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i
}

// skipCSI skips parameter and intermediate bytes up to and including the
// final byte (0x40-0x7E).
func skipCSI(s string, i int) int {
	for i < len(s) {
		c := s[i]
		if c < 0x20 || c > 0x7e { // a control or non-ASCII byte aborts the sequence, unconsumed
			return i
		}
		i++
		if c >= 0x40 && c <= 0x7e {
			return i
		}
	}
	return i
}

// skipString skips an OSC/DCS/SOS/PM/APC body up to BEL, ST (ESC \) or C1 ST.
func skipString(s string, i int) int {
	for i < len(s) {
		if s[i] == 0x07 {
			return i + 1
		}
		if s[i] == 0x1b {
			if i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
			return i // an ESC that is not ST ends the string and starts a new sequence
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == 0x9c {
			return i + size
		}
		i += size
	}
	return i
}

// hasUnsafe reports whether s holds anything Sanitize would change.
func hasUnsafe(s string) bool { return Sanitize(s) != s }
