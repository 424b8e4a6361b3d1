package server

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Reads during writes (BENCHMARKS.md, section Verify at scale). Runs only when asked:
//
//	KEYWARD_LOAD=1 KEYWARD_LOAD_KEYS=1000000 go test -run TestLoadVerifyDuringWrites -v -count=1 -timeout 30m ./server
//
// One verify server (fsync'd store, last-used on) over a seeded database;
// 50 keep-alive connections verify over HTTP on 127.0.0.1 while, in the same
// process, an admin bulk-creates keys through the store: CreateKey in a loop
// ("create") or ImportKeys batches ("import1000", "import10000"). Each
// round runs an idle window and one window per write mode, of
// KEYWARD_LOAD_DURATION each; the goal is verify p99 during writes ≤ 3× the
// idle p99. Every write loop stops when its window ends.

type writeStats struct {
	calls, keys int
	busy        time.Duration // time spent inside the store calls
	maxCall     time.Duration
	gcs         uint32
	gcPause     time.Duration
}

// runWriter writes keys as rootOp in mode until stop is closed. After each
// call returns, one of its new tokens must verify at once.
func runWriter(t *testing.T, st *store.Store, mode string, seq *atomic.Int64, stop <-chan struct{}) writeStats {
	var ws writeStats
	batch := 0
	switch mode {
	case "create":
	case "import1000":
		batch = 1000
	case "import10000":
		batch = 10000
	default:
		t.Errorf("unknown write mode %q", mode)
		return ws
	}
	spec := func() model.KeySpec {
		return model.KeySpec{Name: fmt.Sprintf("bulk-%08d", seq.Add(1)), Role: model.RoleEditor,
			Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}, Active: true}
	}
	for {
		select {
		case <-stop:
			return ws
		default:
		}
		var tok string
		t0 := time.Now()
		if batch == 0 {
			_, tk, err := st.CreateKey(rootOp, spec())
			if err != nil {
				t.Errorf("create: %v", err)
				return ws
			}
			tok = tk
			ws.keys++
		} else {
			specs := make([]model.KeySpec, batch)
			for i := range specs {
				specs[i] = spec()
			}
			t0 = time.Now()
			_, tks, err := st.ImportKeys(rootOp, specs)
			if err != nil {
				t.Errorf("import: %v", err)
				return ws
			}
			tok = tks[len(tks)/2]
			ws.keys += len(tks)
		}
		el := time.Since(t0)
		ws.calls++
		ws.busy += el
		ws.maxCall = max(ws.maxCall, el)
		if r := st.Verify(tok, "coupons:read", "web-shop", "writer"); r.Code != model.CodeValid {
			t.Errorf("a key created by a returned %s call does not verify: %s", mode, r.Code)
			return ws
		}
	}
}

func gcStats() (uint32, time.Duration) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.NumGC, time.Duration(ms.PauseTotalNs)
}

