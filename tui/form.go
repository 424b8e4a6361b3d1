package tui

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/huh"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Expiry choices in the form.
const (
	exp30     = "30d"
	exp90     = "90d"
	exp1y     = "1y"
	expCustom = "custom"
	expNever  = "never"
	expKeep   = "keep"
)

// inputLimit bounds what the name and description inputs hold. It is far
// above the valid lengths on purpose: a paste longer than the limit is
// kept and refused on the field ("name is 70 characters; the limit is
// 64"), never cut to a valid length behind the admin's back.
const inputLimit = 4096

// formValues is what the huh fields are bound to. It lives behind a
// pointer, so rebuilding the form (after a store error) keeps the input.
type formValues struct {
	Name, Description string
	Role              model.Role
	Scopes, Resources []string
	Expiry, Custom    string
	Active            bool
}

// keyForm creates or edits a key with huh. esc cancels without writing;
// an edit carries the version it loaded, and a conflict is shown, never
// overwritten silently.
type keyForm struct {
	c      *common
	orig   *model.Key // nil when creating
	v      *formValues
	cat    model.Catalog
	form   *huh.Form
	banner string
	saving bool
	gate   formGate
	// seen is a copy of v for huh's dynamic title, options and
	// description: huh runs those functions in tea.Cmd goroutines while
	// its Update writes v, so they read this copy, taken at the end of
	// every Update (before the commands it returned run).
	seen seenValues
}

type seenValues struct {
	mu sync.Mutex
	v  formValues
}

// remember copies f.v for the dynamic functions; see keyForm.seen.
func (f *keyForm) remember() {
	c := *f.v
	c.Scopes, c.Resources = slices.Clone(c.Scopes), slices.Clone(c.Resources)
	f.seen.mu.Lock()
	f.seen.v = c
	f.seen.mu.Unlock()
}

// seenValues returns the copy remember took (safe in any goroutine).
func (f *keyForm) seenValues() *formValues {
	f.seen.mu.Lock()
	defer f.seen.mu.Unlock()
	c := f.seen.v
	return &c
}

type formSavedMsg struct {
	key   *model.Key
	token string // create only
}

type formErrMsg struct {
	err   error
	fresh *model.Key // the current key after a conflict
}

func newKeyForm(c *common, k *model.Key) *keyForm {
	f := &keyForm{c: c, orig: k, v: &formValues{Role: model.RoleEditor, Expiry: exp1y, Active: true}}
	if c.st != nil {
		f.cat = c.st.Catalog()
	}
	if k != nil {
		spec := model.SpecOf(k)
		f.v = &formValues{Name: spec.Name, Description: spec.Description, Role: spec.Role,
			Scopes: spec.Scopes, Resources: spec.Resources, Expiry: expKeep, Active: spec.Active}
		if k.ExpiresAt != nil {
			f.v.Custom = model.FormatDate(k.ExpiresAt, "never") // "Custom date…" starts from the current expiry
		}
	}
	f.build()
	return f
}

// dateInputLimit is 12, not 10: huh narrows an input to its character
// limit, and the prompt and cursor take two of the ten cells, which cut the
// placeholder to "YYYY-MM…". The validator refuses anything but a date.
const dateInputLimit = 12

func (f *keyForm) Title() string {
	if f.orig != nil {
		return "Edit " + clean(f.orig.Name)
	}
	return "New key"
}

func (f *keyForm) Typing() bool { return true }

func (f *keyForm) Init() tea.Cmd { return f.form.Init() }

func (f *keyForm) SetSize(w, h int) {
	// Leave room under the fields for huh's error footer.
	f.form.WithWidth(min(w, 100)).WithHeight(max(h-f.bannerHeight()-3, 5))
}

func (f *keyForm) bannerHeight() int {
	if f.banner == "" {
		return 0
	}
	return strings.Count(f.bannerView(), "\n") + 2
}

func (f *keyForm) Help() []key.Binding {
	return append(f.form.KeyBinds(), f.c.help(nil, bindCancel)...)
}

