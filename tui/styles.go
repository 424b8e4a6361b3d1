package tui

import (
	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/huh"
	"github.com/charmbracelet/lipgloss"

	"github.com/keyward/keyward/model"
)

// styles are built from one renderer, so every SSH session gets styles for
// its own terminal (colour profile, dark or light background). There are no
// package-level styles anywhere in this package.
type styles struct {
	r *lipgloss.Renderer

	Header      lipgloss.Style // top bar
	HeaderDim   lipgloss.Style
	Title       lipgloss.Style // a screen's heading
	Dim         lipgloss.Style
	Bold        lipgloss.Style
	Label       lipgloss.Style // field labels in detail views
	ColHeader   lipgloss.Style
	Selected    lipgloss.Style // the cursor row
	Status      lipgloss.Style // counts line
	Flash       lipgloss.Style
	FlashFading lipgloss.Style
	FlashError  lipgloss.Style
	Error       lipgloss.Style
	Warn        lipgloss.Style
	OK          lipgloss.Style
	Token       lipgloss.Style // the one-time secret
	Box         lipgloss.Style // dialogs
	DangerBox   lipgloss.Style
	Button      lipgloss.Style
	ButtonFocus lipgloss.Style
	DangerFocus lipgloss.Style
	Empty       lipgloss.Style

	status map[model.DisplayStatus]lipgloss.Style
	Help   help.Styles
	Huh    *huh.Theme
}

func newStyles(r *lipgloss.Renderer) *styles {
	if r == nil {
		r = lipgloss.DefaultRenderer()
	}
	var (
		fg      = lipgloss.AdaptiveColor{Light: "235", Dark: "252"}
		dim     = lipgloss.AdaptiveColor{Light: "245", Dark: "243"}
		accent  = lipgloss.AdaptiveColor{Light: "#5A56E0", Dark: "#7571F9"}
		selBg   = lipgloss.AdaptiveColor{Light: "254", Dark: "237"}
		green   = lipgloss.AdaptiveColor{Light: "#027A55", Dark: "#02BF87"}
		red     = lipgloss.AdaptiveColor{Light: "#C8102E", Dark: "#ED567A"}
		yellow  = lipgloss.AdaptiveColor{Light: "#8A6100", Dark: "#E8C547"}
		barBg   = lipgloss.AdaptiveColor{Light: "252", Dark: "236"}
		onColor = lipgloss.AdaptiveColor{Light: "#FFFFFF", Dark: "#FFFDF5"}
	)
	n := r.NewStyle
	s := &styles{r: r}
	s.Header = n().Bold(true).Foreground(onColor).Background(accent)
	s.HeaderDim = n().Foreground(dim)
	s.Title = n().Bold(true).Foreground(accent)
	s.Dim = n().Foreground(dim)
	s.Bold = n().Bold(true)
	s.Label = n().Foreground(dim).Width(16)
	s.ColHeader = n().Bold(true).Foreground(fg)
	s.Selected = n().Background(selBg).Bold(true)
	s.Status = n().Foreground(fg).Background(barBg)
	s.Flash = n().Foreground(green).Bold(true)
	s.FlashFading = n().Foreground(dim)
	s.FlashError = n().Foreground(red).Bold(true)
	s.Error = n().Foreground(red)
	s.Warn = n().Foreground(yellow)
	s.OK = n().Foreground(green)
	s.Token = n().Bold(true).Foreground(green)
	s.Box = n().Border(lipgloss.RoundedBorder()).BorderForeground(accent).Padding(0, 1)
	s.DangerBox = n().Border(lipgloss.RoundedBorder()).BorderForeground(red).Padding(0, 1)
	s.Button = n().Padding(0, 1).Foreground(fg).Background(barBg)
	s.ButtonFocus = n().Padding(0, 1).Bold(true).Foreground(onColor).Background(accent)
	s.DangerFocus = n().Padding(0, 1).Bold(true).Foreground(onColor).Background(red)
	s.Empty = n().Foreground(dim).Padding(1, 2)
	s.status = map[model.DisplayStatus]lipgloss.Style{
		model.ShowActive:   n().Foreground(green),
		model.ShowDisabled: n().Foreground(dim),
		model.ShowExpired:  n().Foreground(red),
		model.ShowExpiring: n().Foreground(yellow),
	}
	s.Help = help.Styles{
		ShortKey:       n().Foreground(fg).Bold(true),
		ShortDesc:      n().Foreground(dim),
		ShortSeparator: n().Foreground(dim),
		Ellipsis:       n().Foreground(dim),
		FullKey:        n().Foreground(fg).Bold(true),
		FullDesc:       n().Foreground(dim),
		FullSeparator:  n().Foreground(dim),
	}
	s.Huh = huhTheme(r)
	return s
}

func (s *styles) statusStyle(d model.DisplayStatus) lipgloss.Style {
	if st, ok := s.status[d]; ok {
		return st
	}
	return s.Dim
}

// huhTheme is huh's Charm theme with every style re-bound to r, so forms
// inside an SSH session render for that session's terminal.
func huhTheme(r *lipgloss.Renderer) *huh.Theme {
	t := huh.ThemeCharm()
	bindField := func(f *huh.FieldStyles) {
		for _, st := range []*lipgloss.Style{
			&f.Base, &f.Title, &f.Description, &f.ErrorIndicator, &f.ErrorMessage,
			&f.SelectSelector, &f.Option, &f.NextIndicator, &f.PrevIndicator,
			&f.Directory, &f.File, &f.MultiSelectSelector, &f.SelectedOption,
			&f.SelectedPrefix, &f.UnselectedOption, &f.UnselectedPrefix,
			&f.TextInput.Cursor, &f.TextInput.CursorText, &f.TextInput.Placeholder,
			&f.TextInput.Prompt, &f.TextInput.Text,
			&f.FocusedButton, &f.BlurredButton, &f.Card, &f.NoteTitle, &f.Next,
		} {
			*st = st.Renderer(r)
		}
	}
	bindField(&t.Focused)
	bindField(&t.Blurred)
	for _, st := range []*lipgloss.Style{&t.Form.Base, &t.Group.Base, &t.Group.Title, &t.Group.Description, &t.FieldSeparator,
		&t.Help.Ellipsis, &t.Help.ShortKey, &t.Help.ShortDesc, &t.Help.ShortSeparator, &t.Help.FullKey, &t.Help.FullDesc, &t.Help.FullSeparator} {
		*st = st.Renderer(r)
	}
	return t
}
