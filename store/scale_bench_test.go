package store_test

import (
	"bufio"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Scale figures for BENCHMARKS.md, section Verify at scale. They only run when asked:
//
//	KEYWARD_BENCH_1M=1 go test -run '^$' -bench BenchmarkVerifyScale -benchtime 2s -timeout 30m ./store
//
// Building a 1M-key database takes tens of seconds and over a GiB of
// memory, and CI runs every benchmark once with -benchtime 1x, so without
// KEYWARD_BENCH_1M the benchmark skips at once.

const scaleKeys = 1_000_000

// scaleDB is a 1M-key database built with ImportKeys and NoSync.
type scaleDB struct {
	dir    string
	path   string
	s      *store.Store
	tokens []string
	build  time.Duration
}

// buildScaleDB imports n keys (the same specs as the 100k benchmark) in
// batches of 100k, then prepares the tokens like benchDB does.
func buildScaleDB(b *testing.B, n int) *scaleDB {
	b.Helper()
	dir, err := os.MkdirTemp("", "keyward-scale-")
	if err != nil {
		b.Fatal(err)
	}
	db := &scaleDB{dir: dir, path: filepath.Join(dir, "scale.db")}
	b.Cleanup(func() {
		if db.s != nil {
			db.s.Close()
		}
		os.RemoveAll(dir)
	})
	opts := benchOptions(b)
	opts.NoSync = true
	t0 := time.Now()
	if db.s, err = store.Open(db.path, opts); err != nil {
		b.Fatal(err)
	}
	specs := benchSpecs(n, time.Now())
	toks := make([]string, 0, n)
	for lo := 0; lo < n; lo += 100_000 {
		_, tk, err := db.s.ImportKeys("admin", specs[lo:min(n, lo+100_000)])
		if err != nil {
			b.Fatal(err)
		}
		toks = append(toks, tk...)
	}
	db.build = time.Since(t0)
	db.tokens = shuffledArena(toks)
	return db
}

// shuffledArena shuffles toks and lays their text out contiguously in that
// order (see benchDB for why).
func shuffledArena(toks []string) []string {
	mrand.Shuffle(len(toks), func(i, j int) { toks[i], toks[j] = toks[j], toks[i] })
	arena := strings.Join(toks, "")
	for i := range toks {
		n := len(toks[i])
		toks[i], arena = arena[:n], arena[n:]
	}
	return toks
}

func fileSize(tb testing.TB, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

// procStatus returns this process's memory lines from /proc/self/status
// (VmRSS, VmHWM, RssAnon, RssFile), in MiB.
func procStatus() map[string]float64 {
	out := map[string]float64{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch name {
		case "VmRSS", "VmHWM", "RssAnon", "RssFile":
			var kb float64
			if _, err := fmt.Sscan(rest, &kb); err == nil {
				out[name] = kb / 1024
			}
		}
	}
	return out
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkVerifyScale compares in-process Verify on a 1M-key database
// with the 100k-key database of BenchmarkVerify, in one process, in
// interleaved rounds (100k, 1M, 100k, 1M, …), and logs the 1M/100k ratio
// of the medians. It also opens a closed copy of the 1M database
// (open-1M: time and Go heap after load) and logs the file size.
//
// Gated by KEYWARD_BENCH_1M=1 (the build is slow and large; CI's
// -benchtime 1x run skips it). KEYWARD_BENCH_ROUNDS sets the rounds
// (default 3). The probe and import*-stall sub-benchmarks verify on one
// goroutine, idle and while ImportKeys adds batches, and report the
// longest verification: a writer holding the store's lock shows there.
// KEYWARD_BENCH_1M_KEEP=path keeps a closed copy of the 1M
// database there, for TestOpenScaleRSS in a fresh process.
func BenchmarkVerifyScale(b *testing.B) {
	if os.Getenv("KEYWARD_BENCH_1M") == "" {
		b.Skip("1M-key scale benchmark; set KEYWARD_BENCH_1M=1 (see BENCHMARKS.md, section Verify at scale)")
	}
	rounds := 3
	if v := os.Getenv("KEYWARD_BENCH_ROUNDS"); v != "" {
		if _, err := fmt.Sscan(v, &rounds); err != nil || rounds < 1 || rounds > 20 {
			rounds = 3
		}
	}
	benchDB(b)
	big := buildScaleDB(b, scaleKeys)
	b.Logf("built %d keys in %s (ImportKeys, 10 batches of 100k, NoSync); file %.1f MiB",
		scaleKeys, big.build.Round(time.Millisecond), float64(fileSize(b, big.path))/(1<<20))

	type db struct {
		name   string
		s      *store.Store
		tokens []string
	}
	dbs := []db{{"100k", bench.s, bench.tokens}, {"1M", big.s, big.tokens}}
	// One untimed pass over every token first: a key's first verification
	// in a flush interval also queues it for the last-used flush, later
	// ones only store the time. With the hour-long flush interval here,
	// every timed call then takes the steady path at both sizes.
	t0 := time.Now()
	for _, d := range dbs {
		for _, tok := range d.tokens {
			if r := d.s.Verify(tok, "coupons:read", "web-shop", "10.0.0.1"); r.Code != model.CodeValid {
				b.Fatalf("%s", r.Code)
			}
		}
	}
	b.Logf("first pass (queues every key for the flush): %s for %d verifications",
		time.Since(t0).Round(time.Millisecond), len(dbs[0].tokens)+len(dbs[1].tokens))
	nsop := map[string][]float64{}
	for range rounds {
		for _, d := range dbs {
			b.Run("serial-"+d.name, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if r := d.s.Verify(d.tokens[i%len(d.tokens)], "coupons:read", "web-shop", "10.0.0.1"); r.Code != model.CodeValid {
						b.Fatalf("%s", r.Code)
					}
				}
				ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				b.ReportMetric(1e9/ns, "verifies/s")
				if b.N > 1 {
					nsop["serial-"+d.name] = append(nsop["serial-"+d.name], ns)
				}
			})
		}
		for _, d := range dbs {
			b.Run("parallel-"+d.name, func(b *testing.B) {
				b.ReportAllocs()
				var seed atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					i := int(seed.Add(1)) * (len(d.tokens) / 8)
					for pb.Next() {
						i++
						if r := d.s.Verify(d.tokens[i%len(d.tokens)], "coupons:read", "web-shop", "10.0.0.1"); r.Code != model.CodeValid {
							b.Errorf("%s", r.Code)
							return
						}
					}
				})
				ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				b.ReportMetric(1e9/ns, "verifies/s")
				if b.N > 1 {
					nsop["parallel-"+d.name] = append(nsop["parallel-"+d.name], ns)
				}
			})
		}
	}
	// The last run of each sub-benchmark is the measured one; earlier ones
	// (b.N = 1, …) were probes. Keep the last value per round.
	med := func(name string) float64 {
		v := slices.Clone(nsop[name])
		if len(v) == 0 {
			return 0
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	for _, mode := range []string{"serial", "parallel"} {
		small, large := med(mode+"-100k"), med(mode+"-1M")
		if small > 0 && large > 0 {
			b.Logf("%s: median of all timed runs 100k %.0f ns/op (%.0f/s), 1M %.0f ns/op (%.0f/s); 1M/100k throughput %.1f%%",
				mode, small, 1e9/small, large, 1e9/large, 100*small/large)
		}
	}

	// A closed copy of the 1M database, for the open benchmark.
	cp := filepath.Join(big.dir, "open.db")
	f, err := os.Create(cp)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := big.s.Backup(f); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if keep := os.Getenv("KEYWARD_BENCH_1M_KEEP"); keep != "" {
		if err := testkit.CopyFile(cp, keep); err != nil {
			b.Fatal(err)
		}
		b.Logf("kept a copy of the 1M database at %s", keep)
	}
	b.Run("open-1M", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			before := heapInuse()
			b.StartTimer()
			s, err := store.Open(cp, benchOptions(b))
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if s.KeyCount() != scaleKeys {
				b.Fatalf("%d keys", s.KeyCount())
			}
			b.ReportMetric(float64(heapInuse()-before)/(1<<20), "heap-MiB")
			s.Close()
			b.StartTimer()
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/open")
		b.ReportMetric(float64(fileSize(b, cp))/(1<<20), "file-MiB")
	})
	// Read stalls: a verifying goroutine while ImportKeys adds batches to
	// the 1M database (idle first, for comparison).
	b.Run("probe-idle-1M", func(b *testing.B) {
		stop := make(chan struct{})
		res := make(chan []time.Duration, 1)
		go func() { res <- stallProbe(big.s, big.tokens, stop) }()
		time.Sleep(time.Duration(b.N) * 100 * time.Millisecond)
		close(stop)
		lat := <-res
		b.ReportMetric(float64(lat[len(lat)*999/1000].Microseconds()), "verify-p99.9-µs")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "verify-max-µs")
	})
	for _, n := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("import%d-stall-1M", n), func(b *testing.B) { benchImportStall(b, big.s, big.tokens, n) })
	}
}

