package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/keyward/keyward/model"
)

// confirmDialog asks before anything destructive. It always opens on
// Cancel: enter on a fresh dialog cancels; y confirms; n or esc cancels.
type confirmDialog struct {
	c       *common
	title   string
	body    []string
	action  string // the confirm button's label
	danger  bool
	choices []string // optional (grace periods), chosen with ↑/↓
	choice  int
	onOK    bool // focus on the confirm button; false = Cancel
	run     func(choice int) tea.Cmd
	keys    keyState
}

// keyChangedMsg tells the table one of our own writes landed.
type keyChangedMsg struct{ id string }

func (d *confirmDialog) Init() tea.Cmd    { return nil }
func (d *confirmDialog) Title() string    { return d.action + "?" }
func (d *confirmDialog) Typing() bool     { return false }
func (d *confirmDialog) SetSize(w, h int) {}

func (d *confirmDialog) keyState() *keyState { return &d.keys }

// updateKeys: ↑/↓ choose only among choices.
func (d *confirmDialog) updateKeys() {
	why := ""
	if len(d.choices) == 0 {
		why = "nothing to choose"
	}
	d.keys.set(why, bindChoose)
}

func (d *confirmDialog) Help() []key.Binding {
	return d.c.help(&d.keys, bindYes, bindNo, bindSwitch, bindChoose, bindPress)
}

func (d *confirmDialog) Update(msg tea.Msg) (screen, tea.Cmd) {
	k, ok := msg.(tea.KeyMsg)
	if !ok {
		return d, nil
	}
	on := d.c.matcher(&d.keys, k)
	switch {
	case on(bindYes):
		return d, d.confirm()
	case on(bindNo):
		return d, pop
	case on(bindPress):
		if d.onOK {
			return d, d.confirm()
		}
		return d, pop
	case on(bindSwitch):
		d.onOK = !d.onOK
	case len(d.choices) > 0 && on(bindChoose):
		if k.String() == "up" || k.String() == "k" {
			d.choice = max(d.choice-1, 0)
		} else {
			d.choice = min(d.choice+1, len(d.choices)-1)
		}
	}
	return d, nil
}

func (d *confirmDialog) confirm() tea.Cmd { return tea.Sequence(pop, d.run(d.choice)) }

func (d *confirmDialog) View() string {
	s := d.c.styles
	width := min(max(d.c.width-8, 30), 64)
	var b strings.Builder
	b.WriteString(s.Bold.Render(wrap(s, d.title, width)))
	b.WriteString("\n\n")
	for _, l := range d.body {
		b.WriteString(wrap(s, l, width))
		b.WriteByte('\n')
	}
	if len(d.choices) > 0 {
		b.WriteByte('\n')
		for i, ch := range d.choices {
			mark := "( ) "
			if i == d.choice {
				mark = "(•) "
			}
			b.WriteString(clipText(mark+ch, width))
			b.WriteByte('\n')
		}
	}
	b.WriteByte('\n')
	cancel, ok := s.Button.Render("  Cancel  "), s.Button.Render("  "+d.action+"  ")
	focus := s.ButtonFocus
	if d.danger {
		focus = s.DangerFocus
	}
	if d.onOK {
		ok = focus.Render("[ " + d.action + " ]")
	} else {
		cancel = s.ButtonFocus.Render("[ Cancel ]")
	}
	b.WriteString(cancel + "  " + ok + "\n")
	b.WriteString(s.Dim.Render("y confirms · n/esc cancels"))
	box := s.Box
	if d.danger {
		box = s.DangerBox
	}
	return s.r.Place(d.c.width, d.c.height, lipgloss.Center, lipgloss.Center, box.Width(width+2).Render(b.String()))
}

// wrap breaks text at spaces to width cells.
func wrap(s *styles, text string, width int) string {
	return s.r.NewStyle().Width(width).Render(text)
}

func quoteName(k *model.Key) string { return fmt.Sprintf("“%s” (%s)", clean(k.Name), clean(k.ID)) }

func deleteDialog(c *common, k *model.Key) *confirmDialog {
	id, st, actor := k.ID, c.st, c.actor
	name := clean(k.Name)
	return &confirmDialog{c: c, action: "Delete", danger: true,
		title: "Delete key " + quoteName(k) + "?",
		body:  []string{"This is permanent; services using it lose access at once.", "Its audit history is kept."},
		run: func(int) tea.Cmd {
			return func() tea.Msg {
				if err := st.DeleteKey(actor, id); err != nil {
					return flashMsg{text: errText(err), bad: true}
				}
				return tea.BatchMsg{changed(id), flash("Deleted key %q.", name)}
			}
		}}
}

func toggleDialog(c *common, k *model.Key) *confirmDialog {
	id, st, actor := k.ID, c.st, c.actor
	name := clean(k.Name)
	activate := !k.Active()
	d := &confirmDialog{c: c, action: "Disable", danger: true,
		title: "Disable key " + quoteName(k) + "?",
		body:  []string{"Services using it are refused from their next request (DISABLED).", "You can activate it again later."}}
	if activate {
		d.action, d.danger = "Activate", false
		d.title = "Activate key " + quoteName(k) + "?"
		d.body = []string{"It verifies again from the next request (unless it has expired)."}
	}
	d.run = func(int) tea.Cmd {
		return func() tea.Msg {
			if _, err := st.SetKeyActive(actor, id, activate); err != nil {
				return flashMsg{text: errText(err), bad: true}
			}
			verb := "Disabled"
			if activate {
				verb = "Activated"
			}
			return tea.BatchMsg{changed(id), flash("%s key %q.", verb, name)}
		}
	}
	return d
}

func regenerateDialog(c *common, k *model.Key) *confirmDialog {
	id, st, actor := k.ID, c.st, c.actor
	d := &confirmDialog{c: c, action: "Regenerate", danger: true,
		title: "Regenerate the secret of key " + quoteName(k) + "?",
		body:  []string{"A new secret is issued and shown once. How long may the old secret keep working?"}}
	return withGraceMenu(d, func(grace time.Duration) tea.Msg {
		nk, token, err := st.RegenerateKey(actor, id, grace)
		if err != nil {
			return flashMsg{text: errText(err), bad: true}
		}
		return tea.BatchMsg{changed(id), push(newReveal(c, revealKey(nk, token, grace)))}
	})
}

func changed(id string) tea.Cmd { return func() tea.Msg { return keyChangedMsg{id} } }

// graceNote explains a regeneration's grace period on the reveal screen.
func graceNote(grace time.Duration, until *time.Time) string {
	if grace == 0 || until == nil {
		return "The previous secret stopped working now."
	}
	return "The previous secret keeps working until " + model.FormatTime(until, "never") + "."
}
