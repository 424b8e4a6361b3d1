package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// detail shows every field of one key and its audit history, newest first.
type detail struct {
	c       *common
	id      string
	key     *model.Key
	creator *model.Operator // the operator named by key.CreatedBy; nil when none
	events  []model.AuditEvent
	gone    bool
	loadErr error
	vp      viewport.Model
	keys    keyState
}

type detailLoadedMsg struct {
	id      string
	key     *model.Key
	creator *model.Operator
	events  []model.AuditEvent
	err     error
}

// historyLimit bounds the per-key audit history shown.
const historyLimit = 200

func newDetail(c *common, k *model.Key) *detail {
	d := &detail{c: c, id: k.ID, key: k, creator: creatorOf(c.st, k), vp: viewport.New(c.width, c.height)}
	d.vp.KeyMap = scrollKeys()
	d.refresh()
	return d
}

func (d *detail) Init() tea.Cmd { return d.load() }

func (d *detail) load() tea.Cmd {
	st, id := d.c.st, d.id
	if st == nil {
		return nil
	}
	return reply(d, func() tea.Msg {
		k, err := st.Key(id)
		evs, aerr := st.Audit(store.AuditFilter{Target: id, Limit: historyLimit})
		if err != nil {
			// Deleted: the history (with the delete) is still shown.
			return detailLoadedMsg{id: id, events: evs, err: err}
		}
		return detailLoadedMsg{id: id, key: k, creator: creatorOf(st, k), events: evs, err: aerr}
	})
}

// creatorOf returns the operator who created k, or nil when there is none
// (deleted), for model.StatusOf.
func creatorOf(st *store.Store, k *model.Key) *model.Operator {
	if st == nil {
		return nil
	}
	op, err := st.Operator(k.CreatedBy)
	if err != nil {
		return nil
	}
	return &op
}

func (d *detail) Title() string { return "Key " + clean(d.id) }
func (d *detail) Typing() bool  { return false }

func (d *detail) SetSize(w, h int) {
	d.vp.Width, d.vp.Height = w, h
	d.refresh()
}

func (d *detail) keyState() *keyState { return &d.keys }

// updateKeys: a deleted key offers no action, and t says what it does
// to the key.
func (d *detail) updateKeys() {
	why := ""
	if d.gone {
		why = "the key was deleted"
	}
	d.keys.set(why, bindEdit, bindToggle, bindRegenerate, bindDelete)
	d.keys.relabel(bindToggle, toggleLabel(d.key))
}

func (d *detail) Help() []key.Binding {
	return d.c.help(&d.keys, bindUp, bindDown, bindEdit, bindToggle, bindRegenerate, bindDelete, bindBack, bindHelp)
}

func (d *detail) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case detailLoadedMsg:
		if msg.id != d.id {
			return d, nil
		}
		d.loadErr = nil
		switch {
		case msg.key == nil && msg.err != nil:
			d.gone = true
			if msg.events != nil {
				d.events = msg.events
			}
		case msg.err != nil:
			d.key, d.loadErr = msg.key, msg.err
		default:
			d.key, d.creator, d.events = msg.key, msg.creator, msg.events
		}
		d.refresh()
	case feedMsg:
		for _, ch := range msg.changes {
			// An operator change can change the status (model.StatusOf).
			if ch.ID == d.id || ch.Kind == store.Resync || ch.Kind == store.OperatorsChanged ||
				(ch.Kind == store.LastUsed && containsID(ch.IDs, d.id)) {
				return d, d.load()
			}
		}
	case keyChangedMsg:
		if msg.id == d.id {
			return d, d.load()
		}
	case tea.KeyMsg:
		on := d.c.matcher(&d.keys, msg)
		switch {
		case on(bindBack):
			return d, pop
		case !d.gone && on(bindEdit, bindToggle, bindRegenerate, bindDelete):
			return d, keyAction(d.c, on, d.key)
		}
		var cmd tea.Cmd
		d.vp, cmd = d.vp.Update(msg)
		return d, cmd
	}
	return d, nil
}

// statusText says what the stored status and st, the displayed status
// (model.StatusOf), mean for verification, naming the reason.
func statusText(k *model.Key, creator *model.Operator, st model.DisplayStatus) string {
	switch st {
	case model.ShowActive:
		return "active: verifies"
	case model.ShowExpiring:
		return fmt.Sprintf("active: verifies, but expires within %d days", int(model.ExpiringWindow.Hours()/24))
	case model.ShowDisabled:
		return "disabled: verify answers DISABLED"
	case model.ShowExpired:
		return "active, but expired: verify answers EXPIRED"
	case model.ShowCreatorDisabled:
		why := "no longer exists"
		switch {
		case creator == nil:
		case creator.Disabled:
			why = "is disabled"
		default:
			why = "was deleted and re-added after this key was made"
		}
		return "active, but verify answers CREATOR_DISABLED: its creator " + clean(k.CreatedBy) + " " + why
	}
	return string(k.Status) + " (shown as " + string(st) + ")"
}

