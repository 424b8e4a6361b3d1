package cli

import (
	"net/netip"
	"slices"
	"testing"
)

// TestServeAuthFlags: --auth-trust takes networks and bare addresses
// (v4-mapped ones as IPv4), refuses anything else at flag-check time, as
// are header names that cannot carry the key.
func TestServeAuthFlags(t *testing.T) {
	f := authFlags{keyHeader: "X-API-Key", bearerHeader: "Authorization",
		trust: []string{"10.1.2.3/8", "192.0.2.7", "fd00::/8", "::ffff:198.51.100.0/120"}}
	c, err := f.config()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("198.51.100.0/24")}
	if !slices.Equal(c.Trust, want) {
		t.Fatalf("trust %v, want %v", c.Trust, want)
	}
	for _, bad := range []authFlags{
		{keyHeader: "X-API-Key", bearerHeader: "Authorization", trust: []string{"10.0.0.0/33"}},
		{keyHeader: "X-API-Key", bearerHeader: "Authorization", trust: []string{"example.com"}},
		{keyHeader: "X-API-Key", bearerHeader: "Authorization", trust: []string{"fe80::1%eth0"}},
		{keyHeader: "X API Key", bearerHeader: "Authorization"},
		{keyHeader: "Authorization", bearerHeader: "authorization"},
		{keyHeader: "X-Keyward-Secret", bearerHeader: "Authorization"},
	} {
		if _, err := bad.config(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