func TestLoadVerifyDuringWrites(t *testing.T) {
	if os.Getenv("KEYWARD_LOAD") == "" {
		t.Skip("load test; run with KEYWARD_LOAD=1 (see BENCHMARKS.md, section Verify at scale)")
	}
	dur := envDuration("KEYWARD_LOAD_DURATION", 3*time.Second)
	rounds := envInt("KEYWARD_LOAD_ROUNDS", 3, 40)
	nKeys := envInt("KEYWARD_LOAD_KEYS", 100_000, 1_000_000)
	nToks := envInt("KEYWARD_LOAD_TOKENS", min(nKeys, 100_000), 1_000_000)
	modes := []string{"create", "import1000", "import10000"}
	if v := os.Getenv("KEYWARD_WRITE_MODES"); v != "" {
		modes = strings.Split(v, ",")
	}

	t0 := time.Now()
	path, toks, secret := seedLoadDB(t, t.TempDir(), nKeys)
	t.Logf("seeded %d keys in %s", nKeys, time.Since(t0).Round(time.Millisecond))
	tg := serveStore(t, "verify", openLoadStore(t, path, false), secret)
	defer tg.close()
	tg.setBodies(spreadBodies(toks, nToks))
	if _, err := runLoad(tg, loadConns, time.Second); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	la, _ := os.ReadFile("/proc/loadavg")
	t.Logf("load average before: %s", strings.TrimSpace(string(la)))

	var seq atomic.Int64
	results := map[string][]loadResult{}
	windows := append([]string{"idle"}, modes...)
	procs := loadProcs(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for round := range rounds {
		for pi := range procs {
			np := procs[(pi+round)%len(procs)]
			if np > 0 {
				runtime.GOMAXPROCS(np)
			}
			for k := range windows {
				mode := windows[(k+round)%len(windows)]
				key := procsKey(mode, np)
				stop := make(chan struct{})
				wdone := make(chan writeStats, 1)
				g0, p0 := gcStats()
				if mode == "idle" {
					wdone <- writeStats{}
				} else {
					go func() { wdone <- runWriter(t, tg.st, mode, &seq, stop) }()
				}
				r, err := runLoad(tg, loadConns, dur)
				close(stop)
				ws := <-wdone
				g1, p1 := gcStats()
				ws.gcs, ws.gcPause = g1-g0, p1-p0
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				if t.Failed() {
					t.FailNow()
				}
				r.name = key
				results[key] = append(results[key], r)
				line := fmt.Sprintf("round %d %-16s %8.0f req/s  p50 %-9s p99 %-9s p99.9 %-9s max %-9s  GC %d (pauses %s)", round+1, key, r.rps(),
					r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.p999.Round(time.Microsecond), r.max.Round(time.Microsecond),
					ws.gcs, ws.gcPause.Round(time.Microsecond))
				if mode != "idle" {
					line += fmt.Sprintf("  writes: %d calls, %d keys (%.0f keys/s while writing), longest call %s",
						ws.calls, ws.keys, float64(ws.keys)/ws.busy.Seconds(), ws.maxCall.Round(time.Millisecond))
				}
				t.Logf("%s", line)
			}
		}
	}
	la, _ = os.ReadFile("/proc/loadavg")
	t.Logf("load average after: %s; keys at the end: %d", strings.TrimSpace(string(la)), tg.st.KeyCount())

	med := func(mode string, f func(loadResult) float64) float64 {
		var v []float64
		for _, r := range results[mode] {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	p99 := func(r loadResult) float64 { return float64(r.p99) }
	rps := func(r loadResult) float64 { return r.rps() }
	for _, np := range procs {
		idle := med(procsKey("idle", np), p99)
		t.Logf("%d keys, %d connections, %d rounds x %s, GOMAXPROCS %s (medians):", nKeys, loadConns, rounds, dur, procsName(np))
		t.Logf("| window | req/s | p99 | p99 / idle p99 | goal ≤ 3x |")
		for _, m := range windows {
			p := med(procsKey(m, np), p99)
			verdict := "met"
			if p > 3*idle {
				verdict = "MISSED"
			}
			if m == "idle" {
				verdict = "-"
			}
			t.Logf("| %s | %.0f | %s | %.2f | %s |", m, med(procsKey(m, np), rps), time.Duration(p).Round(time.Microsecond), p/idle, verdict)
		}
	}
}

// loadProcs reads KEYWARD_LOAD_PROCS, a comma-separated list of GOMAXPROCS
// values (e.g. "2,4"): each round runs its windows once under each value,
// in rotated order, so the settings share the machine's load of the
// moment. Unset, the load tests keep the process's GOMAXPROCS (0 below).
func loadProcs(t *testing.T) []int {
	v := os.Getenv("KEYWARD_LOAD_PROCS")
	if v == "" {
		return []int{0}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 256 {
			t.Fatalf("KEYWARD_LOAD_PROCS: bad value %q", f)
		}
		out = append(out, n)
	}
	return out
}

func procsName(np int) string {
	if np == 0 {
		return strconv.Itoa(runtime.GOMAXPROCS(0))
	}
	return strconv.Itoa(np)
}

// procsKey names a result: the window or target alone when the run keeps
// the process's GOMAXPROCS, else with "@P" appended.
func procsKey(name string, np int) string {
	if np == 0 {
		return name
	}
	return name + "@" + strconv.Itoa(np)
}
