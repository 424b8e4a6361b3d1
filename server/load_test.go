package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// The load comparison (docs/server-bench.md) runs only when asked:
//
//	KEYWARD_LOAD=1 go test -run TestLoadVerify -v -count=1 ./server
//
// It starts, on 127.0.0.1, a bare net/http handler returning a fixed JSON
// body and keyward's verify API (with last-used tracking on and off), then
// drives each with the same closed-loop generator (50 keep-alive
// connections, fixed duration, interleaved rounds) and, when wrk is
// installed, with wrk too. Every loop is bounded by its duration.

const loadConns = 50

// bareJSON is what the bare handler returns: the same size and shape as a
// VALID answer.
var bareJSON = []byte(`{"valid":true,"code":"VALID","key_id":"key_abcdefghijkl","role":"ADMIN","expires_at":"2027-01-01T00:00:00Z"}` + "\n")

func bareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(bareJSON)
	})
}

// loadTarget is one server under test.
type loadTarget struct {
	name  string
	addr  string
	reqs  [][]byte // raw HTTP/1.1 requests, one per connection slot
	body  string   // for wrk
	auth  string   // for wrk
	close func()
}

type loadResult struct {
	name     string
	requests int
	errors   int
	dur      time.Duration
	p50, p99 time.Duration
}

func (r loadResult) rps() float64 { return float64(r.requests) / r.dur.Seconds() }

// runLoad drives target with conns connections for d: each connection
// sends a request, reads the whole answer, and repeats.
func runLoad(target *loadTarget, conns int, d time.Duration) (loadResult, error) {
	type worker struct {
		lat  []time.Duration
		errs int
	}
	ws := make([]worker, conns)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	var firstErr error
	var errMu sync.Mutex
	for i := range ws {
		c, err := net.Dial("tcp", target.addr)
		if err != nil {
			return loadResult{}, err
		}
		wg.Add(1)
		go func(w *worker, c net.Conn, req []byte) {
			defer wg.Done()
			defer c.Close()
			w.lat = make([]time.Duration, 0, 1<<16)
			br := bufio.NewReaderSize(c, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				_ = c.SetDeadline(t0.Add(5 * time.Second))
				if _, err := c.Write(req); err != nil {
					w.errs++
					errMu.Lock()
					firstErr = cmpErr(firstErr, err)
					errMu.Unlock()
					return
				}
				status, err := readResponse(br)
				if err != nil || status != 200 {
					w.errs++
					errMu.Lock()
					firstErr = cmpErr(firstErr, fmt.Errorf("status %d: %v", status, err))
					errMu.Unlock()
					if err != nil {
						return
					}
					continue
				}
				w.lat = append(w.lat, time.Since(t0))
			}
		}(&ws[i], c, target.reqs[i%len(target.reqs)])
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	res := loadResult{name: target.name, dur: elapsed}
	for _, w := range ws {
		all = append(all, w.lat...)
		res.errors += w.errs
	}
	res.requests = len(all)
	if len(all) == 0 {
		return res, fmt.Errorf("no request succeeded: %v", firstErr)
	}
	slices.Sort(all)
	res.p50 = all[len(all)*50/100]
	res.p99 = all[min(len(all)-1, len(all)*99/100)]
	if res.errors > 0 {
		return res, fmt.Errorf("%d errors, first: %v", res.errors, firstErr)
	}
	return res, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// readResponse reads one HTTP/1.1 response with a Content-Length body.
func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, _ := strconv.Atoi(string(line[9:12]))
	n := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return status, err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 16 && (line[0] == 'C' || line[0] == 'c') && bytes.EqualFold(line[:15], []byte("Content-Length:")) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
		}
	}
	if n < 0 {
		return status, errors.New("no Content-Length")
	}
	_, err = br.Discard(n)
	return status, err
}