// stallProbe verifies tokens in a loop on one goroutine until stop closes
// and returns every call's latency, sorted. While a writer holds the
// store's lock, a call waits, so the longest calls show the lock's hold.
func stallProbe(s *store.Store, toks []string, stop <-chan struct{}) []time.Duration {
	lat := make([]time.Duration, 0, 1<<20)
	for i := 0; ; i++ {
		select {
		case <-stop:
			slices.Sort(lat)
			return lat
		default:
		}
		t0 := time.Now()
		s.Verify(toks[i%len(toks)], "coupons:read", "web-shop", "10.0.0.1")
		lat = append(lat, time.Since(t0))
	}
}

var bulkSeq atomic.Int64 // names of keys added by benchImportStall

// benchImportStall imports batches of batch keys into s (b.N batches)
// while stallProbe verifies, and reports the probe's p99.9 and max.
func benchImportStall(b *testing.B, s *store.Store, toks []string, batch int) {
	stop := make(chan struct{})
	res := make(chan []time.Duration, 1)
	go func() { res <- stallProbe(s, toks, stop) }()
	var longest time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		specs := benchSpecs(batch, time.Now())
		for j := range specs {
			specs[j].Name = fmt.Sprintf("bulk-%09d", bulkSeq.Add(1))
		}
		b.StartTimer()
		t0 := time.Now()
		if _, _, err := s.ImportKeys("admin", specs); err != nil {
			b.Fatal(err)
		}
		longest = max(longest, time.Since(t0))
	}
	b.StopTimer()
	close(stop)
	lat := <-res
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*999/1000].Microseconds()), "verify-p99.9-µs")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "verify-max-µs")
	}
	b.ReportMetric(float64(longest.Milliseconds()), "longest-import-ms")
}

