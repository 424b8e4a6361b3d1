package tui

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/keyward/keyward/model"
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

func benchTable(b *testing.B, n int) *keysTable {
	b.Helper()
	c := &common{styles: newStyles(asciiRenderer()), keys: newKeyMap(false), now: func() time.Time { return testNow },
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

// A sort keystroke on a column never sorted on this snapshot (cold): the
// cached order is dropped before every press. The name order is built
// with the snapshot, so Name is always warm and not listed.
func BenchmarkSortCold(b *testing.B) {
	for _, n := range sizes {
		for _, col := range []struct {
			key string
			c   column
		}{{"R", colRole}, {"S", colStatus}, {"E", colExpires}, {"L", colLastUsed}, {"C", colCreated}} {
			b.Run(fmt.Sprintf("%d/%s", n, col.c), func(b *testing.B) {
				t := benchTable(b, n)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					t.Update(keyMsg("N"))
					t.d.orders[col.c] = nil
					b.StartTimer()
					t.Update(keyMsg(col.key))
					_ = t.View()
				}
			})
		}
	}
}

// Building the table's data from a snapshot: what start-up and a full
// reload (Resync) cost on top of reading the store, before the first
// frame. The other columns are sorted afterwards in the background.
func BenchmarkTableLoad(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			// The store hands keys over in map order; a table's own slice
			// would be in address order already.
			src := shuffledKeys(n)
			keys := make([]*model.Key, n)
			b.ReportAllocs()
			b.ResetTimer()
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				copy(keys, src)
				b.StartTimer()
				start := cpuTime()
				_ = newTableData(keys, testOps, colName, false, "", testNow)
				cpu += cpuTime() - start
			}
			// On a shared machine CPU time varies less than wall time.
			b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}

// Patching live changes in (off the UI goroutine): a last-used flush of
// 3000 keys, and one key renamed, with every column's order cached and a
// filter active.
func BenchmarkPatch(b *testing.B) {
	for _, n := range sizes {
		keys := cachedBenchKeys(n)
		for _, tc := range []struct {
			name string
			m    int
			edit func(k *model.Key, i int) *model.Key
		}{
			{"lastused3000", 3000, func(k *model.Key, i int) *model.Key {
				c := *k
				at := testNow.Add(time.Duration(i) * time.Second)
				c.LastUsedAt = &at
				return &c
			}},
			{"rename1", 1, func(k *model.Key, i int) *model.Key {
				c := *k
				c.Name = fmt.Sprintf("renamed-%d", i)
				return &c
			}},
		} {
			b.Run(fmt.Sprintf("%d/%s", n, tc.name), func(b *testing.B) {
				d := newTableData(keys, testOps, colLastUsed, false, "check", testNow)
				sortAll(d)
				d.buildIDs()
				m := min(tc.m, n)
				ids := make([]string, m)
				for i := range ids {
					ids[i] = keys[(i*7919)%n].ID
				}
				round := 0
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					round++
					changed := make(map[string]*model.Key, m)
					for j, id := range ids {
						changed[id] = tc.edit(keys[(j*7919)%n], round*m+j)
					}
					get := func(id string) *model.Key { return changed[id] }
					d, _ = d.frozen().patch(get, ids, nil, "")
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

// Memory: what the table's data allocates per key to build
// (build-alloc-B/key: TotalAlloc, so garbage counts too: it stays RSS
// until the next GC, far away behind a 1 GiB store heap), what it keeps
// (retained-B/key: the live heap after a GC, the key set excluded), and
// both again once every column has been sorted (alloc-B/key,
// sorted-retained-B/key).
func BenchmarkTableMem(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			src := shuffledKeys(n)
			keys := make([]*model.Key, n)
			var before, built, retained, after runtime.MemStats
			var keep *tableData
			for i := 0; i < b.N; i++ {
				keep = nil
				copy(keys, src)
				runtime.GC()
				runtime.ReadMemStats(&before)
				d := newTableData(keys, testOps, colName, false, "", testNow)
				runtime.ReadMemStats(&built)
				keep = d
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&retained)
				b.StartTimer()
				sortAll(d)
				runtime.ReadMemStats(&after)
			}
			b.StopTimer()
			allocAll := built.TotalAlloc - before.TotalAlloc + after.TotalAlloc - retained.TotalAlloc
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(keep)
			runtime.KeepAlive(src) // or the last GC frees them and hides 16 B/key of orders
			runtime.KeepAlive(keys)
			perKey := func(x float64) float64 { return x / float64(n) }
			b.ReportMetric(perKey(float64(built.TotalAlloc-before.TotalAlloc)), "build-alloc-B/key")
			b.ReportMetric(perKey(float64(retained.HeapInuse)-float64(before.HeapInuse)), "retained-B/key")
			b.ReportMetric(perKey(float64(allocAll)), "alloc-B/key")
			b.ReportMetric(perKey(float64(after.HeapInuse)-float64(before.HeapInuse)), "sorted-retained-B/key")
		})
	}
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