// loadStore makes a database with nKeys keys and returns it with tokens.
func loadStore(tb testing.TB, dir string, nKeys int, noLastUsed bool) (*store.Store, []string, string) {
	tb.Helper()
	opts := storeOptions(tb, &testClock{})
	opts.NoLastUsed = noLastUsed
	opts.FlushInterval = time.Second
	st, err := store.Open(filepath.Join(dir, "load.db"), opts)
	if err != nil {
		tb.Fatal(err)
	}
	specs := make([]model.KeySpec, nKeys)
	for i := range specs {
		specs[i] = model.KeySpec{Name: fmt.Sprintf("svc-%05d", i), Role: model.RoleEditor, Scopes: []string{"coupons:read", "campaigns:read"}, Resources: []string{"web-shop"}, Active: true}
	}
	_, toks, err := st.ImportKeys(rootOp, specs)
	if err != nil {
		tb.Fatal(err)
	}
	secret, _, err := st.RotateSecret(rootOp, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return st, toks, secret
}

func verifyBody(tok string) string {
	return `{"key":"` + tok + `","scope":"coupons:read","resource":"web-shop"}`
}

func rawPost(path, auth, body string) []byte {
	return []byte("POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + auth + "\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// startVerifyTarget runs Serve (HTTP only) over a seeded store. Its log
// goes to /dev/null through a real file, so formatting and writing the
// per-request line is part of the measured cost.
func startVerifyTarget(tb testing.TB, name string, noLastUsed bool, nKeys int) *loadTarget {
	tb.Helper()
	dir := tb.TempDir()
	st, toks, secret := loadStore(tb, dir, nKeys, noLastUsed)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Store: st, HTTPAddr: "127.0.0.1:0", Log: devnull, Ready: func(_, h string) { ready <- h }})
	}()
	t := &loadTarget{name: name, addr: <-ready, auth: "Bearer " + secret}
	for i := range loadConns {
		tok := toks[(i*7919)%len(toks)]
		t.reqs = append(t.reqs, rawPost("/v1/keys/verify", t.auth, verifyBody(tok)))
		if i == 0 {
			t.body = verifyBody(tok)
		}
	}
	t.close = func() {
		cancel()
		<-done
		st.Close()
		devnull.Close()
	}
	return t
}

func startBareTarget(tb testing.TB) *loadTarget {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: bareHandler(), ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout, WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes}
	go srv.Serve(ln)
	body := verifyBody("kw_x")
	t := &loadTarget{name: "bare", addr: ln.Addr().String(), auth: "Bearer x", body: body}
	t.reqs = [][]byte{rawPost("/v1/keys/verify", t.auth, body)}
	t.close = func() { srv.Close() }
	return t
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 && d <= 5*time.Minute {
			return d
		}
	}
	return def
}

func envInt(name string, def, max int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 && v <= max {
		return v
	}
	return def
}

