package tui

import (
	"fmt"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/keyward/keyward/model"
)

// The small forms (add operator, add an SSH key) keep the admin's input
// and show the store's refusal as a banner above the form; esc cancels.
func TestSmallFormsShowRefusalAndCancel(t *testing.T) {
	st, _ := newTestStore(t)
	line := fixedKeyLine(7, "alice@laptop")
	if _, _, err := st.AddOperatorKey("alice", "alice", line); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, open, title string
		fill              func(d *driver)
		cancelled         string
	}{
		{"operator", "n", "Add operator", func(d *driver) {
			d.typeText("alice") // exists: the store refuses
			d.keys("enter", "enter", "enter")
		}, "Cancelled; no operator added."},
		{"ssh key", "enter", "Add an SSH key to alice", func(d *driver) {
			d.keys("n")
			d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(line), Paste: true}) // alice has it already
			d.keys("enter")
		}, "Cancelled; no key added."},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
			d.keys("o", c.open)
			c.fill(d)
			v := ansi.Strip(d.view())
			if !strings.Contains(v, c.title) || !strings.Contains(v, "⚠ ") || !strings.Contains(v, "already") {
				t.Fatalf("no refusal banner over the form %q:\n%s", c.title, v)
			}
			help := d.m.top().Help()
			if len(help) == 0 || help[len(help)-1].Help().Desc == "" {
				t.Fatalf("help: %+v", help)
			}
			d.keys("esc")
			if v := ansi.Strip(d.view()); !strings.Contains(v, c.cancelled) {
				t.Fatalf("esc did not cancel with %q:\n%s", c.cancelled, v)
			}
		})
	}
}

// TestSmallFormsRefuseLongKeyLines: a pasted key line over the limit is
// refused with its size on both key forms, never cut to the input's
// character limit first (the SSH keys form cut it to 8192 bytes silently,
// then called the cut line malformed; the add-operator form allowed 16384).
func TestSmallFormsRefuseLongKeyLines(t *testing.T) {
	st, _ := newTestStore(t)
	long := fixedKeyLine(7, strings.Repeat("c", model.MaxPublicKeyLine))
	for _, c := range []struct {
		name string
		open func(d *driver)
	}{
		{"operator", func(d *driver) {
			d.keys("o", "n")
			d.typeText("newop")
			d.keys("enter", "enter")
		}},
		{"ssh key", func(d *driver) { d.keys("o", "enter", "n") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDriver(t, newTestOptions(st, "alice"), 100, 30)
			c.open(d)
			d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(long), Paste: true})
			d.keys("enter")
			want := fmt.Sprintf("public key line is %d bytes; the limit is %d", len(long), model.MaxPublicKeyLine)
			if v := ansi.Strip(d.view()); !strings.Contains(v, want) {
				t.Fatalf("want %q on the form:\n%s", want, v)
			}
		})
	}
}
