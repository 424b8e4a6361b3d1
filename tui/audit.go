package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

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
	offset    int
	filter    textinput.Model
	filtering bool
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

func (a *auditScreen) Help() []key.Binding {
	km := a.c.keys
	if a.filtering {
		return []key.Binding{km.ApplyFilter, km.ClearFilter}
	}
	return []key.Binding{km.Up, km.Down, km.PageDown, km.Filter, km.Back, km.Help}
}

func (a *auditScreen) Update(msg tea.Msg) (screen, tea.Cmd) {
	km := a.c.keys
	switch msg := msg.(type) {
	case auditLoadedMsg:
		a.all, a.err, a.loaded = msg.evs, msg.err, true
		a.apply()
	case feedMsg:
		return a, a.load()
	case tea.KeyMsg:
		if a.filtering {
			switch {
			case key.Matches(msg, km.ClearFilter):
				a.filtering = false
				a.filter.SetValue("")
				a.filter.Blur()
				a.apply()
			case key.Matches(msg, km.ApplyFilter):
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
		case key.Matches(msg, km.Back):
			if a.filter.Value() != "" {
				a.filter.SetValue("")
				a.apply()
				return a, nil
			}
			return a, pop
		case key.Matches(msg, km.Filter):
			a.filtering = true
			return a, a.filter.Focus()
		case key.Matches(msg, km.Up):
			a.offset--
		case key.Matches(msg, km.Down):
			a.offset++
		case key.Matches(msg, km.PageUp):
			a.offset -= page
		case key.Matches(msg, km.PageDown):
			a.offset += page
		case key.Matches(msg, km.Top):
			a.offset = 0
		case key.Matches(msg, km.Bottom):
			a.offset = len(a.view)
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
		b.WriteString(s.Dim.Render(clipText(fmt.Sprintf("%d events, newest first · / filters", len(a.all)), w)))
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
		line := ev.Time.UTC().Format("2006-01-02 15:04") + "  " + fit(clean(ev.Actor), 11) + " " +
			fit(clean(ev.Action), 16) + " " + fit(clean(ev.Target), 17) + " " + clean(ev.Detail)
		b.WriteString(clipText(line, w) + "\n")
	}
	if len(a.view) > a.rows() {
		b.WriteString(s.Dim.Render(fmt.Sprintf("%d–%d of %d", a.offset+1, end, len(a.view))))
	}
	return b.String()
}