// build (re)creates the huh form over f.v.
func (f *keyForm) build() {
	f.remember()
	v := f.v
	isAdmin := func() bool { return v.Role == model.RoleAdmin }
	groups := []*huh.Group{
		huh.NewGroup(
			huh.NewInput().Key("name").Title("Name").Placeholder("ci-deploy-bot").CharLimit(inputLimit).
				Value(&v.Name).Validate(f.validator("name")),
			huh.NewInput().Key("description").Title("Description").Placeholder("optional: what uses this key").
				CharLimit(inputLimit).Value(&v.Description).Validate(f.validator("description")),
			huh.NewSelect[model.Role]().Key("role").Title("Role").Options(
				huh.NewOption("ADMIN     every scope on every resource", model.RoleAdmin),
				huh.NewOption("EDITOR    the scopes and resources you choose", model.RoleEditor),
				huh.NewOption("READONLY  like EDITOR, :read scopes only", model.RoleReadonly),
			).Value(&v.Role),
		).Title(f.Title()),
	}
	groups = append(groups, f.accessGroups(isAdmin)...)
	groups = append(groups, f.lifetimeGroups()...)
	groups = append(groups, huh.NewGroup(
		huh.NewConfirm().Key("active").Title("Active?").
			Description("An inactive key is refused until you activate it.").
			Affirmative("Yes").Negative("No").Value(&v.Active),
	).Title("Status"))
	f.form = huh.NewForm(groups...).WithTheme(f.c.styles.Huh).WithKeyMap(formKeyMap()).WithShowHelp(false)
	f.SetSize(f.c.width, f.c.height)
}

// accessGroups are the resource and scope pickers, for EDITOR and
// READONLY, and in their place for ADMIN a note on what it gets.
func (f *keyForm) accessGroups(isAdmin func() bool) []*huh.Group {
	v, cat, s := f.v, f.cat, f.c.styles
	resOpts := f.resourceOptions()
	var allScopes []string
	for _, s := range cat.Scopes {
		allScopes = append(allScopes, clean(s.Name))
	}
	var allRes []string
	for _, r := range cat.Resources {
		allRes = append(allRes, clean(r.ID))
	}
	return []*huh.Group{
		huh.NewGroup(
			huh.NewMultiSelect[string]().Key("resources").Title("Resources").
				Description("None chosen means all resources.").
				Options(resOpts...).Value(&v.Resources).Height(min(len(resOpts)+2, 9)).Filterable(false).
				Validate(f.validatorList("resources")),
			huh.NewMultiSelect[string]().Key("scopes").
				TitleFunc(func() string { return scopesTitle(f.seenValues()) }, []any{&v.Role, &v.Resources}).
				OptionsFunc(func() []huh.Option[string] { return scopeOptions(&cat, f.seenValues()) }, []any{&v.Role, &v.Resources}).
				Value(&v.Scopes).Height(9).Filterable(false).
				Validate(f.validatorList("scopes")),
		).Title("Access").WithHideFunc(isAdmin),
		huh.NewGroup(
			huh.NewNote().Title("Access").Description(
				"Admins get every scope on every resource.\n\n" +
					s.Dim.Render("Scopes:    "+strings.Join(allScopes, ", ")) + "\n" +
					s.Dim.Render("Resources: "+strings.Join(allRes, ", "))),
		).WithHideFunc(func() bool { return !isAdmin() }),
	}
}

// resourceOptions are the catalog's resources, and any the key has that
// the catalog lacks.
func (f *keyForm) resourceOptions() []huh.Option[string] {
	var resOpts []huh.Option[string]
	for _, r := range f.cat.Resources {
		resOpts = append(resOpts, huh.NewOption(fmt.Sprintf("%-12s %s (%s)", clean(r.ID), clean(r.Name), clean(r.Kind)), r.ID))
	}
	// A resource the key has but the catalog lacks is shown, selected, so
	// a save never drops it unseen: huh keeps only values it has options for.
	for _, r := range f.v.Resources {
		if _, ok := f.cat.Resource(r); !ok {
			resOpts = append(resOpts, huh.NewOption(fmt.Sprintf("%-12s ⚠ not in the catalog; deselect it", clean(r)), r).Selected(true))
		}
	}
	return resOpts
}

