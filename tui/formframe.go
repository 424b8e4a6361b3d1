package tui

import (
	"errors"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/huh"

	"github.com/keyward/keyward/model"
)

// formFrame is what the small one-page forms (add an operator, add an SSH
// key to one) share: the huh form sized to the screen, the last error as
// a banner above it, and "Saving…" while the store works. Each form
// embeds it and adds its fields, build, Title, Init and Update.
type formFrame struct {
	c      *common
	form   *huh.Form
	banner string
	saving bool
}

func (f *formFrame) Typing() bool { return true }

func (f *formFrame) SetSize(w, h int) { f.form.WithWidth(min(w, 100)).WithHeight(max(h-5, 5)) }

// fitForm sizes a freshly built form to the screen.
func (f *formFrame) fitForm() { f.SetSize(f.c.width, f.c.height) }

func (f *formFrame) Help() []key.Binding {
	return append(f.form.KeyBinds(), f.c.help(nil, bindCancel)...)
}

func (f *formFrame) View() string {
	if f.saving {
		return f.c.styles.Dim.Render("Saving…")
	}
	if f.banner != "" {
		return f.c.styles.Error.Render(wrap(f.c.styles, "⚠ "+f.banner, max(f.c.width-2, 20))) + "\n\n" + f.form.View()
	}
	return f.form.View()
}

// validPublicKey checks a pasted authorized_keys line, in words safe for
// the screen.
func validPublicKey(s string) error {
	if _, err := model.ParsePublicKey(s); err != nil {
		return errors.New(clean(err.Error()))
	}
	return nil
}

// keyLineInputLimit is what a key field takes: twice the longest line
// model.ParsePublicKey accepts, so an over-long paste reaches the
// validator and is refused with its size. At the parser's own limit huh
// would cut it silently, and a cut comment still parses.
const keyLineInputLimit = 2 * model.MaxPublicKeyLine
