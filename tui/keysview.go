package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/tui/keytable"
)

// The keys screen's drawing: columns sized to the width, the header with
// the sort mark, the visible rows only, the filter line and the status
// line with the counts.

// layout holds column widths for a terminal width.
type layout struct{ name, role, status, expires, used, created int }

// tableLayout sizes the columns for width w. Every column is as wide as
// its longest value and its header with the sort mark ("Last used ▼",
// "Created by ▲"), so neither a date nor the mark is cut; the status
// column widens to CREATOR_DISABLED only while some key has that status
// (wideStatus). Columns on the right go first when the name would get
// too narrow.
func tableLayout(w int, wideStatus bool, sorted keytable.Column) layout {
	l := layout{role: 8, status: 8, expires: 10, used: ansi.StringWidth("Last used ▲"), created: ansi.StringWidth("Created by ▲")}
	if wideStatus {
		l.status = len(model.ShowCreatorDisabled)
	}
	fixed := 2 + l.role + l.status + l.expires + l.used + l.created + 5
	// Created by goes first, then Last used; but the column sorted by
	// stays, with its mark, and the other one goes instead.
	drop := []*int{&l.created, &l.used}
	if sorted == keytable.ColCreated {
		drop = []*int{&l.used, &l.created}
	}
	for i, minName := range []int{18, 14} {
		if w-fixed < minName {
			fixed -= *drop[i] + 1
			*drop[i] = 0
		}
	}
	l.name = max(w-fixed, 8)
	return l
}

func (t *keysTable) View() string {
	s, w := t.c.styles, t.c.width
	var b strings.Builder
	if t.showFilterLine() {
		b.WriteString(t.filterLine())
		b.WriteByte('\n')
	}
	l := tableLayout(w, t.d.Counts().CreatorOff > 0, t.d.Col())
	b.WriteString(clipText(s.ColHeader.Render(t.header(l)), w))
	b.WriteByte('\n')
	rows := t.rows()
	switch {
	case !t.loaded:
		b.WriteString(s.Empty.Render("Loading keys…"))
	case t.d.Counts().Total == 0:
		b.WriteString(s.Empty.Render("No keys yet.\n\nPress n to create your first API key."))
	case t.d.Len() == 0:
		b.WriteString(s.Empty.Render(fmt.Sprintf("No keys match %q.\n\nPress esc to clear the filter.", clean(t.d.Query()))))
	default:
		now := t.c.now()
		end := min(t.offset+rows, t.d.Len())
		for i := t.offset; i < end; i++ {
			b.WriteString(t.row(t.d.At(i), l, i == t.cursor, now))
			if i < end-1 {
				b.WriteByte('\n')
			}
		}
	}
	body := padLines(b.String(), w, t.c.height-1)
	return body + "\n" + t.statusLine()
}

func (t *keysTable) header(l layout) string {
	cell := func(c keytable.Column, width int) string {
		label := c.String()
		if c == t.d.Col() {
			if t.d.Desc() {
				label += " ▼"
			} else {
				label += " ▲"
			}
		}
		return fit(label, width)
	}
	parts := []string{"  " + cell(keytable.ColName, l.name), cell(keytable.ColRole, l.role), cell(keytable.ColStatus, l.status), cell(keytable.ColExpires, l.expires)}
	if l.used > 0 {
		parts = append(parts, cell(keytable.ColLastUsed, l.used))
	}
	if l.created > 0 {
		parts = append(parts, cell(keytable.ColCreated, l.created))
	}
	return strings.Join(parts, " ")
}

func (t *keysTable) row(k *model.Key, l layout, sel bool, now time.Time) string {
	s := t.c.styles
	name := clean(k.Name)
	desc := clean(k.Description)
	nameCell, descPart := fit(name, l.name), ""
	if nw := ansi.StringWidth(name); desc != "" && nw+4 < l.name {
		nameCell = name + "  "
		descPart = fit(desc, l.name-nw-2)
	}
	st := model.StatusOf(k, t.d.Creator(k), now)
	cells := []string{fit(string(k.Role), l.role), fit(string(st), l.status), fit(model.FormatDate(k.ExpiresAt, "never"), l.expires)}
	if l.used > 0 {
		cells = append(cells, fit(ago(k.LastUsedAt, now), l.used))
	}
	if l.created > 0 {
		cells = append(cells, fit(clean(k.CreatedBy), l.created))
	}
	if sel {
		return s.Selected.Render("› " + nameCell + descPart + " " + strings.Join(cells, " "))
	}
	cells[1] = s.statusStyle(st).Render(cells[1])
	return "  " + nameCell + s.Dim.Render(descPart) + " " + strings.Join(cells, " ")
}

func (t *keysTable) filterLine() string {
	s := t.c.styles
	info := fmt.Sprintf("  %d of %d", t.d.Len(), t.d.Counts().Total)
	if t.filtering {
		t.filter.Width = max(t.c.width-len(info)-4, 10)
		return t.filter.View() + s.Dim.Render(info)
	}
	return s.Dim.Render(clipText(fmt.Sprintf("filter %q%s · / edits · esc clears", clean(t.d.Query()), info), t.c.width))
}

func (t *keysTable) statusLine() string {
	c := t.d.Counts()
	dir := "▲"
	if t.d.Desc() {
		dir = "▼"
	}
	type part struct {
		n     int
		label string
	}
	parts := []part{{c.Active, "active"}, {c.Disabled, "disabled"}, {c.CreatorOff, "creator disabled"},
		{c.Expired, "expired"}, {c.Expiring, "expiring"}, {c.Unused, "unused 90d"}}
	// The sort and the filter always show whole (a long filter is cut
	// to a part of the line); the counts give way to them.
	tail := fmt.Sprintf(" │ sort %s %s", t.d.Col(), dir)
	if q := t.d.Query(); q != "" {
		tail += " │ filter " + clipText(strconvQuote(clean(q)), max(t.c.width/3, 12))
	}
	w := t.c.width - ansi.StringWidth(tail)
	if t.peeking {
		text := fitCounts(" "+model.Count(t.peekTotal, "key", "")+" · loading…", []string{fmt.Sprintf("(showing the first %d)", t.d.Len())}, " ", w) + tail
		return t.c.styles.Status.Render(fit(text, t.c.width))
	}
	var all, nonZero []string
	for _, p := range parts {
		all = append(all, fmt.Sprintf("%d %s", p.n, p.label))
		if p.n > 0 {
			nonZero = append(nonZero, fmt.Sprintf("%d %s", p.n, p.label))
		}
	}
	head := " " + model.Count(c.Total, "key", "")
	text := fitCounts(head, all, "  ", w)
	if ansi.StringWidth(text) > w || strings.HasSuffix(text, "…") {
		text = fitCounts(head, nonZero, "  ", w) // zero counts go first when space is short
	}
	return t.c.styles.Status.Render(fit(text+tail, t.c.width))
}

// fitCounts joins head and as many of parts as fit in w cells, ending
// with "…" when some were left out.
func fitCounts(head string, parts []string, sep string, w int) string {
	text := head
	for i, p := range parts {
		next := text + sep + p
		rest := 0
		if i < len(parts)-1 {
			rest = len(sep) + 1 // room for the "…" that says more follow
		}
		if ansi.StringWidth(next)+rest > w {
			return clipText(text+sep+"…", max(w, 0))
		}
		text = next
	}
	return clipText(text, max(w, 0))
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }
