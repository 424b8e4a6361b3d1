package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// The metrics overhead (BENCHMARKS.md, "Metrics overhead") is measured
// only when asked:
//
//	KEYWARD_LOAD=1 go test -run TestLoadMetricsOverhead -v -count=1 ./server
//
// Two `keyward serve` processes (the built binary, serve's own GOMAXPROCS)
// over copies of one seeded database, one with --metrics and scraped every
// KEYWARD_LOAD_SCRAPE (default 1s), one without, are driven in
// interleaved rounds by the same closed-loop generator as TestLoadVerify
// (50 keep-alive connections). Each round compares the two it just ran,
// so both share the machine's load of the moment; the verdict is the
// median of the rounds. KEYWARD_LOAD_METRICS_AA=1 starts both without
// --metrics: the noise floor of the comparison.
func TestLoadMetricsOverhead(t *testing.T) {
	if os.Getenv("KEYWARD_LOAD") == "" {
		t.Skip("load comparison; run with KEYWARD_LOAD=1 (see BENCHMARKS.md, section Metrics overhead)")
	}
	dur := envDuration("KEYWARD_LOAD_DURATION", 4*time.Second)
	rounds := envInt("KEYWARD_LOAD_ROUNDS", 6, 40)
	nKeys := envInt("KEYWARD_LOAD_KEYS", 10000, 1_000_000)
	scrapeEvery := envDuration("KEYWARD_LOAD_SCRAPE", time.Second)

	dir := t.TempDir()
	seeded, toks, secret := seedLoadDB(t, dir, nKeys)
	// Each server its own copy of the seeded file, made the same way.
	path, path2 := filepath.Join(dir, "metrics-off.db"), filepath.Join(dir, "metrics-on.db")
	for _, p := range []string{path, path2} {
		if err := testkit.CopyFile(seeded, p); err != nil {
			t.Fatal(err)
		}
	}
	bin := testkit.Binary(t)
	off := startServeArgs(t, "metrics-off", bin, path, secret)
	maddr := testkit.FreeAddr(t)
	onArgs := []string{"--metrics", maddr}
	if os.Getenv("KEYWARD_LOAD_METRICS_AA") != "" {
		// The control: both servers without metrics, so what the rounds
		// show is the noise between two identical processes.
		onArgs = nil
		t.Logf("A/A control: neither server has --metrics")
	}
	on := startServeArgs(t, "metrics-on", bin, path2, secret, onArgs...)
	defer off.close()
	defer on.close()
	bodies := spreadBodies(toks, min(nKeys, 100_000))
	for _, tg := range []*loadTarget{off, on} {
		tg.setBodies(bodies)
		if _, err := runLoad(tg, loadConns, 500*time.Millisecond); err != nil {
			t.Fatalf("%s warm-up: %v", tg.name, err)
		}
	}

	// Prometheus' part: scrape the metrics-on server all along.
	ctx, cancel := context.WithCancel(context.Background())
	scrapes := make(chan int, 1)
	go func() {
		n := 0
		defer func() { scrapes <- n }()
		tick := time.NewTicker(scrapeEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if onArgs == nil {
				continue
			}
			resp, err := http.Get("http://" + maddr + "/metrics")
			if err != nil {
				t.Errorf("scrape: %v", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte("keyward_verifications_total")) {
				t.Errorf("scrape: %d", resp.StatusCode)
				return
			}
			n++
		}
	}()

	var ratios, cpuRatios []float64
	res := map[string][]loadResult{}
	for round := range rounds {
		this := map[string]loadResult{}
		order := []*loadTarget{off, on}
		if round%2 == 1 {
			order = []*loadTarget{on, off}
		}
		for _, tg := range order {
			cpu0, err := procCPU(tg.pid)
			if err != nil {
				t.Fatal(err)
			}
			r, err := runLoad(tg, loadConns, dur)
			if err != nil {
				t.Fatalf("%s: %v", tg.name, err)
			}
			cpu1, _ := procCPU(tg.pid)
			r.cpuPerReq = (cpu1 - cpu0) / time.Duration(r.requests)
			this[tg.name] = r
			res[tg.name] = append(res[tg.name], r)
			t.Logf("round %d %-12s %8.0f req/s  p50 %-9s p99 %-9s server CPU %.1f µs/req", round+1, tg.name, r.rps(),
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), float64(r.cpuPerReq)/float64(time.Microsecond))
		}
		ratios = append(ratios, 100*this["metrics-on"].rps()/this["metrics-off"].rps())
		cpuRatios = append(cpuRatios, 100*float64(this["metrics-on"].cpuPerReq)/float64(this["metrics-off"].cpuPerReq))
	}
	cancel()
	n := <-scrapes

	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	med := func(name string) (rps float64, p99 time.Duration, cpu float64) {
		var r, c []float64
		var p []time.Duration
		for _, x := range res[name] {
			r, c, p = append(r, x.rps()), append(c, float64(x.cpuPerReq)/float64(time.Microsecond)), append(p, x.p99)
		}
		slices.Sort(p)
		return median(r), p[len(p)/2], median(c)
	}
	offRPS, offP99, offCPU := med("metrics-off")
	onRPS, onP99, onCPU := med("metrics-on")
	t.Logf("keyward serve, %d keys, %d distinct tokens, %d connections, %d rounds x %s, /metrics scraped every %s (%d scrapes); medians:",
		nKeys, len(bodies), loadConns, rounds, dur, scrapeEvery, n)
	t.Logf("| serve | req/s | p99 | server CPU/req |")
	t.Logf("| without --metrics | %.0f | %s | %.1f µs |", offRPS, offP99.Round(time.Microsecond), offCPU)
	t.Logf("| with --metrics, scraped | %.0f | %s | %.1f µs |", onRPS, onP99.Round(time.Microsecond), onCPU)
	verdict := "goal met (>= 97%)"
	if median(ratios) < 97 {
		verdict = "GOAL MISSED (< 97%)"
	}
	t.Logf("per-round pairs (median): metrics on %.1f%% of off req/s, %s; CPU per request %.1f%% of off (rounds: %s; CPU: %s)",
		median(ratios), verdict, median(cpuRatios), fmtPcts(ratios), fmtPcts(cpuRatios))
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startServeArgs runs `keyward serve` (HTTP only, serve's own GOMAXPROCS,
// log to /dev/null) over the database at path, with extra flags.
func startServeArgs(t *testing.T, name, bin, path, secret string, extra ...string) *loadTarget {
	t.Helper()
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(bin, append([]string{"--db", path, "serve", "--ssh", "", "--http", addr}, extra...)...)
	cmd.Env = childEnv("default")
	tg := &loadTarget{name: name, addr: addr, auth: "Bearer " + secret}
	tg.close = startChild(t, cmd, addr)
	tg.pid = cmd.Process.Pid
	return tg
}

// BenchmarkVerifyHandlerMetrics is the verify handler alone (no network),
// as served: with metrics off and on (the request count, the code's
// counter and the latency histogram).
//
//	go test -run '^$' -bench VerifyHandlerMetrics -benchmem -count 6 ./server
func BenchmarkVerifyHandlerMetrics(b *testing.B) {
	st, toks, secret := loadStore(b, b.TempDir(), 1000, false)
	defer st.Close()
	log := newLogSink(io.Discard)
	defer log.Close()
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) {
			api := &httpAPI{st: st, log: log}
			if on {
				api.m = newMetrics()
			}
			var h http.Handler = api
			benchVerifyHandler(b, h, toks[0], secret)
		})
	}
}
