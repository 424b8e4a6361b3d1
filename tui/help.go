package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
)

// helpScreen lists the whole keymap, generated from the key.Bindings.
// Disabled bindings (not applicable now, or not allowed for a READONLY
// operator) are left out, so help never promises what a key won't do.
type helpScreen struct {
	c  *common
	vp viewport.Model
}

func newHelpScreen(c *common, from screen) *helpScreen {
	from.Help() // let the screen we came from set its bindings' state
	h := &helpScreen{c: c, vp: viewport.New(c.width, c.height)}
	h.vp.KeyMap = viewport.KeyMap{Up: c.keys.Up, Down: c.keys.Down, PageUp: c.keys.PageUp, PageDown: c.keys.PageDown}
	h.vp.SetContent(h.content())
	return h
}

func (h *helpScreen) Init() tea.Cmd { return nil }
func (h *helpScreen) Title() string { return "Help" }
func (h *helpScreen) Typing() bool  { return false }

func (h *helpScreen) SetSize(w, hh int) {
	h.vp.Width, h.vp.Height = w, hh
	h.vp.SetContent(h.content())
}

func (h *helpScreen) Help() []key.Binding {
	return []key.Binding{h.c.keys.Up, h.c.keys.Down, h.c.keys.Back}
}

func (h *helpScreen) Update(msg tea.Msg) (screen, tea.Cmd) {
	if k, ok := msg.(tea.KeyMsg); ok {
		if key.Matches(k, h.c.keys.Back, h.c.keys.Help) {
			return h, pop
		}
		var cmd tea.Cmd
		h.vp, cmd = h.vp.Update(k)
		return h, cmd
	}
	return h, nil
}

func (h *helpScreen) View() string { return viewWithMore(h.c.styles, h.vp) }

// viewWithMore renders a scrolling page; when more lies below the last
// line, that line says so (at 80x24 the help used to end mid-list with no
// sign that it scrolls).
func viewWithMore(s *styles, vp viewport.Model) string {
	v := vp.View()
	if vp.AtBottom() || vp.TotalLineCount() <= vp.Height {
		return v
	}
	lines := strings.Split(v, "\n")
	lines[len(lines)-1] = s.Dim.Render(fit(fmt.Sprintf("  ↓ more below (↓/j, pgdn) · %d%%", int(vp.ScrollPercent()*100)), vp.Width))
	return strings.Join(lines, "\n")
}

func (h *helpScreen) content() string {
	s := h.c.styles
	var blocks []string
	for _, sec := range h.c.keys.sections() {
		var lines []string
		for _, b := range sec.bindings {
			if !b.Enabled() {
				continue
			}
			lines = append(lines, s.Help.FullKey.Render(fit(b.Help().Key, 10))+" "+s.Help.FullDesc.Render(b.Help().Desc))
		}
		if len(lines) == 0 {
			continue
		}
		blocks = append(blocks, s.Title.Render(sec.title)+"\n"+strings.Join(lines, "\n"))
	}
	switch {
	case h.c.roWhy != "":
		blocks = append(blocks, s.Dim.Render(wrap(s, h.c.roWhy+" Actions that change keys, operators or the secret are hidden.", 36)))
	case h.c.readonly:
		blocks = append(blocks, s.Dim.Render("You are READONLY: actions that change keys,\noperators or the secret are hidden."))
	}
	// Two columns when there is room.
	colW := 38
	if h.c.width < 2*colW+2 {
		return strings.Join(blocks, "\n\n")
	}
	var left, right []string
	lh, rh := 0, 0
	for _, b := range blocks {
		n := strings.Count(b, "\n") + 2
		if lh <= rh {
			left, lh = append(left, b), lh+n
		} else {
			right, rh = append(right, b), rh+n
		}
	}
	l := strings.Split(strings.Join(left, "\n\n"), "\n")
	r := strings.Split(strings.Join(right, "\n\n"), "\n")
	var out []string
	for i := 0; i < max(len(l), len(r)); i++ {
		a, b := "", ""
		if i < len(l) {
			a = l[i]
		}
		if i < len(r) {
			b = r[i]
		}
		out = append(out, a+strings.Repeat(" ", max(colW+2-ansi.StringWidth(a), 1))+b)
	}
	return strings.Join(out, "\n")
}

// shortDescs are the help bar's words for the longer help texts, used
// when the full ones do not fit the width.
var shortDescs = map[string]string{
	"details": "open", "new key": "new", "regenerate": "regen", "shared secret": "secret",
	"audit log": "audit", "add operator": "add", "change role": "role", "page down": "pg dn",
	"page up": "pg up", "I've stored it": "stored", "change filter": "filter",
}

// footerHelp renders the help bar for width w. Every enabled binding
// shows, in order: with its full words if they fit, else with short words
// and narrower gaps. When even that is too wide, bindings are left out
// from the end, but "? help", which lists them all, always stays, last.
// (bubbles' ShortHelpView cut the tail instead: at 120 columns "o
// operators" and "a audit log" were never shown.)
func footerHelp(s *styles, bs []key.Binding, w int) string {
	var on []key.Binding
	var helpB *key.Binding
	for i := range bs {
		switch {
		case !bs[i].Enabled():
		case bs[i].Help().Key == "?" && helpB == nil:
			helpB = &bs[i]
		default:
			on = append(on, bs[i])
		}
	}
	item := func(b key.Binding, short bool) string {
		d := b.Help().Desc
		if sd, ok := shortDescs[d]; ok && short {
			d = sd
		}
		return s.Help.ShortKey.Render(b.Help().Key) + " " + s.Help.ShortDesc.Render(d)
	}
	render := func(n int, short bool, sep string) string {
		var items []string
		for _, b := range on[:n] {
			items = append(items, item(b, short))
		}
		if helpB != nil {
			items = append(items, item(*helpB, short))
		}
		return strings.Join(items, s.Help.ShortSeparator.Render(sep))
	}
	for _, v := range []struct {
		short bool
		sep   string
	}{{false, " • "}, {true, " • "}, {true, "  "}} {
		if out := render(len(on), v.short, v.sep); ansi.StringWidth(out) <= w {
			return out
		}
	}
	for n := len(on) - 1; n >= 0; n-- {
		if out := render(n, true, "  "); ansi.StringWidth(out) <= w {
			return out
		}
	}
	return clipText(render(0, true, "  "), w)
}
