// Package tui is keyward's terminal UI: one bubbletea screen per admin
// page, routed by a small root model.
package tui

import (
	"errors"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/keyward/keyward/store"
)

// Clipboard copies text for the admin. Locally it is the native clipboard
// (with an OSC 52 fallback); over SSH it is OSC 52 written to the session.
type Clipboard interface {
	// Copy places text on the clipboard. It returns a tea.Cmd-friendly
	// error message fit to show the user (never atotto's raw error).
	Copy(text string) error
	// Clear empties the clipboard if it still holds text, where that can
	// be known; OSC 52 clears unconditionally.
	Clear(text string) error
	// Name says how copying works ("system clipboard", "OSC 52").
	Name() string
}

// Options configure one TUI program (one per local run or SSH session).
type Options struct {
	Store *store.Store
	// Actor is the operator name every change is attributed to.
	Actor string
	// Renderer builds this program's styles; nil means lipgloss's default.
	// Over SSH each session passes its own (bubbletea.MakeRenderer).
	Renderer *lipgloss.Renderer
	// Clipboard; nil picks the native clipboard with an OSC 52 fallback.
	Clipboard Clipboard
	// Now replaces the clock, for tests.
	Now func() time.Time
}

// New returns the root model.
func New(opts Options) tea.Model {
	panic("tui: not built yet")
}

// Run starts the TUI full-screen on the local terminal.
func Run(opts Options) error {
	return errors.New("the TUI is not built yet; use the keys subcommands")
}
