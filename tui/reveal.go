package tui

import (
	"crypto/sha256"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/keyward/keyward/model"
)

// ClipboardClearAfter is how long a copied secret may stay on the
// clipboard; then it is cleared if the clipboard still holds it.
const ClipboardClearAfter = 30 * time.Second

// revealInfo is what the reveal screen shows: a secret shown exactly once.
type revealInfo struct {
	heading string
	secret  string
	warning string
	notes   []string
}

func revealKey(k *model.Key, token string, grace time.Duration) revealInfo {
	notes := []string{
		"Key " + quoteName(k) + " · " + string(k.Role) + " · expires " + model.FormatDate(k.ExpiresAt, "never"),
	}
	if k.Version > 1 {
		notes = append(notes, graceNote(grace, k.GraceUntil))
	}
	if k.Status == model.StatusDisabled {
		notes = append(notes, "⚠ This key is INACTIVE: it is refused until you activate it (t in the keys table).")
	}
	return revealInfo{heading: "Your new API key", secret: token, notes: notes,
		warning: "⚠ Copy it now and store it safely. It will not be shown again: keyward keeps only a hash."}
}

// reveal shows a secret once. Leaving needs a deliberate y after "Stored
// it?", and then the secret is dropped from the model.
type reveal struct {
	c      *common
	info   revealInfo
	asking bool
	copied string // how it was copied, for the view
	// unconfirmed: copied by OSC 52, which no terminal acknowledges.
	unconfirmed bool
}

type copiedMsg struct {
	via string
	// unconfirmed: sent by OSC 52, which no terminal acknowledges
	// (tmux drops it unless set-clipboard is on).
	unconfirmed bool
	err         error
}

func newReveal(c *common, info revealInfo) *reveal { return &reveal{c: c, info: info} }

func (r *reveal) Init() tea.Cmd    { return nil }
func (r *reveal) Title() string    { return "Reveal" }
func (r *reveal) Typing() bool     { return false }
func (r *reveal) SetSize(w, h int) {}

func (r *reveal) Help() []key.Binding {
	if r.asking {
		return r.c.help(nil, bindYes, bindNo)
	}
	return r.c.help(nil, bindCopy, bindLeave)
}

func (r *reveal) Update(msg tea.Msg) (screen, tea.Cmd) {
	switch msg := msg.(type) {
	case copiedMsg:
		if msg.err != nil {
			return r, flashErr(msg.err)
		}
		r.copied, r.unconfirmed = msg.via, msg.unconfirmed
		if msg.unconfirmed {
			return r, flash("Sent by %s; terminals do not confirm it. A blank replaces it in %d s.", msg.via, int(ClipboardClearAfter.Seconds()))
		}
		return r, flash("Copied with %s; cleared in %d s if still there.", msg.via, int(ClipboardClearAfter.Seconds()))
	case tea.KeyMsg:
		on := r.c.matcher(nil, msg)
		switch {
		case r.asking && on(bindYes):
			r.forget()
			return r, pop
		case r.asking && on(bindNo):
			r.asking = false
		case r.asking:
		case on(bindCopy):
			return r, r.copy()
		case on(bindLeave):
			r.asking = true
		}
	}
	return r, nil
}

// sentByOSC52 reports whether a copy with clip went out as OSC 52, which
// a terminal neither confirms nor refuses.
func sentByOSC52(clip Clipboard) bool {
	switch c := clip.(type) {
	case *osc52Clipboard:
		return true
	case *nativeClipboard:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.fellBack
	}
	return false
}

// forget drops the secret from every field this screen holds.
func (r *reveal) forget() {
	r.info.secret = ""
	r.info = revealInfo{}
}

// copy copies in a tea.Cmd (atotto runs a helper program) and schedules
// the clear. The clear holds only the secret's hash, so nothing keeps the
// secret once the admin leaves this screen.
func (r *reveal) copy() tea.Cmd {
	clip, secret := r.c.clip, r.info.secret
	if secret == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(secret))
	copyCmd := func() tea.Msg {
		if err := clip.Copy(secret); err != nil {
			return copiedMsg{err: err}
		}
		return copiedMsg{via: clip.Name(), unconfirmed: sentByOSC52(clip)}
	}
	var clear tea.Cmd
	if sc, ok := clip.(sumClearer); ok {
		clear = tea.Tick(ClipboardClearAfter, func(time.Time) tea.Msg {
			res, err := sc.clearIfSum(sum)
			if err != nil {
				return flashMsg{text: errText(err), bad: true}
			}
			return flashMsg{text: res.message()}
		})
	} else {
		// Another Clipboard: we know only that we asked.
		name := clip.Name()
		clear = tea.Tick(ClipboardClearAfter, func(time.Time) tea.Msg {
			if err := clip.Clear(secret); err != nil {
				return flashMsg{text: errText(err), bad: true}
			}
			return flashMsg{text: "Asked " + name + " to clear the clipboard (30 s passed)."}
		})
	}
	// Batch, not Sequence: the copy closure (which holds the secret) must not
	// live on for the 30 s the clear waits.
	return tea.Batch(copyCmd, clear)
}

func (r *reveal) View() string {
	s, w := r.c.styles, r.c.width
	var b strings.Builder
	b.WriteString(s.Title.Render(r.info.heading) + "\n\n")
	b.WriteString(s.Warn.Render(wrap(s, r.info.warning, w-2)) + "\n\n")
	// The secret is never truncated: it wraps by character if narrow.
	sec := r.info.secret
	for len(sec) > 0 {
		n := min(len(sec), max(w-4, 8))
		b.WriteString("  " + s.Token.Render(sec[:n]) + "\n")
		sec = sec[n:]
	}
	b.WriteByte('\n')
	for _, n := range r.info.notes {
		b.WriteString(wrap(s, n, w-2) + "\n")
	}
	if r.copied != "" {
		text := "✓ Copied with " + r.copied + "."
		if r.unconfirmed {
			text = "Sent by " + r.copied + ": on your clipboard if your terminal allows OSC 52 (tmux: set-clipboard on)."
		}
		for _, l := range strings.Split(wrap(s, text, w-2), "\n") {
			b.WriteString(s.OK.Render(strings.TrimRight(l, " ")) + "\n")
		}
	}
	b.WriteByte('\n')
	if r.asking {
		b.WriteString(s.Bold.Render("Stored it? It will not be shown again.") + "  " + s.Dim.Render("y leaves · n stays"))
	} else {
		b.WriteString(s.Dim.Render("c copies · enter or esc when you have stored it"))
	}
	return b.String()
}
