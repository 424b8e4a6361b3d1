package tui

import (
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/keyward/keyward/store"
)

// root only routes: global keys, the screen stack, resizes, flash
// messages and the store's change feed. Screens do the work.
type root struct {
	c     *common
	stack []screen
	sub   *store.Subscription
	flash flashState
	help  help.Model
	// open is Options.Open until the store is open; openErr is its error,
	// which ends the program.
	open    func() (*store.Store, error)
	openErr error
	// stale is the header's warning while the store is out of touch with
	// etcd (common.outOfTouch), refreshed every second.
	stale string
}

// staleTickMsg refreshes root.stale.
type staleTickMsg struct{}

// staleEvery is how often the header's out-of-touch warning is refreshed.
const staleEvery = time.Second

// watchStale starts the out-of-touch check, on a store kept in etcd.
func (m *root) watchStale() tea.Cmd {
	if m.c.outOfTouch == nil {
		return nil
	}
	return tea.Tick(staleEvery, func(time.Time) tea.Msg { return staleTickMsg{} })
}

// checkStale sets the header's warning from common.outOfTouch.
func (m *root) checkStale() {
	m.stale = ""
	if m.c.outOfTouch == nil {
		return
	}
	if since, stale := m.c.outOfTouch(); stale {
		m.stale = "! no word from etcd for " + since.Round(time.Second).String() + ": data may be out of date "
	}
}

// storeOpenedMsg: Options.Open returned. Every screen gets it once the
// root has attached the store.
type storeOpenedMsg struct {
	st  *store.Store
	err error
}

func (storeOpenedMsg) broadcast() {}

// broadcast marks messages every screen on the stack receives.
type broadcast interface{ broadcast() }

func (feedMsg) broadcast()       {}
func (keyChangedMsg) broadcast() {}
func (keysLoadedMsg) broadcast() {}

// feedCoalesce groups a burst of store changes into one refresh.
const feedCoalesce = 150 * time.Millisecond

func (m *root) Init() tea.Cmd {
	if open := m.open; open != nil {
		return tea.Batch(func() tea.Msg {
			st, err := open()
			return storeOpenedMsg{st: st, err: err}
		}, m.flash.tick())
	}
	return tea.Batch(m.stack[0].Init(), m.waitFeed(), m.flash.tick(), m.watchStale())
}

func (m *root) top() screen { return m.stack[len(m.stack)-1] }

func (m *root) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	if msg = sanitizeInput(msg); msg == nil {
		return m, nil
	}
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.c.width, m.c.height = msg.Width, max(msg.Height-2, 3)
		for _, s := range m.stack {
			s.SetSize(m.c.width, m.c.height)
		}
	case tea.KeyMsg:
		on, typing := m.c.matcher(nil, msg), m.top().Typing()
		switch {
		case on(bindForceQuit), len(m.stack) == 1 && !typing && on(bindQuit):
			m.Close()
			return m, tea.Quit
		case !typing && on(bindHelp):
			if _, open := m.top().(*helpScreen); !open {
				return m, push(newHelpScreen(m.c, m.top()))
			}
		case !typing && m.open == nil && m.c.readonly:
			if why := m.hiddenWrite(msg); why != "" {
				return m, m.flash.set(flashMsg{text: msg.String() + ": not available. " + why, bad: true})
			}
		}
	case pushMsg:
		m.stack = append(m.stack, msg.s)
		msg.s.SetSize(m.c.width, m.c.height)
		cmd := msg.s.Init()
		updateKeys(msg.s)
		return m, cmd
	case popMsg:
		if len(m.stack) > 1 {
			m.stack = m.stack[:len(m.stack)-1]
		}
		return m, nil
	case replyMsg:
		for i, s := range m.stack {
			if s == msg.to {
				return m, m.update(i, msg.msg)
			}
		}
		return m, nil
	case flashMsg:
		return m, m.flash.set(msg)
	case flashTickMsg:
		return m, m.flash.update(msg)
	case staleTickMsg:
		m.checkStale()
		return m, m.watchStale()
	case feedMsg:
		return m, tea.Batch(m.all(msg), m.waitFeed())
	case storeOpenedMsg:
		m.open = nil
		if msg.err != nil {
			m.openErr = msg.err
			return m, tea.Quit
		}
		m.attach(msg.st)
		return m, tea.Batch(m.all(msg), m.waitFeed(), m.watchStale())
	}
	if _, ok := msg.(broadcast); ok {
		return m, m.all(msg)
	}
	return m, m.update(len(m.stack)-1, msg)
}

// update hands msg to the screen at i, then lets it set its bindings'
// state for what it shows now (updateKeys), so that Help and View only
// read.
func (m *root) update(i int, msg tea.Msg) tea.Cmd {
	s, cmd := m.stack[i].Update(msg)
	m.stack[i] = s
	updateKeys(s)
	return cmd
}

// hiddenWrite says why k does nothing when it is the key of a
// dangerous binding that is off, and of nothing the top screen offers
// now: the admin is told why instead of getting no answer. It returns ""
// otherwise.
func (m *root) hiddenWrite(k tea.KeyMsg) string {
	for _, b := range m.top().Help() {
		if b.Enabled() && key.Matches(k, b) {
			return ""
		}
	}
	state := keyStateOf(m.top())
	for _, b := range bindings {
		if b.dangerous && b.has(k) {
			return m.c.disabled(state, b)
		}
	}
	return ""
}

// all sends msg to every screen on the stack.
func (m *root) all(msg tea.Msg) tea.Cmd {
	cmds := make([]tea.Cmd, 0, len(m.stack))
	for i := range m.stack {
		cmds = append(cmds, m.update(i, msg))
	}
	return tea.Batch(cmds...)
}

// waitFeed waits for store changes in a tea.Cmd and coalesces bursts.
func (m *root) waitFeed() tea.Cmd {
	if m.sub == nil {
		return nil
	}
	sub := m.sub
	return func() tea.Msg {
		if _, ok := <-sub.Ready(); !ok {
			return nil
		}
		time.Sleep(feedCoalesce)
		return feedMsg{changes: sub.Next()}
	}
}

// Close stops the change feed; safe to call twice.
func (m *root) Close() {
	if m.sub != nil {
		m.sub.Close()
	}
}

func (m *root) View() string {
	c, s := m.c, m.c.styles
	var crumbs []string
	for _, sc := range m.stack {
		crumbs = append(crumbs, sc.Title())
	}
	who := clean(c.name)
	if m.open != nil {
		who += " (opening…)" // rights are known once the store is open
	} else if c.readonly {
		who += " (read-only)"
	}
	right := m.stale + who + " "
	header := s.Header.Render(fit(" keyward  "+strings.Join(crumbs, " › "), c.width-ansi.StringWidth(right)) + right)
	body := padLines(m.top().View(), c.width, c.height)
	footer := m.flash.view(s)
	if footer == "" {
		footer = footerHelp(s, m.top().Help(), c.width)
	}
	return header + "\n" + body + "\n" + clipText(footer, c.width)
}
