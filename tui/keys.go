package tui

import (
	"slices"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/tui/keytable"
)

// keysTable is the home screen: a virtualised table that renders only the
// visible rows, so moving costs the same with 1k or 1M keys.
type keysTable struct {
	c         *common
	d         *keytable.Data
	cursor    int // index in display order
	offset    int // first visible row
	filter    textinput.Model
	filtering bool
	loaded    bool
	// Store changes are applied by one background job at a time: a full
	// reload (start-up, Resync) or a patch of the changed keys. Changes
	// arriving meanwhile wait in pending and go into the next job.
	busy          bool
	pending       []string // changed key ids not applied yet
	pendingReload bool
	// opsChanged: an operator changed since the last job, so the keys
	// that operator created may show another status (model.StatusOf).
	opsChanged bool
	focusID    string // after our own write, the key to select
	jobFocus   string // the focusID the running job was started with
	loads      int    // full loads so far (tests check that changes patch)
	// peeking: d holds only the first page, peeked before the store was
	// open, and the database holds peekTotal keys. The first full load
	// clears it.
	peeking   bool
	peekTotal int
	keys      keyState
}

// keysPatchedMsg is the table's data with some keys re-read from the
// store, built off the UI goroutine from base (the data it replaces).
type keysPatchedMsg struct {
	base  *keytable.Data
	d     *keytable.Data
	focus int32 // index of the key to select, or -1
}

func (keysPatchedMsg) broadcast() {}

// patchLimit: past this many changed keys (or a quarter of the table) a
// full reload is cheaper than patching.
const patchLimit = 200_000

// reloadAfter: statuses (EXPIRING, EXPIRED) and the counts are computed
// at the snapshot's time; patches keep that time, so after this long the
// next change reloads everything instead.
const reloadAfter = 10 * time.Minute

// keysLoadedMsg is a snapshot sorted and filtered off the UI goroutine.
type keysLoadedMsg struct {
	d        *keytable.Data
	selected int // index of the requested key id, or -1
	wantID   string
}

// newKeysTable makes the table; keys (with the operators ops, for their
// statuses) are shown at once unless nil.
func newKeysTable(c *common, keys []*model.Key, ops []model.Operator) *keysTable {
	ti := textinput.New()
	ti.Prompt = "/ "
	ti.Placeholder = "name, id or description"
	ti.CharLimit = 64
	t := &keysTable{c: c, filter: ti}
	if keys != nil {
		t.d = keytable.New(keys, keytable.OperatorMap(ops), keytable.ColName, false, "", c.now())
		t.loaded = true
	} else {
		t.d = keytable.New(nil, nil, keytable.ColName, false, "", c.now())
	}
	t.updateKeys()
	return t
}

// newPeekTable shows first, the first keys in name order, before the store
// is open (Options.Open); total is the database's key count.
func newPeekTable(c *common, first []*model.Key, ops []model.Operator, total int) *keysTable {
	t := newKeysTable(c, first, ops)
	t.peeking, t.peekTotal = true, max(total, len(first))
	return t
}

func (t *keysTable) Init() tea.Cmd {
	if t.loaded || t.c.st == nil {
		return nil
	}
	return t.reload()
}

// reload snapshots the store and sorts/filters it in a tea.Cmd.
func (t *keysTable) reload() tea.Cmd {
	if t.busy {
		t.pendingReload = true
		return nil
	}
	t.busy, t.pendingReload, t.pending, t.jobFocus, t.opsChanged = true, false, nil, t.focusID, false
	st, col, desc, q, now := t.c.st, t.d.Col(), t.d.Desc(), t.d.Query(), t.c.now()
	want := t.focusID
	if k := t.selected(); k != nil && want == "" {
		want = k.ID
	}
	return func() tea.Msg {
		// Operators first: a change after this read comes by the feed.
		ops := keytable.OperatorMap(st.Operators())
		d := keytable.New(st.Keys(), ops, col, desc, q, now)
		return keysLoadedMsg{d: d, selected: d.IndexOfID(want), wantID: want}
	}
}

