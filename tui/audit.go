package tui

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// auditLimit bounds how many of the newest events the audit screen loads.
const auditLimit = 5000

// auditScreen is a scrollable, filterable list of audit events.
type auditScreen struct {
	c         *common
	target    string
	all       []model.AuditEvent
	view      []model.AuditEvent
	err       error
	loaded    bool
	offset    int // first row shown
	cursor    int // the selected row: enter opens it whole
	filter    textinput.Model
	filtering bool
	keys      keyState
}

type auditLoadedMsg struct {
	evs []model.AuditEvent
	err error
}

func newAuditScreen(c *common, target string) *auditScreen {
	ti := textinput.New()
	ti.Prompt = "/ "
	ti.Placeholder = "actor, action, target or detail"
	ti.CharLimit = 64
	return &auditScreen{c: c, target: target, filter: ti}
}

func (a *auditScreen) Init() tea.Cmd { return a.load() }
func (a *auditScreen) Title() string { return "Audit log" }
func (a *auditScreen) Typing() bool  { return a.filtering }

func (a *auditScreen) SetSize(w, h int) { a.clamp() }

func (a *auditScreen) load() tea.Cmd {
	st, target := a.c.st, a.target
	return reply(a, func() tea.Msg {
		evs, err := st.Audit(store.AuditFilter{Target: target, Limit: auditLimit})
		return auditLoadedMsg{evs, err}
	})
}

func (a *auditScreen) keyState() *keyState { return &a.keys }

// updateKeys: enter opens the selected event, so it needs one.
func (a *auditScreen) updateKeys() {
	why := ""
	if len(a.view) == 0 {
		why = "no event shown"
	}
	a.keys.set(why, bindDetail)
}

func (a *auditScreen) Help() []key.Binding {
	if a.filtering {
		return a.c.help(&a.keys, bindApplyFilter, bindClearFilter)
	}
	return a.c.help(&a.keys, bindDetail, bindUp, bindDown, bindPageDown, bindFilter, bindBack, bindHelp)
}

func (a *auditScreen) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case auditLoadedMsg:
		a.all, a.err, a.loaded = msg.evs, msg.err, true
		a.apply()
	case feedMsg:
		return a, a.load()
	case tea.KeyMsg:
		on := a.c.matcher(&a.keys, msg)
		if a.filtering {
			switch {
			case on(bindClearFilter):
				a.filtering = false
				a.filter.SetValue("")
				a.filter.Blur()
				a.apply()
			case on(bindApplyFilter):
				a.filtering = false
				a.filter.Blur()
			default:
				var cmd tea.Cmd
				a.filter, cmd = a.filter.Update(msg)
				a.apply()
				return a, cmd
			}
			return a, nil
		}
		page := max(a.rows()-1, 1)
		switch {
		case on(bindBack):
			if a.filter.Value() != "" {
				a.filter.SetValue("")
				a.apply()
				return a, nil
			}
			return a, pop
		case on(bindFilter):
			a.filtering = true
			return a, a.filter.Focus()
		case on(bindDetail):
			if a.cursor < len(a.view) {
				return a, push(newAuditEvent(a.c, a.view[a.cursor]))
			}
		default:
			a.cursor, _ = listMove(on, a.cursor, len(a.view), page)
		}
		a.clamp()
	default:
		if a.filtering {
			var cmd tea.Cmd
			a.filter, cmd = a.filter.Update(msg)
			return a, cmd
		}
	}
	return a, nil
}

func (a *auditScreen) apply() {
	q := strings.ToLower(strings.TrimSpace(a.filter.Value()))
	if q == "" {
		a.view = a.all
	} else {
		a.view = a.view[:0:0]
		for _, ev := range a.all {
			if containsFold(ev.Actor, q) || containsFold(ev.Action, q) || containsFold(ev.Target, q) || containsFold(ev.Detail, q) {
				a.view = append(a.view, ev)
			}
		}
	}
	a.clamp()
}

func (a *auditScreen) rows() int { return max(a.c.height-3, 1) }

func (a *auditScreen) clamp() {
	a.cursor = clampCursor(a.cursor, len(a.view))
	if a.cursor < a.offset {
		a.offset = a.cursor
	}
	if a.cursor >= a.offset+a.rows() {
		a.offset = a.cursor - a.rows() + 1
	}
	a.offset = max(min(a.offset, len(a.view)-a.rows()), 0)
}

