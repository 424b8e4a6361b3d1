package tui

import (
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// secretScreen shows the HTTP shared secret's metadata; revealing and
// rotating each sit behind a confirm and end on the reveal screen.
type secretScreen struct {
	c    *common
	meta store.SecretMeta
	err  error
	done bool
	keys keyState
}

type secretLoadedMsg struct {
	meta store.SecretMeta
	err  error
}

func newSecretScreen(c *common) *secretScreen { return &secretScreen{c: c} }

func (s *secretScreen) Init() tea.Cmd    { return s.load() }
func (s *secretScreen) Title() string    { return "Shared secret" }
func (s *secretScreen) Typing() bool     { return false }
func (s *secretScreen) SetSize(w, h int) {}

func (s *secretScreen) load() tea.Cmd {
	st := s.c.st
	return reply(s, func() tea.Msg {
		m, err := st.SecretInfo()
		return secretLoadedMsg{m, err}
	})
}

func (s *secretScreen) keyState() *keyState { return &s.keys }

// updateKeys: with no secret yet there is nothing to rotate (the dialog
// would speak of an old secret); revealing generates the first one.
func (s *secretScreen) updateKeys() {
	why := ""
	if !s.done || !s.meta.Exists {
		why = "there is no shared secret yet; v generates one"
	}
	s.keys.set(why, bindRotateSecret)
}

func (s *secretScreen) Help() []key.Binding {
	return s.c.help(&s.keys, bindRevealSecret, bindRotateSecret, bindBack, bindHelp)
}

func (s *secretScreen) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case secretLoadedMsg:
		s.meta, s.err, s.done = msg.meta, msg.err, true
	case feedMsg:
		if store.Touches(msg.changes, store.SecretChanged) {
			return s, s.load()
		}
	case tea.KeyMsg:
		on := s.c.matcher(&s.keys, msg)
		switch {
		case on(bindBack):
			return s, pop
		case on(bindRevealSecret):
			return s, push(s.revealDialog())
		case on(bindRotateSecret):
			return s, push(s.rotateDialog())
		}
	}
	return s, nil
}

func secretReveal(secret string, m store.SecretMeta, heading string) revealInfo {
	notes := []string{"Services send it as: Authorization: Bearer <secret>"}
	if m.PreviousValidUntil != nil {
		notes = append(notes, "The previous secret keeps working until "+model.FormatTime(m.PreviousValidUntil, "never")+".")
	}
	return revealInfo{heading: heading, secret: secret, notes: notes,
		warning: "⚠ Anyone holding this secret can call the verify API. Revealing it again is audited."}
}

func (s *secretScreen) revealDialog() *confirmDialog {
	st, actor, c := s.c.st, s.c.actor, s.c
	return &confirmDialog{c: c, action: "Reveal",
		title: "Reveal the shared secret?",
		body:  []string{"It is shown on screen until you leave, and the reveal is recorded in the audit log.", "If none exists yet, one is generated now."},
		run: func(int) tea.Cmd {
			return func() tea.Msg {
				sec, m, err := st.RevealSecret(actor)
				if err != nil {
					return flashMsg{text: errText(err), bad: true}
				}
				return tea.BatchMsg{s.load(), push(newReveal(c, secretReveal(sec, m, "Shared secret")))}
			}
		}}
}

func (s *secretScreen) rotateDialog() *confirmDialog {
	st, actor, c := s.c.st, s.c.actor, s.c
	d := &confirmDialog{c: c, action: "Rotate", danger: true,
		title: "Rotate the shared secret?",
		body:  []string{"A new secret is generated. Every service must switch to it. How long may the old one keep working?"}}
	return withGraceMenu(d, func(grace time.Duration) tea.Msg {
		sec, m, err := st.RotateSecret(actor, grace)
		if err != nil {
			return flashMsg{text: errText(err), bad: true}
		}
		return tea.BatchMsg{s.load(), push(newReveal(c, secretReveal(sec, m, "New shared secret")))}
	})
}

func (s *secretScreen) View() string {
	st := s.c.styles
	var b strings.Builder
	b.WriteString(st.Title.Render("HTTP shared secret") + "\n")
	b.WriteString(st.Dim.Render(wrap(st, "Services calling POST /v1/keys/verify authenticate with it as a bearer token. It is stored encrypted; only ADMINs may reveal or rotate it.", max(s.c.width-2, 20))) + "\n\n")
	row := func(l, v string) { b.WriteString(st.Label.Render(l) + v + "\n") }
	switch {
	case !s.done:
		b.WriteString(st.Dim.Render("Loading…"))
	case s.err != nil:
		b.WriteString(st.Error.Render(errText(s.err)))
	case !s.meta.Exists:
		b.WriteString("No shared secret yet: revealing generates one.\n")
	default:
		row("Hint", clean(s.meta.Hint)+"…")
		row("Created", model.FormatTime(s.meta.CreatedAt, "never"))
		row("Rotated", model.FormatTime(s.meta.RotatedAt, "never"))
		if s.meta.PreviousValidUntil != nil {
			row("Previous valid", "until "+model.FormatTime(s.meta.PreviousValidUntil, "never"))
		}
	}
	switch {
	case s.c.roWhy != "":
		b.WriteString("\n" + st.Dim.Render(wrap(st, s.c.roWhy+" Only the metadata is shown.", max(s.c.width-2, 20))))
	case s.c.readonly:
		b.WriteString("\n" + st.Dim.Render("READONLY operators see metadata only."))
	}
	return b.String()
}
