package tui

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/tui/keytable"
)

// benchKeyCache shares the (immutable) key sets between benchmarks: a
// million keys take seconds to build.
var benchKeyCache = map[int][]*model.Key{}

func cachedBenchKeys(n int) []*model.Key {
	if benchKeyCache[n] == nil {
		benchKeyCache[n] = benchKeys(n)
	}
	return benchKeyCache[n]
}

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

// shuffledKeys is the n bench keys in a random order, as the store's
// map hands them over (and not the address order a table leaves behind).
func shuffledKeys(n int) []*model.Key {
	keys := slices.Clone(cachedBenchKeys(n))
	rand.New(rand.NewPCG(1, uint64(n))).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	return keys
}

// testOperators are the creators of the bench keys, all active since
// before any key.
var testOperators = func() []model.Operator {
	var ops []model.Operator
	for _, n := range []string{"alice", "bob", "Bob", "carol", "dave", "erin"} {
		ops = append(ops, model.Operator{Name: n, Role: model.OperatorAdmin})
	}
	return ops
}()

func benchTable(b *testing.B, n int) *keysTable {
	b.Helper()
	c := &common{styles: newStyles(asciiRenderer()), now: func() time.Time { return testNow },
		clip: &fakeClipboard{}, width: 120, height: 38}
	return newKeysTable(c, cachedBenchKeys(n), testOperators)
}

// sizes are the table sizes benchmarked. The 1M cases need about 1 GiB
// and a few seconds of set-up each, so they run only with
// KEYWARD_BENCH_1M=1 (CI runs -benchtime 1x without it).
var sizes = benchSizes()

func benchSizes() []int {
	if os.Getenv("KEYWARD_BENCH_1M") != "" {
		return []int{1_000, 100_000, 1_000_000}
	}
	return []int{1_000, 100_000}
}

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
