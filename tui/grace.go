package tui

import "time"

// graceChoices are the grace periods the regenerate menus offer: how long
// a key's previous secret keeps verifying. (The store accepts any grace
// from 0 to 30 days; this is the menu, so it lives with the screens.)
var graceChoices = []time.Duration{0, time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}
