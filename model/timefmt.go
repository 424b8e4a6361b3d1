package model

import "time"

// The layouts keyward shows times in, all in UTC. Every time people read
// goes through the Format functions below, so one layout never has two
// spellings.
const (
	// TimeLayout is how keyward shows a time to people: to the minute, in UTC.
	TimeLayout = "2006-01-02 15:04 UTC"
	// DateLayout is a day: expiries in tables and on the reveal screen.
	DateLayout = time.DateOnly
	// CompactLayout is TimeLayout without the zone, for columns too
	// narrow for it (audit log, history, operators' last login).
	CompactLayout = "2006-01-02 15:04"
	// PreciseLayout is TimeLayout with seconds: one audit event in full.
	PreciseLayout = "2006-01-02 15:04:05 UTC"
)

// FormatTime shows t in TimeLayout, or none when t is nil.
func FormatTime(t *time.Time, none string) string { return format(t, none, TimeLayout) }

// FormatDate shows t in DateLayout, or none when t is nil.
func FormatDate(t *time.Time, none string) string { return format(t, none, DateLayout) }

// FormatCompact shows t in CompactLayout, or none when t is nil.
func FormatCompact(t *time.Time, none string) string { return format(t, none, CompactLayout) }

// FormatPrecise shows t in PreciseLayout, or none when t is nil.
func FormatPrecise(t *time.Time, none string) string { return format(t, none, PreciseLayout) }

func format(t *time.Time, none, layout string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(layout)
}