// TestOpenScaleRSS opens the database named by KEYWARD_SCALE_DB (a copy
// kept by BenchmarkVerifyScale) in a fresh process and logs the open time,
// the Go heap and the process RSS (VmRSS, VmHWM) after the load:
//
//	KEYWARD_SCALE_DB=/tmp/scale-1m.db go test -run TestOpenScaleRSS -v -count=1 ./store
func TestOpenScaleRSS(t *testing.T) {
	path := os.Getenv("KEYWARD_SCALE_DB")
	if path == "" {
		t.Skip("set KEYWARD_SCALE_DB to a keyward database (see BENCHMARKS.md, section Verify at scale)")
	}
	opts := benchOptions(t)
	opts.Lean = os.Getenv("KEYWARD_SCALE_LEAN") != "" // as keyward serve opens it
	before := procStatus()
	heap0 := heapInuse()
	t0 := time.Now()
	s, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	open := time.Since(t0)
	defer s.Close()
	heap := heapInuse()
	m := procStatus()
	t.Logf("lean %v: %d keys, file %.1f MiB: open %s; Go heap in use +%.0f MiB; VmRSS %.0f MiB (%.0f before open) = RssAnon %.0f + RssFile %.0f (the mmapped file); VmHWM %.0f MiB",
		opts.Lean, s.KeyCount(), float64(fileSize(t, path))/(1<<20), open.Round(time.Millisecond),
		float64(heap-heap0)/(1<<20), m["VmRSS"], before["VmRSS"], m["RssAnon"], m["RssFile"], m["VmHWM"])
	// What the store costs every garbage collection of a serving process:
	// a full cycle marks everything the store holds.
	gcs := make([]time.Duration, 5)
	cpu0 := gcCPU()
	for i := range gcs {
		t0 := time.Now()
		runtime.GC()
		gcs[i] = time.Since(t0)
	}
	slices.Sort(gcs)
	t.Logf("a full GC with the store open (GOMAXPROCS %d): median %s wall (min %s, max %s), %s GC CPU per cycle",
		runtime.GOMAXPROCS(0), gcs[len(gcs)/2].Round(time.Millisecond), gcs[0].Round(time.Millisecond),
		gcs[len(gcs)-1].Round(time.Millisecond), ((gcCPU() - cpu0) / time.Duration(len(gcs))).Round(time.Millisecond))
	if opts.Lean {
		// What a TUI session costs a serving process: the snapshots it
		// keeps while subscribed, and what is left once it leaves.
		sub := s.Subscribe()
		t0 := time.Now()
		n := len(s.Keys())
		keep := time.Since(t0)
		runtime.GC()
		kept := heapInuse()
		sub.Close()
		runtime.GC()
		t.Logf("lean, with a subscriber: Keys() kept %d snapshots in %s, Go heap in use %.0f MiB; %.0f MiB once it left",
			n, keep.Round(time.Millisecond), float64(kept-heap0)/(1<<20), float64(heapInuse()-heap0)/(1<<20))
	}
	runtime.KeepAlive(s)
}