func (a *auditScreen) View() string {
	s, w := a.c.styles, a.c.width
	var b strings.Builder
	if a.filtering {
		b.WriteString(a.filter.View())
	} else if q := a.filter.Value(); q != "" {
		b.WriteString(s.Dim.Render(clipText(fmt.Sprintf("filter %q · %d of %d · / edits · esc clears", clean(q), len(a.view), len(a.all)), w)))
	} else {
		b.WriteString(s.Dim.Render(clipText(model.Count(len(a.all), "event", "")+", newest first · / filters", w)))
	}
	b.WriteByte('\n')
	b.WriteString(s.ColHeader.Render(fit("Time (UTC)        Actor       Action           Target            Detail", w)) + "\n")
	switch {
	case !a.loaded:
		b.WriteString(s.Dim.Render("Loading…"))
	case a.err != nil:
		b.WriteString(s.Error.Render(errText(a.err)))
	case len(a.view) == 0:
		b.WriteString(s.Empty.Render("No events match."))
	}
	end := min(a.offset+a.rows(), len(a.view))
	for i := a.offset; i < end; i++ {
		ev := a.view[i]
		line := model.FormatCompact(&ev.Time, "") + "  " + fit(clean(ev.Actor), 11) + " " +
			fit(clean(ev.Action), 16) + " " + fit(clean(ev.Target), 17) + " " + clean(ev.Detail)
		if i == a.cursor {
			b.WriteString(s.Selected.Render(fit(line, w)) + "\n")
		} else {
			b.WriteString(clipText(line, w) + "\n")
		}
	}
	if len(a.view) > a.rows() {
		b.WriteString(s.Dim.Render(fmt.Sprintf("%d–%d of %d", a.offset+1, end, len(a.view))))
	}
	return b.String()
}

// auditEvent shows one audit event whole: the list cuts long details to
// the line, this wraps every field to the width and scrolls.
type auditEvent struct {
	c    *common
	ev   model.AuditEvent
	page scrollPage
}

func newAuditEvent(c *common, ev model.AuditEvent) *auditEvent {
	e := &auditEvent{c: c, ev: ev}
	e.page = newScrollPage(c, e.content, bindBack, bindDetail)
	return e
}

func (e *auditEvent) Init() tea.Cmd { return nil }
func (e *auditEvent) Title() string { return fmt.Sprintf("Event %d", e.ev.Seq) }
func (e *auditEvent) Typing() bool  { return false }

func (e *auditEvent) SetSize(w, h int) { e.page.setSize(w, h) }

func (e *auditEvent) Help() []key.Binding {
	return e.c.help(nil, bindUp, bindDown, bindBack, bindHelp)
}

func (e *auditEvent) Update(msg tea.Msg) (screen, tea.Cmd) { return e, e.page.update(msg) }
func (e *auditEvent) View() string                         { return e.page.view() }

func (e *auditEvent) content() string {
	s, ev := e.c.styles, e.ev
	var b strings.Builder
	for _, f := range [][2]string{
		{"Time", model.FormatPrecise(&ev.Time, "")}, {"Actor", clean(ev.Actor)},
		{"Action", clean(ev.Action)}, {"Target", clean(ev.Target)}, {"Sequence", fmt.Sprint(ev.Seq)},
	} {
		b.WriteString(s.Label.Render(f[0]) + clipText(f[1], max(e.c.width-16, 1)) + "\n")
	}
	b.WriteString("\n" + s.Bold.Render("Detail") + "\n")
	detail := clean(ev.Detail)
	if detail == "" {
		detail = s.Dim.Render("(none)")
	}
	b.WriteString(wrapHard(s, detail, max(e.c.width-2, 10)))
	return b.String()
}

// wrapHard wraps text to width cells, breaking words longer than the
// line (ids, fingerprints) too, so nothing is cut off; every line is
// indented by two spaces.
func wrapHard(s *styles, text string, width int) string {
	lines := strings.Split(ansi.Wrap(text, width, ""), "\n")
	for i, l := range lines {
		lines[i] = "  " + strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// containsFold reports whether h contains the lowercased needle n, folding
// ASCII without allocating; non-ASCII needles take the slow path.
func containsFold(h, n string) bool {
	if len(n) == 0 {
		return true
	}
	for i := 0; i < len(n); i++ {
		if n[i] >= utf8.RuneSelf {
			return strings.Contains(strings.ToLower(h), n)
		}
	}
	first := n[0]
	upper := first
	if first >= 'a' && first <= 'z' {
		upper = first - 'a' + 'A'
	}
	for i := 0; i+len(n) <= len(h); i++ {
		if c := h[i]; c != first && c != upper {
			continue
		}
		j := 1
		for ; j < len(n); j++ {
			c := h[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != n[j] {
				break
			}
		}
		if j == len(n) {
			return true
		}
	}
	return false
}