// lifetimeGroups are the expiry choice and, for "Custom date…", the date.
func (f *keyForm) lifetimeGroups() []*huh.Group {
	v := f.v
	expiry := []huh.Option[string]{
		huh.NewOption("30 days", exp30), huh.NewOption("90 days", exp90),
		huh.NewOption("1 year (recommended)", exp1y), huh.NewOption("Custom date…", expCustom),
		huh.NewOption("Never (not recommended)", expNever),
	}
	if f.orig != nil {
		expiry = append([]huh.Option[string]{huh.NewOption("Keep: "+model.FormatDate(f.orig.ExpiresAt, "never"), expKeep)}, expiry...)
	}
	return []*huh.Group{
		huh.NewGroup(
			huh.NewSelect[string]().Key("expires").Title("Expires").Options(expiry...).Value(&v.Expiry).
				DescriptionFunc(func() string {
					if e := f.seenValues().Expiry; e == expNever || (e == expKeep && f.orig != nil && f.orig.ExpiresAt == nil) {
						return "⚠ A key that never expires stays valid until someone deletes it."
					}
					return "Expiring keys limit the damage of a leaked secret."
				}, &v.Expiry).
				Validate(f.validator("expires")),
		).Title("Lifetime"),
		huh.NewGroup(
			huh.NewInput().Key("custom").Title("Expiry date (UTC)").Placeholder("YYYY-MM-DD").CharLimit(dateInputLimit).
				Description("The key stops working at 00:00 UTC that day. shift+tab goes back to the choices.").
				Value(&v.Custom).Validate(f.validator("custom")),
		).Title("Lifetime").WithHideFunc(func() bool { return v.Expiry != expCustom }),
	}
}

// formKeyMap is huh's keymap with esc as cancel. ctrl+c is the root's.
func formKeyMap() *huh.KeyMap {
	km := huh.NewDefaultKeyMap()
	km.Quit = key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "cancel"))
	km.MultiSelect.Filter.SetEnabled(false)
	km.Select.Filter.SetEnabled(false)
	return km
}

// swallowFilterKey keeps "/" away from every field that does not take
// text. formKeyMap disables the select filter, but huh's Select enables it
// again on every enter (setFiltering), and an open filter hides behind a
// "/" title while its esc cancels the whole form with the input in it.
func swallowFilterKey(form *huh.Form, msg tea.Msg) bool {
	k, ok := msg.(tea.KeyMsg)
	if !ok || k.Type != tea.KeyRunes || string(k.Runes) != "/" {
		return false
	}
	switch form.GetFocusedField().(type) {
	case *huh.Input, *huh.Text:
		return false
	}
	return true
}

func scopesTitle(v *formValues) string {
	switch {
	case v.Role == model.RoleReadonly && len(v.Resources) > 0:
		return "Scopes (READONLY: :read only; per-resource only, as resources are chosen)"
	case v.Role == model.RoleReadonly:
		return "Scopes (READONLY: :read scopes only)"
	case len(v.Resources) > 0:
		return "Scopes (only per-resource scopes, as resources are chosen)"
	}
	return "Scopes"
}

// scopeOptions offers what the role and resources allow. A selected scope
// they do not allow (the key had it, or the role or resources changed) is
// still listed, selected and marked with why: huh keeps only values it has
// options for, so leaving it out would drop it from the key unseen. Saving
// it where it is not allowed is refused with a message on the field,
// unless the edit leaves the key's grant as it was.
func scopeOptions(cat *model.Catalog, v *formValues) []huh.Option[string] {
	var out []huh.Option[string]
	offered := cat.OfferedScopes(v.Role, len(v.Resources) > 0)
	for _, sc := range offered {
		out = append(out, huh.NewOption(fmt.Sprintf("%-19s %s", clean(sc.Name), clean(sc.Description)), sc.Name).
			Selected(slices.Contains(v.Scopes, sc.Name)))
	}
	for _, name := range v.Scopes {
		if slices.ContainsFunc(offered, func(o model.Scope) bool { return o.Name == name }) {
			continue
		}
		out = append(out, huh.NewOption(fmt.Sprintf("%-19s ⚠ %s; deselect it", clean(name), notOffered(cat, v, name)), name).Selected(true))
	}
	return out
}

// notOffered says why scope name is not offered for v's role and resources.
func notOffered(cat *model.Catalog, v *formValues, name string) string {
	sc, ok := cat.Scope(name)
	switch {
	case !ok:
		return "not in the catalog"
	case v.Role == model.RoleReadonly && !sc.ReadOnly():
		return "READONLY keys get :read scopes only"
	case len(v.Resources) > 0 && !sc.PerResource:
		return "not per-resource, and resources are chosen"
	}
	return "not offered"
}

// spec turns the form into a KeySpec. An unparsable custom date is a
// FieldError on "expires".
func (f *keyForm) spec() (model.KeySpec, error) {
	v, now := f.v, f.c.now().UTC()
	spec := model.KeySpec{Name: strings.TrimSpace(v.Name), Description: strings.TrimSpace(v.Description),
		Role: v.Role, Active: v.Active}
	if v.Role != model.RoleAdmin {
		// Every selected scope, offered or not: validation says what is
		// not allowed; nothing is dropped behind the admin's back.
		spec.Resources = append([]string(nil), v.Resources...)
		spec.Scopes = append([]string(nil), v.Scopes...)
	}
	day := 24 * time.Hour
	switch v.Expiry {
	case exp30, exp90, exp1y:
		d := map[string]time.Duration{exp30: 30 * day, exp90: 90 * day, exp1y: model.DefaultLifetime}[v.Expiry]
		t := now.Add(d)
		spec.ExpiresAt = &t
	case expCustom:
		t, err := time.Parse(time.DateOnly, strings.TrimSpace(v.Custom))
		if err != nil {
			return spec, &model.FieldError{Field: "expires", Msg: "enter a date as YYYY-MM-DD, for example " + now.AddDate(0, 6, 0).Format(time.DateOnly)}
		}
		spec.ExpiresAt = &t
	case expKeep:
		if f.orig != nil {
			spec.ExpiresAt = f.orig.ExpiresAt
		}
	}
	return spec, nil
}

// fieldErr validates the whole spec and reports the error only if it
// belongs to field, so each huh field shows its own error inline.
func (f *keyForm) fieldErr(field string) error {
	spec, err := f.spec()
	switch {
	case err != nil:
	case f.orig != nil:
		// As the store judges an edit: an unchanged expiry may have
		// passed, an unchanged grant may be one the catalog now refuses.
		err = model.ValidateEdit(f.orig, spec, &f.cat, f.c.now())
	default:
		err = model.ValidateSpec(spec, &f.cat, f.c.now())
	}
	var fe *model.FieldError
	nameOK := !errors.As(err, &fe) || fe.Field != "name"
	if nameOK && field == "name" && f.c.st != nil {
		if id, taken := f.c.st.KeyIDByName(spec.Name); taken && (f.orig == nil || id != f.orig.ID) {
			err = &model.FieldError{Field: "name", Msg: fmt.Sprintf("name %q is already used by key %s", clean(spec.Name), id)}
		}
	}
	if errors.As(err, &fe) && f.fieldOf(fe) == field {
		return errors.New(clean(fe.Msg))
	}
	return nil
}

// fieldOf names the form field that shows a validation error. The spec has
// one "expires"; the form has two fields for it. With "Custom date…"
// chosen, an expiry error is the date input's, never the select's: else
// the select would refuse enter until a date is typed into a field that
// only appears after the select.
func (f *keyForm) fieldOf(fe *model.FieldError) string {
	if fe.Field == "expires" && f.v.Expiry == expCustom {
		return "custom"
	}
	return fe.Field
}

func (f *keyForm) validator(field string) func(string) error {
	return gated(&f.gate, func(string) error { return f.fieldErr(field) })
}

func (f *keyForm) validatorList(field string) func([]string) error {
	return gated(&f.gate, func([]string) error { return f.fieldErr(field) })
}

// formGate lets a form's validators speak only while the admin moves
// forward (enter or tab). huh also validates when it builds a form, when
// options change and when a field is left backwards; an error there shows
// before the admin has typed anything ("choose at least one scope" on
// arrival), and huh refuses shift+tab out of a group holding an error, so
// a field could not be left to fix an earlier choice (such as "Custom
// date…"). Every field is still checked on its way forward, and the store
// validates the whole key on save.
type formGate struct{ forward bool }

// update passes msg to form with the gate open only for a forward key.
func (g *formGate) update(form *huh.Form, msg tea.Msg) (*huh.Form, tea.Cmd) {
	if k, ok := msg.(tea.KeyMsg); ok {
		g.forward = k.Type == tea.KeyEnter || k.Type == tea.KeyTab
		defer func() { g.forward = false }()
	}
	m, cmd := form.Update(msg)
	return m.(*huh.Form), cmd
}

func gated[T any](g *formGate, fn func(T) error) func(T) error {
	return func(v T) error {
		if !g.forward {
			return nil
		}
		return fn(v)
	}
}

func (f *keyForm) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case formSavedMsg:
		f.saving = false
		if f.orig == nil {
			return f, tea.Sequence(pop, changed(msg.key.ID), push(newReveal(f.c, revealKey(msg.key, msg.token, 0))))
		}
		return f, tea.Batch(pop, changed(msg.key.ID), flash("Saved key %q.", clean(msg.key.Name)))
	case formErrMsg:
		f.saving = false
		return f, f.failed(msg)
	}
	if f.saving || swallowFilterKey(f.form, msg) {
		return f, nil
	}
	var cmd tea.Cmd
	f.form, cmd = f.gate.update(f.form, msg)
	f.remember()
	switch f.form.State {
	case huh.StateAborted:
		return f, tea.Batch(pop, flash("Cancelled; nothing was saved."))
	case huh.StateCompleted:
		return f, f.save()
	}
	return f, cmd
}

// save runs the store call in a tea.Cmd.
func (f *keyForm) save() tea.Cmd {
	spec, err := f.spec()
	if err != nil {
		return func() tea.Msg { return formErrMsg{err: err} }
	}
	f.saving = true
	st, actor, orig := f.c.st, f.c.actor, f.orig
	return func() tea.Msg {
		if orig == nil {
			k, token, err := st.CreateKey(actor, spec)
			if err != nil {
				return formErrMsg{err: err}
			}
			return formSavedMsg{key: k, token: token}
		}
		k, err := st.EditKey(actor, orig.ID, orig.Version, spec)
		if err != nil {
			fe := formErrMsg{err: err}
			if errors.Is(err, store.ErrConflict) {
				fe.fresh, _ = st.Key(orig.ID)
			}
			return fe
		}
		if k == nil { // nothing changed
			k = orig
		}
		return formSavedMsg{key: k}
	}
}

// failed keeps the form open with the admin's input and says what went
// wrong. After a conflict the form now carries the current version, so a
// second save is a deliberate overwrite, never a silent one.
func (f *keyForm) failed(msg formErrMsg) tea.Cmd {
	switch {
	case errors.Is(msg.err, store.ErrConflict) && msg.fresh != nil:
		changes := conflictChanges(f.orig, msg.fresh)
		f.banner = fmt.Sprintf("Conflict: someone else changed this key while you edited it (version %d → %d; %s). Nothing was saved. Your edits are kept below: review and save again to apply them over the new version, or esc to discard.",
			f.orig.Version, msg.fresh.Version, changes)
		f.orig = msg.fresh
	case errors.Is(msg.err, store.ErrConflict), errors.Is(msg.err, store.ErrNotFound):
		f.banner = "This key was deleted by someone else meanwhile. Nothing was saved; esc to go back."
	default:
		f.banner = errText(msg.err)
	}
	f.build()
	return f.form.Init()
}

// conflictChanges says, in the conflict banner's words, what differs
// between the version the admin edited (a) and the current one (b). The
// diff is model.DiffKeys; the one filter here is that expiries count to
// the minute the screens show, so a sub-minute difference is not named.
func conflictChanges(a, b *model.Key) string {
	var parts []string
	for _, c := range model.DiffKeys(a, b) {
		switch c.Field {
		case model.FieldName:
			parts = append(parts, fmt.Sprintf("name is now %q", clean(b.Name)))
		case model.FieldRole:
			parts = append(parts, "role is now "+string(b.Role))
		case model.FieldExpires:
			if model.FormatTime(a.ExpiresAt, "") != model.FormatTime(b.ExpiresAt, "") {
				parts = append(parts, "expiry is now "+model.FormatDate(b.ExpiresAt, "never"))
			}
		case model.FieldStatus:
			parts = append(parts, "status is now "+string(b.Status))
		case model.FieldSecret:
			parts = append(parts, "secret regenerated")
		default: // description, scopes, resources: named, not shown
			parts = append(parts, string(c.Field))
		}
	}
	if len(parts) == 0 {
		return "changed: last-used only"
	}
	return "changed: " + strings.Join(parts, ", ")
}

func (f *keyForm) bannerView() string {
	return f.c.styles.Error.Render(wrap(f.c.styles, "⚠ "+f.banner, max(f.c.width-2, 20)))
}

func (f *keyForm) View() string {
	if f.saving {
		return f.c.styles.Dim.Render("Saving…")
	}
	if f.banner == "" {
		return f.form.View()
	}
	return f.bannerView() + "\n\n" + f.form.View()
}
