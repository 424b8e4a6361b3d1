package tui

import "github.com/charmbracelet/bubbles/key"

// keyMap holds every binding of the TUI. Screens read their bindings from
// here and enable or disable them for the current state (SetEnabled), so the
// help bar and the ? screen list exactly what works, nothing more. Bindings
// marked dangerous in dangerous() are disabled for READONLY operators.
type keyMap struct {
	// global
	Help      key.Binding
	Back      key.Binding
	Cancel    key.Binding
	Quit      key.Binding
	ForceQuit key.Binding

	// moving in lists
	Up       key.Binding
	Down     key.Binding
	Top      key.Binding
	Bottom   key.Binding
	PageUp   key.Binding
	PageDown key.Binding

	// keys table
	Detail       key.Binding
	Filter       key.Binding
	SortName     key.Binding
	SortRole     key.Binding
	SortStatus   key.Binding
	SortExpires  key.Binding
	SortLastUsed key.Binding
	SortCreated  key.Binding
	New          key.Binding
	Edit         key.Binding
	Toggle       key.Binding
	Regenerate   key.Binding
	Delete       key.Binding
	Secret       key.Binding
	Operators    key.Binding
	Audit        key.Binding

	// filter input
	ClearFilter key.Binding
	ApplyFilter key.Binding

	// reveal
	Copy  key.Binding
	Leave key.Binding

	// shared secret
	RevealSecret key.Binding
	RotateSecret key.Binding

	// operators
	AddOperator    key.Binding
	ToggleOperator key.Binding
	DeleteOperator key.Binding
	RoleOperator   key.Binding
	OperatorKeys   key.Binding
	AddOpKey       key.Binding
	RemoveOpKey    key.Binding

	// dialogs
	Yes    key.Binding
	No     key.Binding
	Switch key.Binding
	Choose key.Binding
	Press  key.Binding
}

func newKeyMap(readonly bool) *keyMap {
	b := func(keys []string, k, desc string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(k, desc))
	}
	km := &keyMap{
		Help:      b([]string{"?"}, "?", "help"),
		Back:      b([]string{"esc"}, "esc", "back"),
		Cancel:    b([]string{"esc"}, "esc", "cancel"),
		Quit:      b([]string{"q"}, "q", "quit"),
		ForceQuit: b([]string{"ctrl+c"}, "ctrl+c", "quit now"),

		Up:       b([]string{"up", "k"}, "↑/k", "up"),
		Down:     b([]string{"down", "j"}, "↓/j", "down"),
		Top:      b([]string{"g", "home"}, "g", "first"),
		Bottom:   b([]string{"G", "end"}, "G", "last"),
		PageUp:   b([]string{"pgup", "ctrl+b"}, "pgup", "page up"),
		PageDown: b([]string{"pgdown", "ctrl+f", " "}, "pgdn", "page down"),

		Detail:       b([]string{"enter"}, "enter", "details"),
		Filter:       b([]string{"/"}, "/", "filter"),
		SortName:     b([]string{"N"}, "N", "sort by name"),
		SortRole:     b([]string{"R"}, "R", "sort by role"),
		SortStatus:   b([]string{"S"}, "S", "sort by status"),
		SortExpires:  b([]string{"E"}, "E", "sort by expiry"),
		SortLastUsed: b([]string{"L"}, "L", "sort by last used"),
		SortCreated:  b([]string{"C"}, "C", "sort by creator"),
		New:          b([]string{"n"}, "n", "new key"),
		Edit:         b([]string{"e"}, "e", "edit"),
		Toggle:       b([]string{"t"}, "t", "disable"),
		Regenerate:   b([]string{"r"}, "r", "regenerate"),
		Delete:       b([]string{"d", "delete"}, "d", "delete"),
		Secret:       b([]string{"s"}, "s", "shared secret"),
		Operators:    b([]string{"o"}, "o", "operators"),
		Audit:        b([]string{"a"}, "a", "audit log"),

		ClearFilter: b([]string{"esc"}, "esc", "clear filter"),
		ApplyFilter: b([]string{"enter"}, "enter", "keep filter"),

		Copy:  b([]string{"c"}, "c", "copy"),
		Leave: b([]string{"enter", "esc"}, "enter/esc", "I've stored it"),

		RevealSecret: b([]string{"v"}, "v", "reveal"),
		RotateSecret: b([]string{"r"}, "r", "rotate"),

		AddOperator:    b([]string{"n"}, "n", "add operator"),
		ToggleOperator: b([]string{"t"}, "t", "disable"),
		DeleteOperator: b([]string{"d", "delete"}, "d", "delete"),
		RoleOperator:   b([]string{"p"}, "p", "change role"),
		OperatorKeys:   b([]string{"enter"}, "enter", "ssh keys"),
		AddOpKey:       b([]string{"n"}, "n", "add key"),
		RemoveOpKey:    b([]string{"d", "delete"}, "d", "remove key"),

		Yes:    b([]string{"y", "Y"}, "y", "confirm"),
		No:     b([]string{"n", "N", "esc"}, "n/esc", "cancel"),
		Switch: b([]string{"tab", "shift+tab", "left", "right", "h", "l"}, "tab/←→", "switch button"),
		Choose: b([]string{"up", "down", "k", "j"}, "↑/↓", "choose"),
		Press:  b([]string{"enter"}, "enter", "press button"),
	}
	if readonly {
		for _, d := range km.dangerous() {
			d.SetEnabled(false)
		}
	}
	return km
}

