package tui

import (
	"slices"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
)

// binding is the one record of a key binding, as k9s's KeyAction and
// lazygit's Binding are: the keys it answers to, its help text, whether
// it changes state, and where the ? screen lists it. Everything else
// derives from it:
//   - matching: common.matcher, which also asks whether the binding works
//     now (common.disabled);
//   - hiding while changes are off (a READONLY operator, a read-only file,
//     Options.ReadOnly): every dangerous binding is off, with the reason
//     (common.disabled), so the help bar, the ? screen and the keys agree,
//     and the root says why when one is pressed;
//   - the help bar: each screen's Help lists its bindings in the order
//     they give way when narrow (common.help);
//   - the ? screen: every binding with a section, in declaration order.
//
// Records are immutable and shared by every session. What depends on a
// screen's state (a binding off for now, and why; "t activate" for a
// disabled key) is that screen's keyState, which it sets in updateKeys
// after every Update, never while drawing.
type binding struct {
	keys      []string // what tea.KeyMsg.String() gives for them
	help      string   // the keys as the help shows them ("↑/k")
	desc      string   // what the binding does, in the help
	dangerous bool     // it changes state: off while changes are off
	section   string   // its group on the ? screen; "" for none
}

// bindings is every binding in declaration order, which is the ? screen's
// order: keep each section's bindings together.
var bindings []*binding

// bind declares a binding that only looks or moves.
func bind(section, help, desc string, keys ...string) *binding {
	b := &binding{keys: keys, help: help, desc: desc, section: section}
	bindings = append(bindings, b)
	return b
}

// write declares a dangerous binding: one that changes keys, operators or
// the shared secret. The store refuses those changes as well.
func write(section, help, desc string, keys ...string) *binding {
	b := bind(section, help, desc, keys...)
	b.dangerous = true
	return b
}

var (
	bindUp           = bind("Keys table", "↑/k", "up", "up", "k")
	bindDown         = bind("Keys table", "↓/j", "down", "down", "j")
	bindTop          = bind("Keys table", "g", "first", "g", "home")
	bindBottom       = bind("Keys table", "G", "last", "G", "end")
	bindPageUp       = bind("Keys table", "pgup", "page up", "pgup", "ctrl+b")
	bindPageDown     = bind("Keys table", "pgdn", "page down", "pgdown", "ctrl+f", " ")
	bindDetail       = bind("Keys table", "enter", "details", "enter")
	bindFilter       = bind("Keys table", "/", "filter", "/")
	bindSortName     = bind("Keys table", "N", "sort by name", "N")
	bindSortRole     = bind("Keys table", "R", "sort by role", "R")
	bindSortStatus   = bind("Keys table", "S", "sort by status", "S")
	bindSortExpires  = bind("Keys table", "E", "sort by expiry", "E")
	bindSortLastUsed = bind("Keys table", "L", "sort by last used", "L")
	bindSortCreated  = bind("Keys table", "C", "sort by creator", "C")
	bindNew          = write("Keys table", "n", "new key", "n")
	bindEdit         = write("Keys table", "e", "edit", "e")
	bindToggle       = write("Keys table", "t", "disable", "t") // "activate" on a disabled key
	bindRegenerate   = write("Keys table", "r", "regenerate", "r")
	bindDelete       = write("Keys table", "d", "delete", "d", "delete")

	bindSecret    = bind("Screens", "s", "shared secret", "s")
	bindOperators = bind("Screens", "o", "operators", "o")
	bindAudit     = bind("Screens", "a", "audit log", "a")
	bindHelp      = bind("Screens", "?", "help", "?")

	bindCopy  = bind("Reveal", "c", "copy", "c")
	bindLeave = bind("Reveal", "enter/esc", "I've stored it", "enter", "esc")

	bindRevealSecret = write("Shared secret", "v", "reveal", "v")
	bindRotateSecret = write("Shared secret", "r", "rotate", "r")

	bindAddOperator    = write("Operators", "n", "add operator", "n")
	bindToggleOperator = write("Operators", "t", "disable", "t") // "enable" on a disabled operator
	bindRoleOperator   = write("Operators", "p", "change role", "p")
	bindDeleteOperator = write("Operators", "d", "delete", "d", "delete")
	bindOperatorKeys   = bind("Operators", "enter", "ssh keys", "enter")

	bindAddOpKey    = write("SSH keys", "n", "add key", "n")
	bindRemoveOpKey = write("SSH keys", "d", "remove key", "d", "delete")

	bindYes    = bind("Dialogs", "y", "confirm", "y", "Y")
	bindNo     = bind("Dialogs", "n/esc", "cancel", "n", "N", "esc")
	bindSwitch = bind("Dialogs", "tab/←→", "switch button", "tab", "shift+tab", "left", "right", "h", "l")
	bindChoose = bind("Dialogs", "↑/↓", "choose", "up", "down", "k", "j")
	bindPress  = bind("Dialogs", "enter", "press button", "enter")

	bindBack      = bind("Everywhere", "esc", "back", "esc")
	bindQuit      = bind("Everywhere", "q", "quit", "q")
	bindForceQuit = bind("Everywhere", "ctrl+c", "quit now", "ctrl+c")

	// Not on the ? screen: they belong to a text field or a form, whose
	// help bar shows them.
	bindCancel      = bind("", "esc", "cancel", "esc")
	bindClearFilter = bind("", "esc", "clear filter", "esc")
	bindApplyFilter = bind("", "enter", "keep filter", "enter")
)

