package model

import "time"

// TimeLayout is how keyward shows a time to people: to the minute, in UTC.
const TimeLayout = "2006-01-02 15:04 UTC"

// FormatTime shows t in TimeLayout, or none when t is nil.
func FormatTime(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(TimeLayout)
}
