package tui

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// common is the context every screen shares: the store, who is acting,
// their rights, styles, clipboard, clock and the terminal size.
type common struct {
	st *store.Store
	// actor is what the store's writes are made as (model.Actor: the
	// operator name, and once the store is attached the account's id and,
	// over SSH, the session's key fingerprint); name is the operator name.
	actor    string
	name     string
	readonly bool
	// roWhy says why changes are off when that is not simply a READONLY
	// operator: a read-only database file, an unknown or disabled
	// operator, Options.ReadOnly. Shown at start, on the help and secret
	// screens, and when a hidden key is pressed.
	roWhy   string
	forceRO bool // Options.ReadOnly
	// outOfTouch, on a store kept in etcd, says for how long this node
	// has not heard from the cluster, when that is past the store's bound
	// (store.Stale): what the admin sees may be out of date, and changes
	// will fail. Nil on a bbolt file.
	outOfTouch func() (time.Duration, bool)
	styles     *styles
	clip       Clipboard
	now        func() time.Time
	width      int
	height     int // height available to a screen's body
}

// screen is one admin page. The root keeps a stack of them; the keys table
// is always at the bottom.
type screen interface {
	Init() tea.Cmd
	Update(tea.Msg) (screen, tea.Cmd)
	View() string
	SetSize(w, h int)
	// Title names the screen in the header.
	Title() string
	// Help returns the screen's bindings as they are now, for the help
	// bar; it only reads (a screen with state of its own sets it in
	// updateKeys, see keyed).
	Help() []key.Binding
	// Typing reports whether a text field has focus, so that q types a
	// letter instead of quitting.
	Typing() bool
}

// Messages that the root routes.
type (
	pushMsg  struct{ s screen }
	popMsg   struct{}
	flashMsg struct {
		text string
		bad  bool
	}
	// feedMsg carries coalesced store changes to every screen.
	feedMsg struct{ changes []store.Change }
)

// replyMsg is a command's result addressed to the screen that started
// it. The root delivers it to that screen wherever it sits on the stack,
// or drops it if the screen has gone. Without the address a result goes
// to the top screen, and a screen that reloads after its own action (a
// regenerate, a secret reveal) finds a dialog or the reveal screen on top
// by the time its data arrives: the data was lost and the screen stale.
type replyMsg struct {
	to  screen
	msg tea.Msg
}

// reply runs cmd for s and addresses its result to s. Every screen that
// shows store data loads through it.
func reply(s screen, cmd tea.Cmd) tea.Cmd {
	if cmd == nil {
		return nil
	}
	return func() tea.Msg {
		msg := cmd()
		if msg == nil {
			return nil
		}
		return replyMsg{to: s, msg: msg}
	}
}

func push(s screen) tea.Cmd { return func() tea.Msg { return pushMsg{s} } }
func pop() tea.Msg          { return popMsg{} }

func flash(format string, args ...any) tea.Cmd {
	text := fmt.Sprintf(format, args...)
	return func() tea.Msg { return flashMsg{text: text} }
}

func flashErr(err error) tea.Cmd {
	text := errText(err)
	return func() tea.Msg { return flashMsg{text: text, bad: true} }
}

// errText turns a store error into a sentence fit for the status bar. Every
// error text is sanitised: it may quote names from the database.
func errText(err error) string {
	var fe *model.FieldError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, store.ErrForbidden):
		return "Not allowed: " + model.Sanitize(err.Error())
	case errors.Is(err, store.ErrSelf):
		return "Refused: " + model.Sanitize(err.Error()) + "."
	case errors.Is(err, store.ErrLastAdmin):
		return "Refused: " + model.Sanitize(err.Error()) + "."
	case errors.Is(err, store.ErrNotFound):
		return "Gone: " + model.Sanitize(err.Error()) + " (someone may have deleted it)."
	case errors.Is(err, store.ErrClosed):
		return "The database is closed."
	case errors.As(err, &fe):
		return fieldLabel(fe.Field) + ": " + model.Sanitize(fe.Msg)
	}
	return "Error: " + model.Sanitize(err.Error())
}

func fieldLabel(f string) string {
	switch f {
	case "expires":
		return "Expiry"
	case "key":
		return "Public key"
	case "":
		return "Error"
	}
	return strings.ToUpper(f[:1]) + f[1:]
}

// clean sanitises a data string for display.
func clean(s string) string { return model.Sanitize(s) }

// clampCursor is cursor kept on a list of n rows: the first row when it
// is before it or the list is empty, the last when it is past the end.
// Every list screen moves and reloads its cursor through it.
func clampCursor(cursor, n int) int { return max(min(cursor, n-1), 0) }

// listMove moves a list cursor over n rows when on matches a moving key
// (↑/↓, pgup/pgdn by page rows, g/G), and says whether one did. Every list
// screen moves the same way through it.
func listMove(on func(...*binding) bool, cursor, n, page int) (int, bool) {
	switch {
	case on(bindUp):
		cursor--
	case on(bindDown):
		cursor++
	case on(bindPageUp):
		cursor -= page
	case on(bindPageDown):
		cursor += page
	case on(bindTop):
		cursor = 0
	case on(bindBottom):
		cursor = n - 1
	default:
		return cursor, false
	}
	return clampCursor(cursor, n), true
}

// fit truncates s to width cells (with an ellipsis) and pads it to exactly
// width. s must already be sanitised and unstyled.
func fit(s string, width int) string {
	if width <= 0 {
		return ""
	}
	w := ansi.StringWidth(s)
	if w > width {
		s = ansi.Truncate(s, width, "…")
		w = ansi.StringWidth(s)
	}
	if w < width {
		s += strings.Repeat(" ", width-w)
	}
	return s
}

// clip shortens s to at most width cells without padding.
func clipText(s string, width int) string {
	if width <= 0 {
		return ""
	}
	if ansi.StringWidth(s) > width {
		return ansi.Truncate(s, width, "…")
	}
	return s
}

// padLines makes v exactly h lines high, truncating or padding, so that
// screens never push the footer off the terminal.
func padLines(v string, w, h int) string {
	if h <= 0 {
		return ""
	}
	lines := strings.Split(v, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		if ansi.StringWidth(l) > w {
			lines[i] = ansi.Truncate(l, w, "")
		}
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
}

// ago renders a past time relative to now ("3d ago"), or "Never".
func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "Never"
	}
	d := now.Sub(*t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	case d < 60*24*time.Hour:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
	return model.FormatDate(t, "")
}

// sanitizeInput drops control, escape and bidi characters from typed or
// pasted text before any screen sees it, so a text field never echoes them
// to the operator's terminal (validation would refuse them on save anyway).
// It returns nil when nothing printable is left.
func sanitizeInput(msg tea.Msg) tea.Msg {
	k, ok := msg.(tea.KeyMsg)
	if !ok || k.Type != tea.KeyRunes {
		return msg
	}
	typed := string(k.Runes)
	clean := model.Sanitize(typed)
	if clean == typed {
		return msg
	}
	if clean == "" {
		return nil
	}
	k.Runes = []rune(clean)
	return k
}
