package e2e

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// TestGatewayNginxLoad measures nginx → auth_request → keyward serve
// against nginx → auth_request → a bare Go handler that answers 200 with
// the same headers, same run, same shipped nginx.conf, same upstream,
// with wrk (Debian package wrk) as the client: requests/s and p99,
// alternating rounds, medians. On request only (KEYWARD_GATEWAY_LOAD=1;
// BENCHMARKS.md, "Forward auth through nginx"); it checks nothing but
// that every request was answered 200.
func TestGatewayNginxLoad(t *testing.T) {
	if os.Getenv("KEYWARD_GATEWAY_LOAD") == "" {
		t.Skip("load comparison; run with KEYWARD_GATEWAY_LOAD=1 (BENCHMARKS.md, Forward auth through nginx)")
	}
	wrk := program(t, "wrk", "wrk")
	dur := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("KEYWARD_GATEWAY_LOAD_DURATION")); err == nil && d > 0 && d <= time.Minute {
		dur = d
	}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("KEYWARD_GATEWAY_LOAD_ROUNDS")); err == nil && n > 0 && n <= 20 {
		rounds = n
	}
	conns := "32"
	if v := os.Getenv("KEYWARD_GATEWAY_LOAD_CONNS"); v != "" {
		conns = v
	}

	e := newEnv(t)
	k := e.Create("--name", "gateway-load", "--scope", "coupons:read", "--resource", "web-shop")
	secret := testkit.Decode[map[string]any](t, e.OK("secret", "show", "--json"))["secret"].(string)
	// KEYWARD_GATEWAY_LOAD_SERVE_ARGS: more serve flags (e.g. --procs 2).
	srv := e.startServe(append([]string{"--ssh", ""}, strings.Fields(os.Getenv("KEYWARD_GATEWAY_LOAD_SERVE_ARGS"))...)...)
	bare := startBareChild(t)
	up := startUpstream(t)
	gk := startNginx(t, gatewayVars{KeywardAddr: srv.httpAddr, Secret: secret, Upstream: up.addr})
	gb := startNginx(t, gatewayVars{KeywardAddr: bare, Secret: secret, Upstream: up.addr})

	run := func(g *gatewayProc) wrkResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, wrk, "-t2", "-c"+conns, "-d"+dur.String(), "--latency", "--timeout", "5s",
			"-H", "X-API-Key: "+k.Token, "http://"+g.addr+"/coupons/list").CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		r := parseWrk(t, string(out))
		if r.non2xx != 0 || r.errors != 0 {
			t.Fatalf("%s: %d non-2xx answers, %d socket errors\n%s\n%s", g.name, r.non2xx, r.errors, out, g)
		}
		return r
	}
	run(gk) // warm-up: connections, the binary's first pages
	run(gb)
	var kw, bw []wrkResult
	for i := 0; i < rounds; i++ {
		kw = append(kw, run(gk))
		bw = append(bw, run(gb))
		t.Logf("round %d: keyward %.0f req/s p99 %s; bare %.0f req/s p99 %s", i+1, kw[i].rps, kw[i].p99, bw[i].rps, bw[i].p99)
	}
	// Pairs: each keyward round against the bare round right after it,
	// so drift in what else the machine runs cancels out.
	ratios := make([]float64, rounds)
	p99s := make([]float64, rounds)
	for i := range kw {
		ratios[i] = kw[i].rps / bw[i].rps
		p99s[i] = float64(kw[i].p99) / float64(bw[i].p99)
	}
	sort.Float64s(ratios)
	sort.Float64s(p99s)
	t.Logf("paired rounds: req/s keyward/bare median %.1f %% (range %.1f–%.1f %%); p99 keyward/bare median %.2f× (range %.2f–%.2f×)",
		100*ratios[rounds/2], 100*ratios[0], 100*ratios[rounds-1], p99s[rounds/2], p99s[0], p99s[rounds-1])
	mk, mb := medianWrk(kw), medianWrk(bw)
	t.Logf("median of %d rounds × %s, %s connections: nginx→keyward %.0f req/s p50 %s p99 %s; nginx→bare %.0f req/s p50 %s p99 %s; keyward/bare %.1f %% req/s, p99 %.2f×",
		rounds, dur, conns, mk.rps, mk.p50, mk.p99, mb.rps, mb.p50, mb.p99, 100*mk.rps/mb.rps, float64(mk.p99)/float64(mb.p99))
}

// TestGatewayBareChild is the bare handler's process for
// TestGatewayNginxLoad (KEYWARD_GATEWAY_BARE_ADDR set): it answers every
// request 200 with the headers /v1/auth sends for a valid key, until
// killed.
func TestGatewayBareChild(t *testing.T) {
	addr := os.Getenv("KEYWARD_GATEWAY_BARE_ADDR")
	if addr == "" {
		t.Skip("child process of TestGatewayNginxLoad")
	}
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Keyward-Code"] = []string{"VALID"}
		h["X-Keyward-Key-Id"] = []string{"key_0123456789ab"}
		h["X-Keyward-Role"] = []string{"EDITOR"}
		h["Cache-Control"] = []string{"no-store"}
		w.WriteHeader(200)
	})}
	_ = srv.ListenAndServe()
}

// startBareChild runs TestGatewayBareChild in a process of its own (as
// keyward serve runs in its own) and returns its address.
func startBareChild(t *testing.T) string {
	t.Helper()
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestGatewayBareChild$")
	cmd.Env = append(os.Environ(), "KEYWARD_GATEWAY_BARE_ADDR="+addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testkit.WaitFor(t, 10*time.Second, "the bare handler's port", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

type wrkResult struct {
	rps            float64
	p50, p99       time.Duration
	non2xx, errors int
}

var (
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkErrors = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk's --latency report.
func parseWrk(t *testing.T, out string) wrkResult {
	t.Helper()
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no Requests/sec in wrk's output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		d, err := time.ParseDuration(p[2] + strings.Replace(p[3], "us", "µs", 1))
		if err != nil {
			t.Fatalf("wrk latency %q: %v", p[0], err)
		}
		if p[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p99 == 0 {
		t.Fatalf("no 99%% latency in wrk's output:\n%s", out)
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkErrors.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.errors += n
		}
	}
	return r
}

// medianWrk is the median of each figure on its own.
func medianWrk(rs []wrkResult) wrkResult {
	pick := func(f func(wrkResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	return wrkResult{
		rps: pick(func(r wrkResult) float64 { return r.rps }),
		p50: time.Duration(pick(func(r wrkResult) float64 { return float64(r.p50) })),
		p99: time.Duration(pick(func(r wrkResult) float64 { return float64(r.p99) })),
	}
}
