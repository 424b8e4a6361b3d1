package model

import (
	"testing"
	"time"
)

// Every layout, in UTC whatever the zone of t, and the none word for nil.
func TestFormatLayouts(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 90*60)) // 01:34:05 UTC
	for _, c := range []struct {
		name string
		f    func(*time.Time, string) string
		want string
	}{
		{"time", FormatTime, "2030-01-02 01:34 UTC"},
		{"date", FormatDate, "2030-01-02"},
		{"compact", FormatCompact, "2030-01-02 01:34"},
		{"precise", FormatPrecise, "2030-01-02 01:34:05 UTC"},
	} {
		if got := c.f(&at, "never"); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
		if got := c.f(nil, "none-word"); got != "none-word" {
			t.Errorf("%s(nil): got %q", c.name, got)
		}
	}
}
