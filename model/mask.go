package model

import (
	"regexp"
	"sort"
	"strings"
)

// tokenLike matches a word that resembles a token of any prefix: a short
// word, an underscore and a long run of base62 (a real body is 49
// characters; 20 catches truncated and mistyped ones too). tokenInText is
// the stricter pattern applied to running text as a backstop.
var (
	tokenLike   = regexp.MustCompile(`[A-Za-z][A-Za-z0-9]{0,15}_[0-9A-Za-z]{20,}`)
	tokenInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9]{0,15}_[0-9A-Za-z]{40,}`)
)

// LooksLikeToken reports whether a word given by a user (a command-line
// argument, an SSH command) is, or resembles, a token: it has keyward's
// prefix, or a prefix and a long base62 body.
func LooksLikeToken(s string) bool {
	return strings.HasPrefix(s, DefaultPrefix) || tokenLike.MatchString(s)
}

// TokenHint shows a token-like word as its hint: the prefix and the first
// HintLen characters after it, then an ellipsis.
func TokenHint(s string) string {
	n := len(DefaultPrefix)
	if !strings.HasPrefix(s, DefaultPrefix) {
		n = strings.IndexByte(s, '_') + 1
	}
	return s[:min(len(s), n+HintLen)] + "…"
}

// MaskTokens replaces, in text, every word of words that looks like a
// token (and the value of a "--flag=value" word) with its hint, then any
// remaining token-shaped text. Error messages and logs that quote user
// input pass through it, so a token typed in the wrong place is never
// echoed.
func MaskTokens(text string, words ...string) string {
	var secrets []string
	for _, w := range words {
		secrets = append(secrets, w)
		if _, v, ok := strings.Cut(w, "="); ok {
			secrets = append(secrets, v)
		}
	}
	// Longest first, so a whole word is replaced before a part of it.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, w := range secrets {
		if w != "" && LooksLikeToken(w) && strings.Contains(text, w) {
			text = strings.ReplaceAll(text, w, TokenHint(w))
		}
	}
	return tokenInText.ReplaceAllStringFunc(text, TokenHint)
}

// MaskTokenWords returns words with every token-like one shown as its hint.
func MaskTokenWords(words []string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = MaskTokens(w, w)
	}
	return out
}
