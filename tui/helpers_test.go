package tui

import (
	"io"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/muesli/termenv"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// testNow is the fixed clock of every TUI test, so goldens are stable.
var testNow = time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)

func init() {
	// The global profile matters only to bubbles' own defaults; our styles
	// come from the renderer each test builds.
	lipgloss.SetColorProfile(termenv.Ascii)
}

// asciiRenderer is a renderer pinned to no colours, as NO_COLOR gives.
func asciiRenderer() *lipgloss.Renderer {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	r.SetHasDarkBackground(true)
	return r
}

// newTestStore opens a real store in a temp dir with the demo catalog and
// two operators: alice (ADMIN) and rob (READONLY).
// The store's clock is fixed; tests Set it to make keys expire.
func newTestStore(t *testing.T) (*store.Store, *testkit.Clock) {
	t.Helper()
	clk := testkit.NewClock(testNow.Add(-100 * 24 * time.Hour))
	st, err := store.Open(filepath.Join(t.TempDir(), "keyward.db"), store.Options{
		Bootstrap: "alice", DefaultCatalog: testkit.CatalogJSON(t), Now: clk.Now, FlushInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.AddOperator("alice", "rob", model.OperatorReadonly, nil); err != nil {
		t.Fatal(err)
	}
	return st, clk
}

func day(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func ptime(t time.Time) *time.Time { return &t }

// seedKeys creates a small, varied set of keys: active, disabled, expired,
// expiring, never-expiring, per-resource.
func seedKeys(t *testing.T, st *store.Store, clk *testkit.Clock) map[string]*model.Key {
	t.Helper()
	out := map[string]*model.Key{}
	mk := func(spec model.KeySpec) {
		k, _, err := st.CreateKey("alice", spec)
		if err != nil {
			t.Fatalf("create %s: %v", spec.Name, err)
		}
		out[spec.Name] = k
	}
	start := clk.Now()
	mk(model.KeySpec{Name: "ci-deploy", Description: "GitHub Actions deploys", Role: model.RoleEditor,
		Scopes: []string{"coupons:read", "coupons:write"}, Resources: []string{"web-shop"}, ExpiresAt: ptime(testNow.Add(day(200))), Active: true})
	clk.Set(start.Add(time.Hour))
	mk(model.KeySpec{Name: "analytics-export", Description: "Nightly warehouse export", Role: model.RoleReadonly,
		Scopes: []string{"analytics:read", "exports:read"}, ExpiresAt: ptime(testNow.Add(day(5))), Active: true})
	clk.Set(start.Add(2 * time.Hour))
	mk(model.KeySpec{Name: "old-partner", Description: "Partner integration (retired)", Role: model.RoleEditor,
		Scopes: []string{"campaigns:read"}, ExpiresAt: ptime(testNow.Add(-day(3))), Active: true})
	clk.Set(start.Add(3 * time.Hour))
	mk(model.KeySpec{Name: "root-admin", Role: model.RoleAdmin, Active: true})
	clk.Set(start.Add(4 * time.Hour))
	mk(model.KeySpec{Name: "mobile-app", Description: "iOS and Android apps", Role: model.RoleEditor,
		Scopes: []string{"customers:read"}, Resources: []string{"mobile-app", "loyalty"}, ExpiresAt: ptime(testNow.Add(day(300))), Active: false})
	clk.Set(testNow)
	return out
}

func newTestOptions(st *store.Store, actor string) Options {
	return Options{Store: st, Actor: actor, Renderer: asciiRenderer(), Clipboard: &fakeClipboard{},
		Now: func() time.Time { return testNow }, Output: io.Discard}
}

// fakeClipboard records copies.
type fakeClipboard struct {
	mu   sync.Mutex
	text string
}

func (f *fakeClipboard) Copy(s string) error { f.mu.Lock(); f.text = s; f.mu.Unlock(); return nil }
func (f *fakeClipboard) Clear(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.text == s {
		f.text = ""
	}
	return nil
}
func (f *fakeClipboard) Name() string { return "test clipboard" }
func (f *fakeClipboard) get() string  { f.mu.Lock(); defer f.mu.Unlock(); return f.text }

var (
	reToken = regexp.MustCompile(`kw_[A-Za-z0-9]{20,}`)
	reHint  = regexp.MustCompile(`kw_[A-Za-z0-9]{4}…`)
	reKeyID = regexp.MustCompile(`key_[a-z0-9]{12}`)
	reSec   = regexp.MustCompile(`kws_[A-Za-z0-9_]+`)
)

// normalize masks the random parts (tokens, ids, hints) of a view.
func normalize(v string) string {
	v = reToken.ReplaceAllString(v, "kw_<token>")
	v = reHint.ReplaceAllString(v, "kw_<hint>…")
	v = reKeyID.ReplaceAllStringFunc(v, func(string) string { return "key_<id>    " })
	v = reSec.ReplaceAllString(v, "<secret>")
	return v
}

func requireGolden(t *testing.T, view string) {
	t.Helper()
	if strings.ContainsRune(view, '\x1b') {
		t.Errorf("view holds an escape sequence with the ASCII profile:\n%q", view)
	}
	golden.RequireEqual(t, []byte(normalize(view)))
}

// driver runs a root model synchronously for direct Update tests: it
// executes commands (skipping those that wait, such as blinks and ticks)
// and feeds their messages back.
type driver struct {
	t *testing.T
	m *root
}

func newDriver(t *testing.T, opts Options, w, h int) *driver {
	d := &driver{t: t, m: newRoot(opts)}
	d.send(tea.WindowSizeMsg{Width: w, Height: h})
	d.run(d.m.stack[0].Init(), 0)
	return d
}

func (d *driver) send(msg tea.Msg) {
	_, cmd := d.m.Update(msg)
	d.run(cmd, 0)
}

func (d *driver) keys(keys ...string) {
	for _, k := range keys {
		d.send(keyMsg(k))
	}
}

func (d *driver) typeText(s string) {
	for _, r := range s {
		d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
}

var cmdType = reflect.TypeOf((tea.Cmd)(nil))

func (d *driver) run(cmd tea.Cmd, depth int) {
	if cmd == nil || depth > 40 {
		return
	}
	ch := make(chan tea.Msg, 1)
	go func() { ch <- cmd() }()
	var msg tea.Msg
	select {
	case msg = <-ch:
	case <-time.After(150 * time.Millisecond):
		return // a tick or blink: not needed to drive the UI
	}
	d.handle(msg, depth)
}

// handle feeds one command's message back. A batch's commands run at once
// (as in bubbletea) and share one wait, so a batch holding several blinks
// costs one wait, not one each; their messages are handled in order. A
// sequence runs one command after the other.
func (d *driver) handle(msg tea.Msg, depth int) {
	if msg == nil {
		return
	}
	if b, ok := msg.(tea.BatchMsg); ok {
		chs := make([]chan tea.Msg, len(b))
		for i, c := range b {
			if c == nil {
				continue
			}
			chs[i] = make(chan tea.Msg, 1)
			go func(c tea.Cmd, ch chan tea.Msg) { ch <- c() }(c, chs[i])
		}
		deadline := time.After(150 * time.Millisecond)
		for _, ch := range chs {
			if ch == nil {
				continue
			}
			select {
			case m := <-ch:
				d.handle(m, depth+1)
			case <-deadline:
				return // the rest are ticks or blinks
			}
		}
		return
	}
	if v := reflect.ValueOf(msg); v.Kind() == reflect.Slice && v.Type().Elem() == cmdType {
		for i := 0; i < v.Len(); i++ {
			d.run(v.Index(i).Interface().(tea.Cmd), depth+1)
		}
		return
	}
	if _, ok := msg.(tea.QuitMsg); ok {
		return
	}
	_, next := d.m.Update(msg)
	d.run(next, depth+1)
}

func (d *driver) view() string { return d.m.View() }

func keyMsg(k string) tea.KeyMsg {
	switch k {
	case "enter":
		return tea.KeyMsg{Type: tea.KeyEnter}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	case "up":
		return tea.KeyMsg{Type: tea.KeyUp}
	case "down":
		return tea.KeyMsg{Type: tea.KeyDown}
	case "ctrl+u":
		return tea.KeyMsg{Type: tea.KeyCtrlU}
	case "shift+tab":
		return tea.KeyMsg{Type: tea.KeyShiftTab}
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "backspace":
		return tea.KeyMsg{Type: tea.KeyBackspace}
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	case "pgdown":
		return tea.KeyMsg{Type: tea.KeyPgDown}
	case "space":
		return tea.KeyMsg{Type: tea.KeySpace, Runes: []rune{' '}}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
}
