package tui

import (
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// Flash messages show in the footer, dim after a few seconds and then
// fade out (tea.Tick, no goroutines of our own).
const (
	flashBright = 4 * time.Second
	flashDim    = 2 * time.Second
)

type flashState struct {
	text   string
	bad    bool
	fading bool
	id     int
}

type flashTickMsg struct {
	id   int
	stop bool
}

func (f *flashState) set(msg flashMsg) tea.Cmd {
	f.id++
	f.text, f.bad, f.fading = msg.text, msg.bad, false
	return f.tick()
}

func (f *flashState) tick() tea.Cmd {
	if f.text == "" {
		return nil
	}
	id := f.id
	bright := flashBright
	if f.bad {
		bright *= 2 // errors stay longer
	}
	return tea.Tick(bright, func(time.Time) tea.Msg { return flashTickMsg{id: id} })
}

func (f *flashState) update(msg flashTickMsg) tea.Cmd {
	if msg.id != f.id {
		return nil // a newer message replaced it
	}
	if msg.stop {
		f.text = ""
		return nil
	}
	f.fading = true
	id := f.id
	return tea.Tick(flashDim, func(time.Time) tea.Msg { return flashTickMsg{id: id, stop: true} })
}

func (f *flashState) view(s *styles) string {
	switch {
	case f.text == "":
		return ""
	case f.fading:
		return s.FlashFading.Render(" " + f.text)
	case f.bad:
		return s.FlashError.Render(" " + f.text)
	}
	return s.Flash.Render(" " + f.text)
}
