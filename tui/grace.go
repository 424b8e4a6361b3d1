package tui

import (
	"fmt"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// graceChoices are the grace periods the regenerate menus offer: how long
// a key's previous secret keeps verifying. (The store accepts any grace
// from 0 to 30 days; this is the menu, so it lives with the screens.)
var graceChoices = []time.Duration{0, time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}

// withGraceMenu offers graceChoices as d's choices and, on confirm, runs
// do with the chosen grace: regenerating a key and rotating the shared
// secret ask the same question.
func withGraceMenu(d *confirmDialog, do func(grace time.Duration) tea.Msg) *confirmDialog {
	for _, g := range graceChoices {
		d.choices = append(d.choices, "Grace: "+fmtGrace(g))
	}
	d.run = func(choice int) tea.Cmd {
		grace := graceChoices[choice]
		return func() tea.Msg { return do(grace) }
	}
	return d
}

// fmtGrace names a grace period in the menus.
func fmtGrace(d time.Duration) string {
	switch {
	case d == 0:
		return "none: the old secret stops working now"
	case d%(24*time.Hour) == 0:
		n := int(d / (24 * time.Hour))
		if n == 1 {
			return "24 hours"
		}
		return fmt.Sprintf("%d days", n)
	case d%time.Hour == 0:
		n := int(d / time.Hour)
		if n == 1 {
			return "1 hour"
		}
		return fmt.Sprintf("%d hours", n)
	}
	return d.String()
}