func TestLoadVerify(t *testing.T) {
	if os.Getenv("KEYWARD_LOAD") == "" {
		t.Skip("load comparison; run with KEYWARD_LOAD=1 (see docs/server-bench.md)")
	}
	dur := envDuration("KEYWARD_LOAD_DURATION", 5*time.Second)
	rounds := envInt("KEYWARD_LOAD_ROUNDS", 3, 20)
	nKeys := envInt("KEYWARD_LOAD_KEYS", 10000, 200000)

	targets := []*loadTarget{
		startBareTarget(t),
		startVerifyTarget(t, "verify", false, nKeys),
		startVerifyTarget(t, "verify-no-lastused", true, nKeys),
	}
	defer func() {
		for _, tg := range targets {
			tg.close()
		}
	}()
	// Warm up each target briefly.
	for _, tg := range targets {
		if _, err := runLoad(tg, loadConns, 500*time.Millisecond); err != nil {
			t.Fatalf("%s warm-up: %v", tg.name, err)
		}
	}
	results := map[string][]loadResult{}
	for round := range rounds {
		for _, tg := range targets {
			r, err := runLoad(tg, loadConns, dur)
			if err != nil {
				t.Fatalf("%s: %v", tg.name, err)
			}
			t.Logf("round %d %-20s %9.0f req/s  p50 %-10s p99 %s", round+1, r.name, r.rps(), r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
			results[tg.name] = append(results[tg.name], r)
		}
	}
	med := func(name string) (float64, time.Duration) {
		rs := results[name]
		rps := make([]float64, len(rs))
		p99 := make([]time.Duration, len(rs))
		for i, r := range rs {
			rps[i], p99[i] = r.rps(), r.p99
		}
		slices.Sort(rps)
		slices.Sort(p99)
		return rps[len(rps)/2], p99[len(p99)/2]
	}
	bareRPS, bareP99 := med("bare")
	vRPS, vP99 := med("verify")
	nRPS, nP99 := med("verify-no-lastused")
	t.Logf("Go generator, %d connections, %d rounds x %s, %d keys (medians):", loadConns, rounds, dur, nKeys)
	t.Logf("| target | req/s | p99 | vs bare |")
	t.Logf("| bare net/http, fixed JSON | %.0f | %s | 100%% |", bareRPS, bareP99.Round(time.Microsecond))
	t.Logf("| verify, last-used on | %.0f | %s | %.1f%% req/s, p99 x%.2f |", vRPS, vP99.Round(time.Microsecond), 100*vRPS/bareRPS, float64(vP99)/float64(bareP99))
	t.Logf("| verify, last-used off | %.0f | %s | %.1f%% req/s, p99 x%.2f |", nRPS, nP99.Round(time.Microsecond), 100*nRPS/bareRPS, float64(nP99)/float64(bareP99))
	t.Logf("last-used cost: %.1f%% of req/s", 100*(nRPS-vRPS)/nRPS)

	if _, err := exec.LookPath("wrk"); err != nil {
		t.Logf("wrk not installed; skipping the wrk runs")
		return
	}
	dir := t.TempDir()
	for round := range rounds {
		for _, tg := range targets {
			out, err := runWrk(dir, tg, dur)
			if err != nil {
				t.Fatalf("wrk %s: %v\n%s", tg.name, err, out)
			}
			t.Logf("wrk round %d %-20s %s", round+1, tg.name, out)
		}
	}
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99 = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
	wrkErr = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// runWrk runs wrk -t2 -c50 against the target and summarises its output.
func runWrk(dir string, tg *loadTarget, d time.Duration) (string, error) {
	script := filepath.Join(dir, tg.name+".lua")
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = %q\n", tg.body, tg.auth)
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	secs := max(1, int(d.Seconds()))
	out, err := exec.CommandContext(ctx, "wrk", "-t2", fmt.Sprintf("-c%d", loadConns), fmt.Sprintf("-d%ds", secs), "--latency", "-s", script, "http://"+tg.addr+"/v1/keys/verify").CombinedOutput()
	if err != nil {
		return string(out), err
	}
	s := string(out)
	if m := wrkErr.FindStringSubmatch(s); m != nil {
		return s, fmt.Errorf("%s non-2xx answers", m[1])
	}
	rps, p99 := "?", "?"
	if m := wrkRPS.FindStringSubmatch(s); m != nil {
		rps = m[1]
	}
	if m := wrkP99.FindStringSubmatch(s); m != nil {
		p99 = m[1] + m[2]
	}
	return fmt.Sprintf("%s req/s  p99 %s", rps, p99), nil
}

// BenchmarkHTTPVerify measures verify requests over loopback keep-alive
// connections (RunParallel); BenchmarkHTTPBare does the same against the
// bare handler. CI runs each once; compare with -benchtime 5s -cpu 2.
func BenchmarkHTTPVerify(b *testing.B) { benchTarget(b, startVerifyTarget(b, "verify", false, 1000)) }

func BenchmarkHTTPVerifyNoLastUsed(b *testing.B) {
	benchTarget(b, startVerifyTarget(b, "verify-no-lastused", true, 1000))
}

func BenchmarkHTTPBare(b *testing.B) { benchTarget(b, startBareTarget(b)) }

func benchTarget(b *testing.B, tg *loadTarget) {
	defer tg.close()
	var mu sync.Mutex
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		req := tg.reqs[next%len(tg.reqs)]
		next++
		mu.Unlock()
		c, err := net.Dial("tcp", tg.addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			if st, err := readResponse(br); err != nil || st != 200 {
				b.Errorf("status %d: %v", st, err)
				return
			}
		}
	})
}

// BenchmarkVerifyHandler is the handler alone (no network), for
// allocation work: go test -bench VerifyHandler -benchmem ./server
func BenchmarkVerifyHandler(b *testing.B) {
	st, toks, secret := loadStore(b, b.TempDir(), 1000, false)
	defer st.Close()
	log := newLogSink(io.Discard)
	defer log.Close()
	api := &httpAPI{st: st, log: log}
	body := []byte(verifyBody(toks[0]))
	req, _ := http.NewRequest("POST", "/v1/keys/verify", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	req.RemoteAddr = "127.0.0.1:5555"
	w := &discardWriter{h: http.Header{}}
	rd := bytes.NewReader(body)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		clear(w.h)
		api.ServeHTTP(w, req)
		if w.code != 200 {
			b.Fatalf("status %d", w.code)
		}
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(c int)           { d.code = c }
