package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
)

// helpScreen lists the whole keymap: every binding with a section, in
// declaration order (keymap.go). The ones that do not work on the screen
// it was opened from (not applicable there now, or not allowed while
// changes are off) are left out, so help never promises what a key won't
// do.
type helpScreen struct {
	c    *common
	from *keyState // a copy of the state of the screen it was opened from
	page scrollPage
}

func newHelpScreen(c *common, from screen) *helpScreen {
	h := &helpScreen{c: c, from: keyStateOf(from).clone()}
	h.page = newScrollPage(c, h.content, bindBack, bindHelp)
	return h
}

func (h *helpScreen) Init() tea.Cmd { return nil }
func (h *helpScreen) Title() string { return "Help" }
func (h *helpScreen) Typing() bool  { return false }

func (h *helpScreen) SetSize(w, hh int) { h.page.setSize(w, hh) }

func (h *helpScreen) Help() []key.Binding {
	return h.c.help(nil, bindUp, bindDown, bindBack)
}

func (h *helpScreen) Update(msg tea.Msg) (screen, tea.Cmd) { return h, h.page.update(msg) }
func (h *helpScreen) View() string                         { return h.page.view() }

// scrollPage is the body of a screen that only scrolls (help, an audit
// event): a viewport over content the screen renders, rendered again on
// resize, closed by its own keys.
type scrollPage struct {
	c         *common
	vp        viewport.Model
	content   func() string
	closeKeys []*binding
}

func newScrollPage(c *common, content func() string, closeKeys ...*binding) scrollPage {
	p := scrollPage{c: c, vp: viewport.New(c.width, c.height), content: content, closeKeys: closeKeys}
	p.vp.KeyMap = scrollKeys()
	p.vp.SetContent(content())
	return p
}

func (p *scrollPage) setSize(w, h int) {
	p.vp.Width, p.vp.Height = w, h
	p.vp.SetContent(p.content())
}

// update pops the screen on a close key and scrolls on the others.
func (p *scrollPage) update(msg tea.Msg) tea.Cmd {
	k, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	if p.c.matcher(nil, k)(p.closeKeys...) {
		return pop
	}
	var cmd tea.Cmd
	p.vp, cmd = p.vp.Update(k)
	return cmd
}

func (p *scrollPage) view() string { return viewWithMore(p.c.styles, p.vp) }

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
	blocks := h.sections()
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
	return twoColumns(blocks, colW)
}

// sections renders each section of the keymap as a titled block of the
// bindings that work on the screen help was opened from; a section with
// none is left out.
func (h *helpScreen) sections() []string {
	s := h.c.styles
	var blocks, lines []string
	section := ""
	flush := func() {
		if len(lines) > 0 {
			blocks = append(blocks, s.Title.Render(section)+"\n"+strings.Join(lines, "\n"))
		}
		lines = nil
	}
	for _, b := range bindings {
		if b.section != section {
			flush()
			section = b.section
		}
		if b.section == "" || h.c.disabled(h.from, b) != "" {
			continue
		}
		lines = append(lines, s.Help.FullKey.Render(fit(b.help, 10))+" "+s.Help.FullDesc.Render(h.from.label(b)))
	}
	flush()
	return blocks
}

// twoColumns lays blocks out in two columns colW+2 cells apart, each
// block going to the shorter column.
func twoColumns(blocks []string, colW int) string {
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