// refresh applies changed keys: queued while a job runs, patched in the
// background otherwise, or a full reload when that is cheaper.
func (t *keysTable) refresh(ids ...string) tea.Cmd {
	t.pending = append(t.pending, ids...)
	if t.busy {
		return nil
	}
	if t.pendingReload || !t.loaded || len(t.pending) > min(patchLimit, max(t.d.Size()/4, 64)) ||
		t.c.now().Sub(t.d.Now()) > reloadAfter {
		return t.reload()
	}
	if len(t.pending) == 0 && t.focusID == "" && !t.opsChanged {
		return nil
	}
	t.busy, t.jobFocus = true, t.focusID
	st, cur, base, ids, focus, opsChanged := t.c.st, t.d, t.d.Frozen(), t.pending, t.focusID, t.opsChanged
	t.pending, t.opsChanged = nil, false
	limit := min(patchLimit, max(t.d.Size()/4, 64))
	want := focus
	if k := t.selected(); k != nil && want == "" {
		want = k.ID
	}
	get := func(id string) *model.Key {
		k, err := st.Key(id)
		if err != nil {
			return nil
		}
		return k
	}
	return func() tea.Msg {
		var ops map[string]*model.Operator
		if opsChanged {
			// The keys of every operator whose account changed get
			// their status re-derived; past the patch limit a full
			// rebuild is cheaper.
			ops = keytable.OperatorMap(st.Operators())
			more := base.KeysOfChangedCreators(ops)
			if len(ids)+len(more) > limit {
				d := keytable.New(st.Keys(), ops, base.Col(), base.Desc(), base.Query(), base.Now())
				return keysLoadedMsg{d: d, selected: d.IndexOfID(want), wantID: want}
			}
			ids = append(slices.Clip(ids), more...)
		}
		d, j := base.Patch(get, ids, ops, focus)
		return keysPatchedMsg{base: cur, d: d, focus: j}
	}
}

func (t *keysTable) selected() *model.Key { return t.d.At(t.cursor) }

func (t *keysTable) Title() string { return "Keys" }
func (t *keysTable) Typing() bool  { return t.filtering }

func (t *keysTable) SetSize(w, h int) { t.clampOffset() }

func (t *keysTable) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case storeOpenedMsg:
		return t, t.reload()
	case keysLoadedMsg:
		return t, t.loadedSnapshot(msg)
	case keysPatchedMsg:
		return t, t.patched(msg)
	case feedMsg:
		var ids []string
		for _, ch := range msg.changes {
			switch ch.Kind {
			case store.Resync:
				t.pendingReload = true
			case store.KeyCreated, store.KeyUpdated, store.KeyDeleted:
				ids = append(ids, ch.ID)
			case store.LastUsed:
				ids = append(ids, ch.IDs...)
			case store.OperatorsChanged:
				t.opsChanged = true
			}
		}
		if t.pendingReload || len(ids) > 0 || t.opsChanged {
			return t, t.refresh(ids...)
		}
	case keyChangedMsg:
		// Our own write: apply it now and move the cursor to that key.
		t.focusID = msg.id
		return t, t.refresh(msg.id)
	case tea.KeyMsg:
		if t.filtering {
			return t, t.updateFilter(msg)
		}
		return t, t.handleKey(msg)
	case tea.MouseMsg:
		return t, nil
	default:
		if t.filtering {
			var cmd tea.Cmd
			t.filter, cmd = t.filter.Update(msg)
			return t, cmd
		}
	}
	return t, nil
}

func (t *keysTable) loadedSnapshot(msg keysLoadedMsg) tea.Cmd {
	t.busy = false
	t.peeking = false
	t.loads++
	prev := t.focusID
	if k := t.selected(); k != nil && prev == "" {
		prev = k.ID
	}
	t.jobDone()
	d := msg.d
	t.adopt(d)
	idx := msg.selected
	if k := d.At(idx); k == nil || k.ID != prev {
		idx = d.IndexOfID(prev)
	}
	if idx >= 0 {
		t.cursor = idx
	}
	t.clampCursor()
	return t.next()
}

