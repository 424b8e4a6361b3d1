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

// operatorsScreen lists the people who administer keyward. ADMINs can add,
// disable, enable, change the role of and delete operators, each behind a
// confirm; the store refuses to remove the last active ADMIN.
type operatorsScreen struct {
	c      *common
	ops    []model.Operator
	cursor int
	loaded bool
	keys   keyState
}

type operatorsLoadedMsg struct{ ops []model.Operator }

func newOperatorsScreen(c *common) *operatorsScreen { return &operatorsScreen{c: c} }

func (o *operatorsScreen) Init() tea.Cmd    { return o.load() }
func (o *operatorsScreen) Title() string    { return "Operators" }
func (o *operatorsScreen) Typing() bool     { return false }
func (o *operatorsScreen) SetSize(w, h int) {}

func (o *operatorsScreen) load() tea.Cmd {
	st := o.c.st
	return reply(o, func() tea.Msg { return operatorsLoadedMsg{st.Operators()} })
}

func (o *operatorsScreen) selected() *model.Operator {
	if o.cursor < 0 || o.cursor >= len(o.ops) {
		return nil
	}
	return &o.ops[o.cursor]
}

func (o *operatorsScreen) keyState() *keyState { return &o.keys }

// updateKeys: the actions need a selected operator, and no one disables,
// demotes or deletes themself (the store refuses too, with ErrSelf):
// they could not undo it. t says what it does to the operator.
func (o *operatorsScreen) updateKeys() {
	sel := o.selected()
	none, self := "", ""
	switch {
	case sel == nil:
		none, self = "no operator selected", "no operator selected"
	case sel.Name == o.c.name:
		self = "you cannot change your own account"
	}
	o.keys.set(self, bindToggleOperator, bindDeleteOperator, bindRoleOperator)
	o.keys.set(none, bindOperatorKeys)
	label := "disable"
	if sel != nil && sel.Disabled {
		label = "enable"
	}
	o.keys.relabel(bindToggleOperator, label)
}

func (o *operatorsScreen) Help() []key.Binding {
	return o.c.help(&o.keys, bindUp, bindDown, bindOperatorKeys, bindAddOperator, bindToggleOperator, bindRoleOperator,
		bindDeleteOperator, bindBack, bindHelp)
}

func (o *operatorsScreen) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case operatorsLoadedMsg:
		name := ""
		if sel := o.selected(); sel != nil {
			name = sel.Name
		}
		o.ops, o.loaded = msg.ops, true
		for i, op := range o.ops {
			if op.Name == name {
				o.cursor = i
			}
		}
		o.cursor = clampCursor(o.cursor, len(o.ops))
	case feedMsg:
		if store.Touches(msg.changes, store.OperatorsChanged) {
			return o, o.load()
		}
	case tea.KeyMsg:
		on, sel := o.c.matcher(&o.keys, msg), o.selected()
		switch {
		case on(bindBack):
			return o, pop
		case on(bindAddOperator):
			return o, push(newOperatorForm(o.c))
		case sel != nil && on(bindOperatorKeys):
			return o, push(newOpKeysScreen(o.c, sel.Name))
		case sel != nil && on(bindToggleOperator):
			return o, push(o.toggleDialog(*sel))
		case sel != nil && on(bindRoleOperator):
			return o, push(o.roleDialog(*sel))
		case sel != nil && on(bindDeleteOperator):
			return o, push(o.deleteDialog(*sel))
		default:
			// A page is the whole list: it always fits the screen.
			o.cursor, _ = listMove(on, o.cursor, len(o.ops), len(o.ops))
		}
	}
	return o, nil
}

func (o *operatorsScreen) opDone(text string) tea.Msg {
	return tea.BatchMsg{o.load(), flash("%s", text)}
}

func (o *operatorsScreen) toggleDialog(op model.Operator) *confirmDialog {
	st, actor, name := o.c.st, o.c.actor, op.Name
	disable := !op.Disabled
	d := &confirmDialog{c: o.c, action: "Disable", danger: true,
		title: fmt.Sprintf("Disable operator %q?", clean(name)),
		body: []string{o.consequence(name) + " until re-enabled.",
			"They can no longer log in, and their open SSH sessions end."}}
	if !disable {
		d.action, d.danger = "Enable", false
		d.title = fmt.Sprintf("Enable operator %q?", clean(name))
		d.body = []string{"They can log in again, and the keys they created verify again."}
	}
	d.run = func(int) tea.Cmd {
		return func() tea.Msg {
			if _, err := st.SetOperatorDisabled(actor, name, disable); err != nil {
				return flashMsg{text: errText(err), bad: true}
			}
			return o.opDone(fmt.Sprintf("%sd operator %q.", d.action, clean(name)))
		}
	}
	return d
}

func (o *operatorsScreen) roleDialog(op model.Operator) *confirmDialog {
	st, actor, name := o.c.st, o.c.actor, op.Name
	role := model.OperatorReadonly
	if op.Role != model.OperatorAdmin {
		role = model.OperatorAdmin
	}
	return &confirmDialog{c: o.c, action: "Make " + string(role), danger: role == model.OperatorReadonly,
		title: fmt.Sprintf("Make operator %q %s?", clean(name), role),
		body:  o.roleBody(role),
		run: func(int) tea.Cmd {
			return func() tea.Msg {
				if _, err := st.SetOperatorRole(actor, name, role); err != nil {
					return flashMsg{text: errText(err), bad: true}
				}
				return o.opDone(fmt.Sprintf("Operator %q is now %s.", clean(name), role))
			}
		}}
}

