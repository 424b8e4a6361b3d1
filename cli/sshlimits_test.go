package cli

import (
	"strings"
	"testing"
)

// TestServeSSHLimitFlags: bad SSH limit values are usage errors (exit 2)
// naming the flag, before anything is opened or listened on.
func TestServeSSHLimitFlags(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ flag, value string }{
		{"--max-term-size", "1073741824x30"},
		{"--max-term-size", "80"},
		{"--max-term-size", "10x\x1b[2J"},
		{"--max-startups", "0"},
		{"--max-startups-per-source", "-1"},
		{"--max-conns-per-operator", "0"},
		{"--max-sessions-per-operator", "0"},
		{"--max-channels-per-conn", "0"},
		{"--login-grace", "0s"},
	} {
		r := e.Run("", "serve", "--ssh", "127.0.0.1:0", "--http", "", tc.flag, tc.value)
		if r.Code != 2 || !strings.Contains(r.Stderr, tc.flag) || strings.Contains(r.Stderr, "\x1b") {
			t.Errorf("serve %s %q: %s", tc.flag, tc.value, r)
		}
	}
}