// adopt makes d the table's data, re-applying the sort and filter the
// admin chose while d was being built.
func (t *keysTable) adopt(d *keytable.Data) {
	d.SetView(t.d.Col(), t.d.Desc(), t.d.Query())
	t.d = d
	t.loaded = true
}

func (t *keysTable) patched(msg keysPatchedMsg) tea.Cmd {
	t.busy = false
	if msg.base != t.d { // cannot happen: one job at a time
		return t.reload()
	}
	sel := t.d.IdxAt(t.cursor)
	focused := t.jobFocus != ""
	t.jobDone()
	t.adopt(msg.d)
	want := sel
	if focused && msg.focus >= 0 {
		want = msg.focus
	}
	if i := t.d.RowOf(want); i >= 0 {
		t.cursor = i
	}
	t.clampCursor()
	return t.next()
}

// jobDone forgets the focus the finished job applied (a newer one waits).
func (t *keysTable) jobDone() {
	if t.focusID == t.jobFocus {
		t.focusID = ""
	}
	t.jobFocus = ""
}

// next starts the job that waits. (Columns are sorted when picked, see
// keytable/sort.go.)
func (t *keysTable) next() tea.Cmd {
	if t.pendingReload {
		return t.reload()
	}
	if len(t.pending) > 0 || t.opsChanged {
		return t.refresh()
	}
	return nil
}

func (t *keysTable) updateFilter(msg tea.KeyMsg) tea.Cmd {
	on := t.c.matcher(&t.keys, msg)
	switch {
	case on(bindClearFilter):
		t.filtering = false
		t.filter.Blur()
		t.filter.SetValue("")
		t.applyQuery("")
		return nil
	case on(bindApplyFilter), msg.Type == tea.KeyDown, msg.Type == tea.KeyUp:
		t.filtering = false
		t.filter.Blur()
		if msg.Type != tea.KeyEnter {
			return t.handleKey(msg)
		}
		return nil
	}
	var cmd tea.Cmd
	t.filter, cmd = t.filter.Update(msg)
	t.applyQuery(t.filter.Value())
	return cmd
}

// applyQuery filters and keeps the cursor on the same key if it is still
// shown, else goes to the top.
func (t *keysTable) applyQuery(q string) {
	sel := t.d.IdxAt(t.cursor)
	t.d.SetQuery(q)
	t.cursor = max(t.d.RowOf(sel), 0)
	t.clampCursor()
}

func (t *keysTable) sortBy(col keytable.Column) {
	sel := t.d.IdxAt(t.cursor)
	t.d.SetSort(col)
	t.cursor = max(t.d.RowOf(sel), 0)
	t.clampCursor()
}

func (t *keysTable) handleKey(msg tea.KeyMsg) tea.Cmd {
	on := t.c.matcher(&t.keys, msg)
	if t.peeking && !on(bindUp, bindDown, bindPageUp, bindPageDown, bindTop, bindBottom) {
		return flash("Still loading %s: moving works now, everything else in a moment.", model.Count(t.peekTotal, "key", ""))
	}
	if t.moveKey(on) {
		return nil
	}
	for _, s := range sortKeys {
		if on(s.b) {
			t.sortBy(s.col)
			return nil
		}
	}
	switch {
	case on(bindFilter):
		t.filtering = true
		t.filter.SetValue(t.d.Query())
		t.filter.CursorEnd()
		return t.filter.Focus()
	case on(bindBack):
		if t.d.Query() != "" {
			t.filter.SetValue("")
			t.applyQuery("")
		}
	case on(bindNew):
		return push(newKeyForm(t.c, nil))
	case on(bindDetail, bindEdit, bindToggle, bindRegenerate, bindDelete):
		if k := t.selected(); k != nil {
			return keyAction(t.c, on, k)
		}
	case on(bindSecret):
		return push(newSecretScreen(t.c))
	case on(bindOperators):
		return push(newOperatorsScreen(t.c))
	case on(bindAudit):
		return push(newAuditScreen(t.c, ""))
	}
	return nil
}

