package model

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// assertSafe fails if out holds anything a terminal could interpret.
func assertSafe(t testing.TB, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("Sanitize(%q) = %q: invalid UTF-8", in, out)
	}
	for _, r := range out {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == 0x2028 || r == 0x2029 {
			t.Fatalf("Sanitize(%q) = %q keeps %U", in, out, r)
		}
	}
}

func TestSanitize(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"osc52 bel", "a\x1b]52;c;aGVsbG8=\x07b", "ab"},
		{"osc52 st", "a\x1b]52;c;aGVsbG8=\x1b\\b", "ab"},
		{"osc52 c1 st", "a\x1b]52;c;aGVsbG8=\u009cb", "ab"},
		{"osc8 hyperlink", "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\", "click"},
		{"osc8 hyperlink bel", "\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07", "click"},
		{"clear screen", "x\x1b[2J\x1b[Hy", "xy"},
		{"sgr colour", "\x1b[1;31mred\x1b[0m", "red"},
		{"c1 csi", "a\u009b2Jb", "ab"},
		{"c1 osc", "a\u009d52;c;QUJD\u009cb", "ab"},
		{"dcs", "a\x1bPq#0;2;0;0;0\x1b\\b", "ab"},
		{"two-char escape", "a\x1bcb", "ab"},
		{"charset escape", "a\x1b(Bb", "ab"},
		{"lone esc at end", "abc\x1b", "abc"},
		{"unterminated osc", "abc\x1b]52;c;QUJD", "abc"},
		{"unterminated csi", "abc\x1b[12", "abc"},
		{"osc cut by esc starts a new sequence", "a\x1b]0;t\x1b[2Jb", "ab"},
		{"rlo", "evil\u202Etxt.exe", "eviltxt.exe"},
		{"bidi isolates", "\u2066a\u2067b\u2068c\u2069", "abc"},
		{"bidi embeddings and marks", "\u202Aa\u202B\u202C\u202D\u200E\u200F\u061Cb", "ab"},
		{"line separators", "a\u2028b\u2029c", "abc"},
		{"newline tab cr", "a\nb\tc\rd", "a b c d"},
		{"del and nul and bel", "a\x7fb\x00c\x07d", "abcd"},
		{"other c0", "a\x01\x08\x0b\x0c\x1fb", "ab"},
		{"other c1", "a\u0085\u0080b", "ab"},
		{"invalid utf8", "a\xffb\xc3", "ab"},
		{"unicode kept", "Café — 東京 🎉", "Café — 東京 🎉"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Sanitize(c.in)
			if got != c.want {
				t.Fatalf("Sanitize(%q) = %q, want %q", c.in, got, c.want)
			}
			assertSafe(t, c.in, got)
			if again := Sanitize(got); again != got {
				t.Fatalf("not idempotent: %q -> %q", got, again)
			}
			if hasUnsafe(c.in) != (c.in != c.want) {
				t.Fatalf("hasUnsafe(%q) = %v", c.in, hasUnsafe(c.in))
			}
		})
	}
}

func TestSanitizeCleanNoAlloc(t *testing.T) {
	for _, s := range []string{"", "plain name", "Café — 東京 🎉", strings.Repeat("x", 500)} {
		var out string
		allocs := testing.AllocsPerRun(100, func() { out = Sanitize(s) })
		if allocs != 0 {
			t.Errorf("Sanitize(%q) allocated %.0f times", s, allocs)
		}
		if out != s {
			t.Errorf("clean string changed: %q -> %q", s, out)
		}
	}
}

func TestSanitizeEveryRune(t *testing.T) {
	// Every code point, alone and between letters, comes out safe.
	for r := rune(0); r <= 0x3000; r++ {
		in := "a" + string(r) + "b"
		assertSafe(t, in, Sanitize(in))
	}
	for _, r := range []rune{0xFEFF, 0xFFFD, 0x10FFFF, 0xE000} {
		in := "a" + string(r) + "b"
		assertSafe(t, in, Sanitize(in))
	}
}
