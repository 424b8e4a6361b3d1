package tui

import (
	"fmt"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/keyward/keyward/model"
)

// benchKeys builds n realistic keys in memory (no database).
func benchKeys(n int) []*model.Key {
	teams := []string{"billing", "checkout", "crm", "fraud", "loyalty", "marketing", "mobile", "search"}
	kinds := []string{"bot", "cron", "etl", "export", "sync", "webhook", "worker"}
	roles := []model.Role{model.RoleAdmin, model.RoleEditor, model.RoleEditor, model.RoleReadonly}
	keys := make([]*model.Key, n)
	for i := range keys {
		created := testNow.Add(-time.Duration(i%900) * 24 * time.Hour)
		exp := created.Add(365 * 24 * time.Hour)
		k := &model.Key{
			ID:          fmt.Sprintf("key_%012d", i),
			Name:        fmt.Sprintf("%s-%s-%07d", teams[i%len(teams)], kinds[(i/8)%len(kinds)], (i*7919)%n),
			Description: fmt.Sprintf("Used by the %s team", teams[(i/3)%len(teams)]),
			Role:        roles[i%len(roles)], Status: model.StatusActive,
			CreatedAt: created, CreatedBy: []string{"alice", "bob", "carol"}[i%3], ExpiresAt: &exp, Version: 1,
		}
		if i%11 == 0 {
			k.Status = model.StatusDisabled
		}
		if i%3 == 0 {
			t := testNow.Add(-time.Duration(i%5000) * time.Minute)
			k.LastUsedAt = &t
		}
		keys[i] = k
	}
	return keys
}

func benchTable(b *testing.B, n int) *keysTable {
	b.Helper()
	c := &common{styles: newStyles(asciiRenderer()), keys: newKeyMap(false), now: func() time.Time { return testNow },
		clip: &fakeClipboard{}, width: 120, height: 38}
	return newKeysTable(c, benchKeys(n))
}

var sizes = []int{1_000, 100_000, 1_000_000}

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

// A sort keystroke: alternate between two columns so that each press
// re-sorts (cold: the cached orders are dropped every time).
func BenchmarkSortCold(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			t := benchTable(b, n)
			cols := []string{"E", "L"}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t.d.orders = [numColumns][]int32{}
				t.Update(keyMsg(cols[i%2]))
				_ = t.View()
			}
		})
	}
}

// Warm sort: switching to a column sorted before on this snapshot, and
// reversing (the same key again), as an admin flipping sorts does.
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