// dangerous lists the bindings that change state. A READONLY operator
// never sees them (the store refuses those calls as well).
func (km *keyMap) dangerous() []*key.Binding {
	return []*key.Binding{&km.New, &km.Edit, &km.Toggle, &km.Regenerate, &km.Delete,
		&km.RevealSecret, &km.RotateSecret, &km.AddOperator, &km.ToggleOperator,
		&km.DeleteOperator, &km.RoleOperator, &km.AddOpKey, &km.RemoveOpKey}
}

// enable sets a binding's state, but never re-enables a dangerous binding
// for a READONLY operator.
func (c *common) enable(b *key.Binding, on bool) {
	if c.readonly {
		for _, d := range c.keys.dangerous() {
			if d == b {
				on = false
			}
		}
	}
	b.SetEnabled(on)
}

// readonlyReason says why a change is not offered.
func (c *common) readonlyReason() string {
	if c.roWhy != "" {
		return c.roWhy
	}
	return "You are a READONLY operator: you may look, not change."
}

// helpSection is one titled group of bindings on the ? screen.
type helpSection struct {
	title    string
	bindings []key.Binding
}

// sections returns the full keymap, grouped, for the ? screen.
func (km *keyMap) sections() []helpSection {
	return []helpSection{
		{"Keys table", []key.Binding{km.Up, km.Down, km.Top, km.Bottom, km.PageUp, km.PageDown, km.Detail, km.Filter,
			km.SortName, km.SortRole, km.SortStatus, km.SortExpires, km.SortLastUsed, km.SortCreated,
			km.New, km.Edit, km.Toggle, km.Regenerate, km.Delete}},
		{"Screens", []key.Binding{km.Secret, km.Operators, km.Audit, km.Help}},
		{"Reveal", []key.Binding{km.Copy, km.Leave}},
		{"Shared secret", []key.Binding{km.RevealSecret, km.RotateSecret}},
		{"Operators", []key.Binding{km.AddOperator, km.ToggleOperator, km.RoleOperator, km.DeleteOperator, km.OperatorKeys}},
		{"SSH keys", []key.Binding{km.AddOpKey, km.RemoveOpKey}},
		{"Dialogs", []key.Binding{km.Yes, km.No, km.Switch, km.Choose, km.Press}},
		{"Everywhere", []key.Binding{km.Back, km.Quit, km.ForceQuit}},
	}
}
