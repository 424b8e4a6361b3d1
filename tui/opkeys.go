package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/huh"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// opKeysScreen lists one operator's SSH public keys. ADMINs add keys (n)
// and remove them (d, behind a confirm); removing a key ends the SSH
// sessions that logged in with it. A session cannot remove its own key.
type opKeysScreen struct {
	c      *common
	name   string
	keys   []model.PublicKey
	bad    int // stored lines that do not parse
	cursor int
	loaded bool
	gone   bool
	ks     keyState
}

type opKeysLoadedMsg struct {
	name string
	op   model.Operator
	err  error
}

func newOpKeysScreen(c *common, name string) *opKeysScreen { return &opKeysScreen{c: c, name: name} }

func (k *opKeysScreen) Init() tea.Cmd    { return k.load() }
func (k *opKeysScreen) Title() string    { return "SSH keys of " + clean(k.name) }
func (k *opKeysScreen) Typing() bool     { return false }
func (k *opKeysScreen) SetSize(w, h int) {}

func (k *opKeysScreen) load() tea.Cmd {
	st, name := k.c.st, k.name
	return func() tea.Msg {
		op, err := st.Operator(name)
		return opKeysLoadedMsg{name: name, op: op, err: err}
	}
}

func (k *opKeysScreen) selected() *model.PublicKey {
	if k.cursor < 0 || k.cursor >= len(k.keys) {
		return nil
	}
	return &k.keys[k.cursor]
}

// ownKey reports whether pk is the key this session logged in with.
func (k *opKeysScreen) ownKey(pk *model.PublicKey) bool {
	a := model.ParseActor(k.c.actor)
	return pk != nil && a.Name == k.name && a.KeyFingerprint != "" && a.KeyFingerprint == pk.Fingerprint()
}

func (k *opKeysScreen) keyState() *keyState { return &k.ks }

// updateKeys: a deleted operator gets no key; removing needs a selected
// key, and not the one this session logged in with.
func (k *opKeysScreen) updateKeys() {
	why := ""
	if k.gone {
		why = "the operator was deleted"
	}
	k.ks.set(why, bindAddOpKey)
	switch sel := k.selected(); {
	case sel == nil:
		why = "no key selected"
	case k.ownKey(sel):
		why = "this session logged in with it"
	default:
		why = ""
	}
	k.ks.set(why, bindRemoveOpKey)
}

func (k *opKeysScreen) Help() []key.Binding {
	return k.c.help(&k.ks, bindUp, bindDown, bindAddOpKey, bindRemoveOpKey, bindBack, bindHelp)
}

func (k *opKeysScreen) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case opKeysLoadedMsg:
		if msg.name != k.name {
			return k, nil
		}
		k.loaded = true
		if msg.err != nil {
			k.gone, k.keys = true, nil
			return k, nil
		}
		k.keys, k.bad = nil, 0
		for _, line := range msg.op.PublicKeys {
			if pk, err := model.ParsePublicKey(line); err == nil {
				k.keys = append(k.keys, pk)
			} else {
				k.bad++
			}
		}
		k.cursor = clampCursor(k.cursor, len(k.keys))
	case feedMsg:
		if store.Touches(msg.changes, store.OperatorsChanged) {
			return k, k.load()
		}
	case tea.KeyMsg:
		on, sel := k.c.matcher(&k.ks, msg), k.selected()
		switch {
		case on(bindBack):
			return k, pop
		case on(bindAddOpKey):
			return k, push(newOpKeyForm(k.c, k.name))
		case sel != nil && on(bindRemoveOpKey):
			return k, push(k.removeDialog(*sel))
		default:
			k.cursor, _ = listMove(on, k.cursor, len(k.keys), len(k.keys))
		}
	}
	return k, nil
}

func (k *opKeysScreen) removeDialog(pk model.PublicKey) *confirmDialog {
	st, actor, name, fp := k.c.st, k.c.actor, k.name, pk.Fingerprint()
	return &confirmDialog{c: k.c, action: "Remove key", danger: true,
		title: fmt.Sprintf("Remove key %s from %q?", fp, clean(name)),
		body: []string{fmt.Sprintf("%s can no longer log in with it (%s %s).", clean(name), pk.Type, clean(pk.Comment)),
			"Open SSH sessions that logged in with it end at once."},
		run: func(int) tea.Cmd {
			return func() tea.Msg {
				if _, _, err := st.RemoveOperatorKey(actor, name, fp); err != nil {
					return flashMsg{text: errText(err), bad: true}
				}
				return tea.BatchMsg{k.load(), flash("Removed key %s from %q.", fp, clean(name))}
			}
		}}
}