// has reports whether msg is one of b's keys, whether or not b works now.
func (b *binding) has(msg tea.KeyMsg) bool { return slices.Contains(b.keys, msg.String()) }

// keyBinding is b as a bubbles key.Binding, for the help bar and for
// bubbles components (the viewport), with help text desc.
func (b *binding) keyBinding(desc string, on bool) key.Binding {
	kb := key.NewBinding(key.WithKeys(b.keys...), key.WithHelp(b.help, desc))
	kb.SetEnabled(on)
	return kb
}

// scrollKeys is the viewport keymap of the scrolling pages.
func scrollKeys() viewport.KeyMap {
	kb := func(b *binding) key.Binding { return b.keyBinding(b.desc, true) }
	return viewport.KeyMap{Up: kb(bindUp), Down: kb(bindDown), PageUp: kb(bindPageUp), PageDown: kb(bindPageDown)}
}

// keyState is one screen's state of the bindings: the ones that do
// nothing now, with the reason, and help texts that follow the selection.
// A screen that has one sets it in updateKeys, which the root calls after
// each of the screen's Updates (as charmbracelet/pop's updateKeymap), so
// Help and View only read it. The zero value, and nil, leave every
// binding as declared.
type keyState struct {
	off    map[*binding]string
	labels map[*binding]string
}

// keyed is a screen with a keyState.
type keyed interface {
	keyState() *keyState
	updateKeys()
}

// keyStateOf returns s's keyState, or nil when it has none.
func keyStateOf(s screen) *keyState {
	if k, ok := s.(keyed); ok {
		return k.keyState()
	}
	return nil
}

// updateKeys lets s set its keyState for its current state.
func updateKeys(s screen) {
	if k, ok := s.(keyed); ok {
		k.updateKeys()
	}
}

// set turns bs off for the reason why, or on when why is "".
func (s *keyState) set(why string, bs ...*binding) {
	if s.off == nil {
		s.off = map[*binding]string{}
	}
	for _, b := range bs {
		if why == "" {
			delete(s.off, b)
		} else {
			s.off[b] = why
		}
	}
}

// relabel gives b the help text desc on this screen.
func (s *keyState) relabel(b *binding, desc string) {
	if s.labels == nil {
		s.labels = map[*binding]string{}
	}
	s.labels[b] = desc
}

// label is b's help text on this screen.
func (s *keyState) label(b *binding) string {
	if s != nil && s.labels[b] != "" {
		return s.labels[b]
	}
	return b.desc
}

// clone copies s, so that a later update of s leaves the copy alone.
func (s *keyState) clone() *keyState {
	if s == nil {
		return nil
	}
	c := &keyState{off: map[*binding]string{}, labels: map[*binding]string{}}
	for b, why := range s.off {
		c.off[b] = why
	}
	for b, l := range s.labels {
		c.labels[b] = l
	}
	return c
}

// disabled says why b does nothing now on the screen whose keyState is s,
// or "" when it works: a dangerous binding while changes are off, then
// the screen's own reason.
func (c *common) disabled(s *keyState, b *binding) string {
	if b.dangerous && c.readonly {
		return c.readonlyReason()
	}
	if s != nil {
		return s.off[b]
	}
	return ""
}

// readonlyReason says why a change is not offered.
func (c *common) readonlyReason() string {
	if c.roWhy != "" {
		return c.roWhy
	}
	return "You are a READONLY operator: you may look, not change."
}

// help returns bs, as they are now on the screen whose keyState is s, for
// the help bar (which leaves out the ones off).
func (c *common) help(s *keyState, bs ...*binding) []key.Binding {
	out := make([]key.Binding, len(bs))
	for i, b := range bs {
		out[i] = b.keyBinding(s.label(b), c.disabled(s, b) == "")
	}
	return out
}

// matcher returns a test of msg for a screen's key switch: whether msg
// is the key of one of bs that works now on the screen whose keyState is
// s.
func (c *common) matcher(s *keyState, msg tea.KeyMsg) func(bs ...*binding) bool {
	return func(bs ...*binding) bool {
		for _, b := range bs {
			if b.has(msg) && c.disabled(s, b) == "" {
				return true
			}
		}
		return false
	}
}