func (o *operatorsScreen) deleteDialog(op model.Operator) *confirmDialog {
	st, actor, name := o.c.st, o.c.actor, op.Name
	return &confirmDialog{c: o.c, action: "Delete", danger: true,
		title: fmt.Sprintf("Delete operator %q?", clean(name)),
		body: []string{o.consequence(name) + ", for good: a new operator of the same name brings no key back.",
			"This is permanent. Their open SSH sessions end."},
		run: func(int) tea.Cmd {
			return func() tea.Msg {
				if err := st.DeleteOperator(actor, name); err != nil {
					return flashMsg{text: errText(err), bad: true}
				}
				return o.opDone(fmt.Sprintf("Deleted operator %q.", clean(name)))
			}
		}}
}

// consequence names what disabling or deleting an operator does to the
// keys it created.
func (o *operatorsScreen) consequence(name string) string {
	return model.CreatorConsequence(o.c.st.KeysCreatedBy(name), name)
}

func (o *operatorsScreen) roleBody(role model.OperatorRole) []string {
	body := []string{"ADMINs may change anything; READONLY operators may only look."}
	if role != model.OperatorAdmin {
		body = append(body, "Their open SSH sessions end.")
	}
	return body
}

// Fingerprints of an operator's keys, for display.
func fingerprints(op model.Operator) string {
	var fps []string
	for _, line := range op.PublicKeys {
		if pk, err := model.ParsePublicKey(line); err == nil {
			fps = append(fps, pk.Fingerprint())
		} else {
			fps = append(fps, "(unreadable key)")
		}
	}
	if len(fps) == 0 {
		return "no SSH key (local only)"
	}
	return strings.Join(fps, ", ")
}

func (o *operatorsScreen) View() string {
	s, w := o.c.styles, o.c.width
	var b strings.Builder
	b.WriteString(s.ColHeader.Render(fit("  Name                 Role      Status    Last login        Key fingerprints", w)) + "\n")
	if !o.loaded {
		return b.String() + s.Dim.Render("Loading…")
	}
	for i, op := range o.ops {
		status := "active"
		if op.Disabled {
			status = "disabled"
		}
		login := model.FormatCompact(op.LastLoginAt, "Never")
		// "(you)" goes with the name, where a narrow terminal cannot
		// cut it off (it used to end the line, after the fingerprints).
		name := clean(op.Name)
		if op.Name == o.c.name {
			name = clipText(name, 20-len(" (you)")) + " (you)"
		}
		line := fit(name, 20) + " " + fit(string(op.Role), 9) + " " + fit(status, 9) + " " + fit(login, 17) + " " + fingerprints(op)
		if i == o.cursor {
			b.WriteString(s.Selected.Render(fit("› "+line, w)) + "\n")
		} else {
			b.WriteString(clipText("  "+line, w) + "\n")
		}
	}
	return b.String()
}

// operatorForm adds an operator with huh: name, role, pasted public key.
type operatorForm struct {
	formFrame
	name, role, pkey string
	gate             formGate
}

type operatorAddedMsg struct {
	op  model.Operator
	err error
}

func newOperatorForm(c *common) *operatorForm {
	f := &operatorForm{formFrame: formFrame{c: c}, role: string(model.OperatorReadonly)}
	f.build()
	return f
}

func (f *operatorForm) build() {
	f.form = huh.NewForm(huh.NewGroup(
		huh.NewInput().Key("name").Title("Login name").Placeholder("alice").CharLimit(32).Value(&f.name).
			Validate(gated(&f.gate, model.ValidateOperatorName)),
		huh.NewSelect[string]().Key("role").Title("Role").Options(
			huh.NewOption("READONLY  may look, never change", string(model.OperatorReadonly)),
			huh.NewOption("ADMIN     may change anything", string(model.OperatorAdmin)),
		).Value(&f.role),
		huh.NewInput().Key("key").Title("SSH public key").Placeholder("ssh-ed25519 AAAA… alice@laptop").CharLimit(keyLineInputLimit).
			Value(&f.pkey).Validate(gated(&f.gate, func(s string) error {
			if strings.TrimSpace(s) == "" {
				return nil // local-only operator
			}
			return validPublicKey(s)
		})).Description("Paste one authorized_keys line; leave empty for a local-only operator."),
	).Title("Add operator")).WithTheme(f.c.styles.Huh).WithKeyMap(formKeyMap()).WithShowHelp(false)
	f.fitForm()
}

func (f *operatorForm) Init() tea.Cmd { return f.form.Init() }
func (f *operatorForm) Title() string { return "Add operator" }

func (f *operatorForm) Update(msg tea.Msg) (screen, tea.Cmd) {
	if m, ok := msg.(operatorAddedMsg); ok {
		f.saving = false
		if m.err != nil {
			f.banner = errText(m.err)
			f.build()
			return f, f.form.Init()
		}
		return f, tea.Batch(pop, flash("Added operator %q (%s).", clean(m.op.Name), m.op.Role))
	}
	if f.saving || swallowFilterKey(f.form, msg) {
		return f, nil
	}
	var cmd tea.Cmd
	f.form, cmd = f.gate.update(f.form, msg)
	switch f.form.State {
	case huh.StateAborted:
		return f, tea.Batch(pop, flash("Cancelled; no operator added."))
	case huh.StateCompleted:
		f.saving = true
		st, actor, name, role := f.c.st, f.c.actor, strings.TrimSpace(f.name), model.OperatorRole(f.role)
		var keys []string
		if k := strings.TrimSpace(f.pkey); k != "" {
			keys = []string{k}
		}
		return f, func() tea.Msg {
			op, err := st.AddOperator(actor, name, role, keys)
			return operatorAddedMsg{op, err}
		}
	}
	return f, cmd
}
