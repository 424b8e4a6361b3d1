package keytable

import (
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

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
				_ = New(keys, testOps, ColName, false, "", testNow)
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
				d := New(keys, testOps, ColLastUsed, false, "check", testNow)
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
					d, _ = d.Frozen().Patch(get, ids, nil, "")
				}
			})
		}
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
			var keep *Data
			for i := 0; i < b.N; i++ {
				keep = nil
				copy(keys, src)
				runtime.GC()
				runtime.ReadMemStats(&before)
				d := New(keys, testOps, ColName, false, "", testNow)
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