func containsID(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func (d *detail) View() string { return viewWithMore(d.c.styles, d.vp) }

// refresh re-renders the content into the viewport.
func (d *detail) refresh() {
	d.vp.SetContent(d.content())
}

func (d *detail) content() string {
	var b strings.Builder
	if d.gone {
		b.WriteString(d.c.styles.Warn.Render("This key no longer exists (deleted).") + "\n\n")
	}
	d.writeFields(&b)
	d.writeGrants(&b)
	d.writeHistory(&b)
	return strings.TrimRight(b.String(), "\n")
}

// writeFields writes the key's name, status and description, then one
// labelled row per field.
func (d *detail) writeFields(b *strings.Builder) {
	s, k, now := d.c.styles, d.key, d.c.now()
	// A value too long for the line wraps under itself (a status
	// explanation, a long "from" address) instead of being cut.
	row := func(label, value string) {
		lines := strings.Split(wrap(s, value, max(d.c.width-17, 10)), "\n")
		for i, l := range lines {
			if i == 0 {
				b.WriteString(s.Label.Render(label))
			} else {
				b.WriteString(strings.Repeat(" ", 16))
			}
			b.WriteString(strings.TrimRight(l, " ") + "\n")
		}
	}
	st := model.StatusOf(k, d.creator, now)
	b.WriteString(s.Title.Render(clean(k.Name)) + "  " + s.statusStyle(st).Render(string(st)) + "\n")
	if k.Description != "" {
		b.WriteString(s.Dim.Render(wrap(s, clean(k.Description), max(d.c.width-2, 10))) + "\n")
	}
	b.WriteByte('\n')
	row("ID", clean(k.ID))
	row("Role", string(k.Role))
	row("Status", statusText(k, d.creator, st))
	row("Expires", model.FormatTime(k.ExpiresAt, "never ⚠ (no expiry)"))
	row("Secret", clean(k.Hint)+"… (only a hint is kept)")
	if k.GraceUntil != nil && now.Before(*k.GraceUntil) {
		row("Old secret", "valid until "+model.FormatTime(k.GraceUntil, "never"))
	}
	row("Created", model.FormatTime(&k.CreatedAt, "never")+" by "+clean(k.CreatedBy))
	row("Updated", model.FormatTime(&k.UpdatedAt, "never")+fmt.Sprintf(" (version %d)", k.Version))
	used := "Never"
	if k.LastUsedAt != nil {
		used = model.FormatTime(k.LastUsedAt, "never")
		if rel := ago(k.LastUsedAt, now); !strings.HasPrefix(used, rel) {
			used += " (" + rel + ")" // not when ago gives the date again
		}
		if k.LastUsedFrom != "" {
			used += " from " + clean(k.LastUsedFrom)
		}
	}
	row("Last used", used)
}

// writeGrants writes the key's scopes and resources, described from the
// catalog.
func (d *detail) writeGrants(b *strings.Builder) {
	s, k := d.c.styles, d.key
	b.WriteString("\n" + s.Bold.Render("Scopes") + "\n")
	var cat model.Catalog
	if d.c.st != nil {
		cat = d.c.st.Catalog()
	}
	if k.Role == model.RoleAdmin {
		b.WriteString("  every scope (ADMIN)\n")
	}
	// Names padded to the longest, so the descriptions line up.
	nameW := func(names []string) int {
		w := 0
		for _, n := range names {
			w = max(w, ansi.StringWidth(clean(n)))
		}
		return w
	}
	sw := nameW(k.Scopes)
	for _, sc := range k.Scopes {
		line := "  " + clean(sc)
		if c, ok := cat.Scope(sc); ok && c.Description != "" {
			line = "  " + fit(clean(sc), sw) + "  " + s.Dim.Render(clean(c.Description))
		}
		b.WriteString(clipText(line, d.c.width) + "\n")
	}
	b.WriteString("\n" + s.Bold.Render("Resources") + "\n")
	if k.AllResources() {
		b.WriteString("  all resources\n")
	}
	rw := nameW(k.Resources)
	for _, r := range k.Resources {
		line := "  " + clean(r)
		if c, ok := cat.Resource(r); ok {
			line = "  " + fit(clean(r), rw) + "  " + s.Dim.Render(clean(c.Name)+" ("+clean(c.Kind)+")")
		}
		b.WriteString(clipText(line, d.c.width) + "\n")
	}
}

// writeHistory writes the key's audit events, newest first.
func (d *detail) writeHistory(b *strings.Builder) {
	s := d.c.styles
	b.WriteString("\n" + s.Bold.Render("History") + s.Dim.Render(" (newest first)") + "\n")
	if d.loadErr != nil {
		b.WriteString(s.Error.Render(errText(d.loadErr)) + "\n")
	}
	if len(d.events) == 0 {
		b.WriteString(s.Dim.Render("  no events yet") + "\n")
	}
	for _, ev := range d.events {
		line := fmt.Sprintf("  %s  %-15s %-10s %s", model.FormatCompact(&ev.Time, ""), clean(ev.Action), clean(ev.Actor), clean(ev.Detail))
		b.WriteString(clipText(line, d.c.width) + "\n")
	}
}
