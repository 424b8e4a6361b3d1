package cli

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestServeMetricsFlag: --metrics is off by default, and may not share
// the HTTP or SSH address (the verify port stays the API alone).
func TestServeMetricsFlag(t *testing.T) {
	parse := func(args ...string) (*serveOptions, error) {
		var o serveOptions
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		o.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &o, o.check()
	}
	o, err := parse()
	if err != nil || o.metricsAddr != "" {
		t.Fatalf("defaults: metrics %q, %v; want off", o.metricsAddr, err)
	}
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:2222"} {
		if _, err := parse("--metrics", addr); err == nil || !strings.Contains(err.Error(), "--metrics") {
			t.Errorf("--metrics %s: %v, want a refusal", addr, err)
		}
	}
	if o, err := parse("--metrics", "127.0.0.1:9464"); err != nil || o.metricsAddr != "127.0.0.1:9464" {
		t.Errorf("--metrics on its own port: %q, %v", o.metricsAddr, err)
	}
}
