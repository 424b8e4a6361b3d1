package tui

import (
	"fmt"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/tui/keytable"
)

func benchTable(b *testing.B, n int) *keysTable {
	b.Helper()
	c := &common{styles: newStyles(asciiRenderer()), now: func() time.Time { return testNow },
		clip: &fakeClipboard{}, width: 120, height: 38}
	return newKeysTable(c, testkit.BenchKeys(n, testNow), testkit.BenchOperators())
}

// sizes are the table sizes benchmarked (testkit.BenchSizes).
var sizes = testkit.BenchSizes()

// A move: one down (or up at the end) plus the View it causes.
func BenchmarkMove(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			t := benchTable(b, n)
			t.cursor = n / 2
			down, up := keyMsg("down"), keyMsg("up")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				msg := down
				if i%2 == 1 {
					msg = up
				}
				t.Update(msg)
				_ = t.View()
			}
		})
	}
}

// A sort keystroke on a column never sorted on this snapshot (cold): N
// before every press drops the column's cached order (only Name's is
// kept besides the current column's, see keytable.Data.SetSort). The
// name order is built with the snapshot, so Name is always warm and not
// listed.
func BenchmarkSortCold(b *testing.B) {
	for _, n := range sizes {
		for _, col := range []struct {
			key string
			c   keytable.Column
		}{{"R", keytable.ColRole}, {"S", keytable.ColStatus}, {"E", keytable.ColExpires}, {"L", keytable.ColLastUsed}, {"C", keytable.ColCreated}} {
			b.Run(fmt.Sprintf("%d/%s", n, col.c), func(b *testing.B) {
				t := benchTable(b, n)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					t.Update(keyMsg("N"))
					b.StartTimer()
					t.Update(keyMsg(col.key))
					_ = t.View()
				}
			})
		}
	}
}

// Flipping sorts as an admin does: a column, the same key again
// (reverses: a flag), then Name (always kept). Only the current column's
// order is kept besides Name's, so going back to Expires sorts it again:
// one cold sort every three keys.
func BenchmarkSortWarm(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			t := benchTable(b, n)
			t.Update(keyMsg("E"))
			t.Update(keyMsg("N"))
			cols := []string{"E", "E", "N"}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t.Update(keyMsg(cols[i%3]))
				_ = t.View()
			}
		})
	}
}

// A filter keystroke: typing one more character of a query ("c" then
// "h"), each an Update + View, starting from the unfiltered table.
func BenchmarkFilterKeystroke(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			t := benchTable(b, n)
			t.Update(keyMsg("/"))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t.Update(keyMsg("c")) // first character: scans every key
				_ = t.View()
				b.StopTimer()
				t.Update(tea.KeyMsg{Type: tea.KeyBackspace}) // pops back: O(1)
				b.StartTimer()
			}
		})
	}
}

// Narrowing: the second character filters only the first's matches.
func BenchmarkFilterNarrow(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			t := benchTable(b, n)
			t.Update(keyMsg("/"))
			t.Update(keyMsg("c"))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t.Update(keyMsg("r")) // "cr"
				_ = t.View()
				b.StopTimer()
				t.Update(tea.KeyMsg{Type: tea.KeyBackspace})
				b.StartTimer()
			}
		})
	}
}