func (k *opKeysScreen) View() string {
	s, w := k.c.styles, k.c.width
	var b strings.Builder
	switch {
	case !k.loaded:
		return s.Dim.Render("Loading…")
	case k.gone:
		return s.Error.Render(fmt.Sprintf("Operator %q no longer exists.", clean(k.name)))
	}
	// Type is as wide as the longest type listed, and "(this session)"
	// comes before the comment, so a narrow terminal cuts only the comment.
	typeW := len("Type")
	for _, pk := range k.keys {
		typeW = max(typeW, len(pk.Type))
	}
	b.WriteString(s.ColHeader.Render(fit("  "+fit("Fingerprint", 51)+" "+fit("Type", typeW)+" Comment", w)) + "\n")
	if len(k.keys) == 0 {
		b.WriteString("\n" + clipText(fmt.Sprintf("  %s has no SSH key: it can only work locally.", clean(k.name)), w) + "\n")
		if !k.c.readonly {
			b.WriteString(s.Dim.Render(clipText("  Press n to add one (or: keyward operators keys add "+clean(k.name)+" --key \"$(cat ~/.ssh/id_ed25519.pub)\").", w)) + "\n")
		}
	}
	for i, pk := range k.keys {
		line := fit(pk.Fingerprint(), 51) + " " + fit(pk.Type, typeW)
		if k.ownKey(&pk) {
			line += " (this session)"
		}
		// The comment takes what is left of the row, so it is what a
		// narrow terminal cuts.
		if c, room := clean(pk.Comment), w-2-len(line)-1; c != "" && room > 1 {
			line += " " + clipText(c, room)
		}
		if i == k.cursor {
			b.WriteString(s.Selected.Render(fit("› "+line, w)) + "\n")
		} else {
			b.WriteString(clipText("  "+line, w) + "\n")
		}
	}
	if k.bad > 0 {
		b.WriteString(s.Error.Render(fmt.Sprintf("  %s could not be read.", model.Count(k.bad, "stored key line", ""))) + "\n")
	}
	return b.String()
}

// opKeyForm adds one SSH public key to an operator.
type opKeyForm struct {
	formFrame
	name string
	line string
}

type opKeyAddedMsg struct {
	pk  model.PublicKey
	err error
}

func newOpKeyForm(c *common, name string) *opKeyForm {
	f := &opKeyForm{formFrame: formFrame{c: c}, name: name}
	f.build()
	return f
}

func (f *opKeyForm) build() {
	f.form = huh.NewForm(huh.NewGroup(
		huh.NewInput().Key("key").Title("SSH public key").Placeholder("ssh-ed25519 AAAA… " + f.name + "@laptop").
			CharLimit(keyLineInputLimit).Value(&f.line).Validate(validPublicKey).Description("Paste one authorized_keys line (the .pub file)."),
	).Title(fmt.Sprintf("Add an SSH key to %s", clean(f.name)))).WithTheme(f.c.styles.Huh).WithKeyMap(formKeyMap()).WithShowHelp(false)
	f.fitForm()
}

func (f *opKeyForm) Init() tea.Cmd { return f.form.Init() }
func (f *opKeyForm) Title() string { return "Add SSH key" }

func (f *opKeyForm) Update(msg tea.Msg) (screen, tea.Cmd) {
	if m, ok := msg.(opKeyAddedMsg); ok {
		f.saving = false
		if m.err != nil {
			f.banner = errText(m.err)
			f.build()
			return f, f.form.Init()
		}
		st, name := f.c.st, f.name
		reload := func() tea.Msg {
			op, err := st.Operator(name)
			return opKeysLoadedMsg{name: name, op: op, err: err}
		}
		return f, tea.Sequence(pop, reload, flash("Added key %s to %q.", m.pk.Fingerprint(), clean(f.name)))
	}
	if f.saving {
		return f, nil
	}
	mm, cmd := f.form.Update(msg)
	f.form = mm.(*huh.Form)
	switch f.form.State {
	case huh.StateAborted:
		return f, tea.Batch(pop, flash("Cancelled; no key added."))
	case huh.StateCompleted:
		f.saving = true
		st, actor, name, line := f.c.st, f.c.actor, f.name, strings.TrimSpace(f.line)
		return f, func() tea.Msg {
			_, pk, err := st.AddOperatorKey(actor, name, line)
			return opKeyAddedMsg{pk, err}
		}
	}
	return f, cmd
}
