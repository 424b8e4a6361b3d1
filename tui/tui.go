// Package tui is keyward's terminal UI: one bubbletea screen per admin
// page, routed by a small root model (root.go).
package tui

import (
	"io"
	"os"
	"time"

	"github.com/charmbracelet/bubbles/help"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Clipboard copies text for the admin. Locally it is the native clipboard
// (with an OSC 52 fallback); over SSH it is OSC 52 written to the session.
type Clipboard interface {
	// Copy places text on the clipboard. It returns a tea.Cmd-friendly
	// error message fit to show the user (never atotto's raw error).
	Copy(text string) error
	// Clear empties the clipboard if it still holds text, where that can
	// be known; OSC 52 overwrites it with a blank unconditionally (and
	// cannot confirm it).
	Clear(text string) error
	// Name says how copying works ("system clipboard", "OSC 52").
	Name() string
}

// Options configure one TUI program (one per local run or SSH session).
type Options struct {
	Store *store.Store
	// Actor is the operator every change is made as: a name, or a
	// model.Actor string binding the operator's account (and SSH key). A
	// name is bound to the account it names when the store is attached, so
	// the program keeps no authority if that account is deleted and
	// another takes its name.
	Actor string
	// Renderer builds this program's styles; nil means lipgloss's default.
	// Over SSH each session passes its own (bubbletea.MakeRenderer).
	Renderer *lipgloss.Renderer
	// Clipboard; nil picks the native clipboard with an OSC 52 fallback
	// (OSC 52 only when $SSH_TTY or $SSH_CONNECTION is set).
	Clipboard Clipboard
	// Now replaces the clock, for tests.
	Now func() time.Time
	// Output is where the program draws and where the default clipboard
	// sends OSC 52 (default os.Stdout). Used by Run and by New's default
	// clipboard.
	Output io.Writer
	// ReadOnly hides every state-changing binding even for an ADMIN. A
	// READONLY, disabled or unknown operator is always read-only; the
	// store refuses their writes as well.
	ReadOnly bool

	// Open, with Store nil, starts the TUI before the store is open: the
	// keys table paints First (the first keys in name order, from
	// store.Peek) and FirstTotal at once, while Open loads the whole
	// database in the background. Until it returns, only moving, help and
	// quitting work. If Open fails the program ends and Run returns the
	// error. The caller owns (closes) the store Open returns.
	Open       func() (*store.Store, error)
	First      []*model.Key
	FirstTotal int
	// FirstOperators are the operators Peek read with First, so the
	// first page's statuses are true (model.StatusOf) before Open is done.
	FirstOperators []model.Operator
}

// Model is the root model New returns. Call Close after the program ends
// (over SSH the session may end without a quit key) to stop its
// subscription to the store's change feed.
type Model interface {
	tea.Model
	Close()
}

// New returns the root model.
func New(opts Options) tea.Model { return newRoot(opts) }

func newRoot(opts Options) *root {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Output == nil {
		opts.Output = os.Stdout
	}
	if opts.Clipboard == nil {
		opts.Clipboard = pickClipboard(opts.Output)
	}
	c := &common{
		actor: opts.Actor, name: model.ActorName(opts.Actor), readonly: true, forceRO: opts.ReadOnly,
		styles: newStyles(opts.Renderer), clip: opts.Clipboard, now: opts.Now, width: 80, height: 22,
	}
	m := &root{c: c, help: help.New()}
	if opts.Store == nil && opts.Open != nil {
		m.open = opts.Open
		m.stack = []screen{newPeekTable(c, opts.First, opts.FirstOperators, opts.FirstTotal)}
		return m
	}
	m.stack = []screen{newKeysTable(c, nil, nil)}
	m.attach(opts.Store)
	return m
}

// attach makes st the program's store: it settles the operator's rights
// and subscribes to the change feed. A nil st (screen tests) is read-write
// unless ReadOnly was asked for.
func (m *root) attach(st *store.Store) {
	c := m.c
	readonly, why := c.forceRO, ""
	if readonly {
		why = "Opened read-only: changes are disabled."
	}
	if st != nil {
		a := model.ParseActor(c.actor)
		op, err := st.Operator(a.Name)
		switch {
		case st.ReadOnly():
			// Same mechanism as a READONLY operator: every binding that
			// writes is hidden, so nothing is offered that would fail.
			readonly, why = true, "The database file is read-only (not writable): changes are disabled."
		case err != nil:
			readonly, why = true, "You are not an operator of this database: read-only."
		case a.ID != "" && op.ID != a.ID:
			readonly, why = true, "Your operator account was deleted: read-only."
		case op.Disabled:
			readonly, why = true, "Your operator account is disabled: read-only."
		case op.Role != model.OperatorAdmin:
			readonly = true
		}
		if err == nil && a.ID == "" {
			a.ID = op.ID
			c.actor = a.String()
		}
		m.sub = st.Subscribe()
		if st.Backend() == "etcd" {
			c.outOfTouch = func() (time.Duration, bool) { return st.SinceHeard(), st.Stale() != nil }
		}
	}
	c.st, c.readonly, c.roWhy = st, readonly, why
	if why != "" {
		m.flash.set(flashMsg{text: why, bad: true})
	}
}

// Run starts the TUI full-screen on the local terminal.
func Run(opts Options) error {
	if opts.Output == nil {
		opts.Output = os.Stdout
	}
	if opts.Renderer == nil {
		opts.Renderer = lipgloss.NewRenderer(opts.Output)
		if termenv.EnvNoColor() {
			opts.Renderer.SetColorProfile(termenv.Ascii)
		}
	}
	m := newRoot(opts)
	defer m.Close()
	_, err := tea.NewProgram(m, tea.WithAltScreen(), tea.WithOutput(opts.Output)).Run()
	if err == nil {
		err = m.openErr
	}
	return err
}