// gcCPU returns the CPU time the GC has used so far (runtime/metrics).
func gcCPU() time.Duration {
	sample := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(sample)
	return time.Duration(sample[0].Value.Float64() * float64(time.Second))
}

// TestPeekScale times Peek of the TUI's first page (200 keys) of the
// database named by KEYWARD_SCALE_DB, which must have the name index (open
// a schema 1 copy once to migrate it), in a fresh process: the first call,
// then the spread of the next ones.
//
//	KEYWARD_SCALE_DB=/tmp/scale-1m.db go test -run TestPeekScale -v -count=1 ./store
func TestPeekScale(t *testing.T) {
	path := os.Getenv("KEYWARD_SCALE_DB")
	if path == "" {
		t.Skip("set KEYWARD_SCALE_DB to a keyward database (see BENCHMARKS.md, section Verify at scale)")
	}
	const page, runs = 200, 20
	var times []time.Duration
	var res store.PeekResult
	for range runs {
		t0 := time.Now()
		r, err := store.Peek(path, page, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(t0))
		res = r
	}
	if len(res.Keys) != min(page, res.Total) {
		t.Fatalf("Peek gave %d keys of %d", len(res.Keys), res.Total)
	}
	first := times[0]
	rest := slices.Clone(times[1:])
	slices.Sort(rest)
	m := procStatus()
	t.Logf("%d keys, file %.1f MiB: Peek of %d keys: first %s; next %d: min %s, median %s, max %s; VmHWM %.0f MiB",
		res.Total, float64(fileSize(t, path))/(1<<20), len(res.Keys), first.Round(time.Microsecond), len(rest),
		rest[0].Round(time.Microsecond), rest[len(rest)/2].Round(time.Microsecond), rest[len(rest)-1].Round(time.Microsecond), m["VmHWM"])
}

// TestBulkApplyChunks covers the chunked memory updates of bulk writes
// (more than one chunk of s.mu): after ImportKeys returns every imported
// key verifies, an existing key keeps verifying during the import, and
// FlushLastUsed of more keys than
// a chunk (in random order, some deleted meanwhile) folds every record
// into memory and onto disk.
func TestBulkApplyChunks(t *testing.T) {
	e := newEnv(t)
	const n = 3000
	specs := benchSpecs(n, e.clock.Now())
	stop := make(chan struct{})
	probeErr := make(chan error, 1)
	_, first := e.create(spec("first"))
	go func() {
		defer close(probeErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r := e.s.Verify(first, "coupons:read", "", "probe"); r.Code != model.CodeValid {
				probeErr <- fmt.Errorf("an existing key verified %s during an import", r.Code)
				return
			}
		}
	}()
	keys, toks, err := e.s.ImportKeys("admin", specs)
	close(stop)
	if err := <-probeErr; err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		if r := e.s.Verify(tok, "", "", fmt.Sprintf("10.0.%d.%d", i/256%256, i%256)); r.Code != model.CodeValid {
			t.Fatalf("imported key %d: %s after ImportKeys returned", i, r.Code)
		}
	}
	for _, k := range keys[:10] {
		if err := e.s.DeleteKey("admin", k.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if got := e.s.KeyCount(); got != n+1-10 {
			t.Fatalf("%s: %d keys", when, got)
		}
		for i, k := range keys[10:] {
			got, err := e.s.Key(k.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("10.0.%d.%d", (i+10)/256%256, (i+10)%256)
			if got.LastUsedAt == nil || got.LastUsedFrom != want {
				t.Fatalf("%s: key %d last used %v from %q, want %q", when, i+10, got.LastUsedAt, got.LastUsedFrom, want)
			}
		}
	}
	check("after flush")
	e.reopen()
	check("after reopen")
	if err := e.s.Check(); err != nil {
		t.Fatal(err)
	}
}