// sortKeys are the keys that sort the table, each by its column.
var sortKeys = []struct {
	b   *binding
	col keytable.Column
}{
	{bindSortName, keytable.ColName}, {bindSortRole, keytable.ColRole}, {bindSortStatus, keytable.ColStatus},
	{bindSortExpires, keytable.ColExpires}, {bindSortLastUsed, keytable.ColLastUsed}, {bindSortCreated, keytable.ColCreated},
}

// moveKey moves the cursor when on matches a moving key, and says so.
func (t *keysTable) moveKey(on func(...*binding) bool) bool {
	page := max(t.rows()-1, 1)
	switch {
	case on(bindUp):
		t.move(-1)
	case on(bindDown):
		t.move(1)
	case on(bindPageUp):
		t.move(-page)
	case on(bindPageDown):
		t.move(page)
	case on(bindTop):
		t.move(-t.d.Len())
	case on(bindBottom):
		t.move(t.d.Len())
	default:
		return false
	}
	return true
}

// keyAction opens the screen or dialog for an action on k; the table and
// the detail screen share it. on is the calling screen's key test.
func keyAction(c *common, on func(...*binding) bool, k *model.Key) tea.Cmd {
	switch {
	case on(bindDetail):
		return push(newDetail(c, k))
	case on(bindEdit):
		return push(newKeyForm(c, k))
	case on(bindToggle):
		return push(toggleDialog(c, k))
	case on(bindRegenerate):
		return push(regenerateDialog(c, k))
	case on(bindDelete):
		return push(deleteDialog(c, k))
	}
	return nil
}

func (t *keysTable) move(delta int) {
	t.cursor += delta
	t.clampCursor()
}

func (t *keysTable) clampCursor() {
	t.cursor = clampCursor(t.cursor, t.d.Len())
	t.clampOffset()
}

func (t *keysTable) clampOffset() {
	rows := t.rows()
	if t.cursor < t.offset {
		t.offset = t.cursor
	}
	if t.cursor >= t.offset+rows {
		t.offset = t.cursor - rows + 1
	}
	t.offset = max(min(t.offset, t.d.Len()-rows), 0)
}

// rows is how many key rows fit: the body minus header, status and filter.
func (t *keysTable) rows() int {
	h := t.c.height - 2
	if t.showFilterLine() {
		h--
	}
	return max(h, 1)
}

func (t *keysTable) showFilterLine() bool { return t.filtering || t.d.Query() != "" }

func (t *keysTable) keyState() *keyState { return &t.keys }

// updateKeys: the actions on a key need a selected one, and t says what
// it does to that key.
func (t *keysTable) updateKeys() {
	k := t.selected()
	why := ""
	if k == nil {
		why = "no key selected"
	}
	t.keys.set(why, bindDetail, bindEdit, bindToggle, bindRegenerate, bindDelete)
	t.keys.relabel(bindToggle, toggleLabel(k))
}

// toggleLabel is what t does to k: activate a disabled key, else disable.
func toggleLabel(k *model.Key) string {
	if k != nil && !k.Active() {
		return "activate"
	}
	return "disable"
}

func (t *keysTable) Help() []key.Binding {
	switch {
	case t.filtering:
		return t.c.help(&t.keys, bindApplyFilter, bindClearFilter)
	case t.peeking:
		return t.c.help(&t.keys, bindUp, bindDown, bindPageDown, bindHelp, bindQuit)
	}
	// In the order the help bar drops them from the end when narrow ("?
	// help" always stays and lists them all).
	return t.c.help(&t.keys, bindDetail, bindNew, bindEdit, bindToggle, bindDelete, bindFilter, bindQuit,
		bindOperators, bindAudit, bindSecret, bindRegenerate, bindHelp)
}
