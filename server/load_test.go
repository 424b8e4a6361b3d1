package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// The load comparison (BENCHMARKS.md, section keyward serve HTTP verify) runs only when asked:
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
	name   string
	addr   string
	reqs   [][]byte // raw HTTP/1.1 requests; each connection cycles through them from its own offset
	body   string   // for wrk
	bodies []string // for wrk, when the requests rotate through several tokens
	auth   string   // for wrk
	st     *store.Store
	close  func()
	pid    int         // a server in its own process: its CPU time is measured
	tls    *tls.Config // non-nil: connect over TLS (tls_load_test.go)
}

// procCPU returns the CPU time (user + system) process pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which is in parentheses): state is
	// the first, utime the 12th, stime the 13th; in clock ticks (100/s).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond, nil
}

// machineJiffies returns the machine's busy and total CPU time so far, in
// clock ticks, from /proc/stat (idle and iowait count as not busy).
func machineJiffies() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	for i, f := range strings.Fields(string(line))[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// setBodies makes the target's requests (and wrk's) rotate through bodies.
func (t *loadTarget) setBodies(bodies []string) {
	t.reqs = t.reqs[:0]
	for _, b := range bodies {
		t.reqs = append(t.reqs, rawPost("/v1/keys/verify", t.auth, b))
	}
	t.body, t.bodies = bodies[0], bodies
}

type loadResult struct {
	name     string
	requests int
	errors   int
	dur      time.Duration
	p50, p99 time.Duration
	p999     time.Duration
	max      time.Duration
	// cpuPerReq is the server process's CPU time per answered request
	// (separate processes only).
	cpuPerReq time.Duration
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
		c, err := target.dial()
		if err != nil {
			return loadResult{}, err
		}
		wg.Add(1)
		go func(w *worker, c net.Conn, next int) {
			defer wg.Done()
			defer c.Close()
			w.lat = make([]time.Duration, 0, 1<<16)
			br := bufio.NewReaderSize(c, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				req := target.reqs[next%len(target.reqs)]
				next++
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
		}(&ws[i], c, i*max(1, len(target.reqs)/conns))
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
	res.p999 = all[min(len(all)-1, len(all)*999/1000)]
	res.max = all[len(all)-1]
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
	opts := storeOptions(tb, &testkit.Clock{})
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
	var toks []string
	for lo := 0; lo < len(specs); lo += 100_000 {
		_, tk, err := st.ImportKeys(rootOp, specs[lo:min(len(specs), lo+100_000)])
		if err != nil {
			tb.Fatal(err)
		}
		toks = append(toks, tk...)
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

// startVerifyTarget serves a freshly seeded store of nKeys keys; its
// requests use 50 of the tokens (the HTTP benchmarks use it).
func startVerifyTarget(tb testing.TB, name string, noLastUsed bool, nKeys int) *loadTarget {
	tb.Helper()
	st, toks, secret := loadStore(tb, tb.TempDir(), nKeys, noLastUsed)
	t := serveStore(tb, name, st, secret)
	for i := range loadConns {
		tok := toks[(i*7919)%len(toks)]
		t.reqs = append(t.reqs, rawPost("/v1/keys/verify", t.auth, verifyBody(tok)))
		if i == 0 {
			t.body = verifyBody(tok)
		}
	}
	return t
}

// seedLoadDB builds a closed database with nKeys keys in dir and returns
// its path, the tokens (in creation order) and the shared secret.
func seedLoadDB(tb testing.TB, dir string, nKeys int) (string, []string, string) {
	tb.Helper()
	st, toks, secret := loadStore(tb, dir, nKeys, false)
	path := st.Path()
	if err := st.Close(); err != nil {
		tb.Fatal(err)
	}
	// The seed skipped fsync: write its dirty pages back now, or the
	// kernel does it (over a GiB at 1M keys) during the measurements.
	if err := syncFile(path); err != nil {
		tb.Fatal(err)
	}
	return path, toks, secret
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openLoadStore opens a seeded database the way serve does: fsync'd
// commits, last-used flushed every second.
func openLoadStore(tb testing.TB, path string, noLastUsed bool) *store.Store {
	tb.Helper()
	opts := storeOptions(tb, &testkit.Clock{})
	opts.NoSync = false
	opts.NoLastUsed = noLastUsed
	opts.FlushInterval = time.Second
	st, err := store.Open(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// spreadBodies returns n verify bodies for tokens drawn at random from
// toks, so requests land all over the store's maps.
func spreadBodies(toks []string, n int) []string {
	idx := mrand.Perm(len(toks))[:min(n, len(toks))]
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = verifyBody(toks[j])
	}
	return out
}

// serveStore runs Serve (HTTP only) over st. Its log goes to /dev/null
// through a real file, so formatting and writing the per-request line is
// part of the measured cost. close stops the server and closes st.
func serveStore(tb testing.TB, name string, st *store.Store, secret string) *loadTarget {
	tb.Helper()
	return serveStoreTLS(tb, name, st, secret, HTTPTLS{})
}

// serveStoreTLS is serveStore, over TLS when pair names a certificate.
func serveStoreTLS(tb testing.TB, name string, st *store.Store, secret string, pair HTTPTLS) *loadTarget {
	tb.Helper()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Store: st, HTTPAddr: "127.0.0.1:0", Log: devnull, TLS: pair, Ready: func(_, h string) { ready <- h }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		tb.Fatalf("serve: %v", err)
	}
	t := &loadTarget{name: name, addr: addr, auth: "Bearer " + secret, st: st}
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

// startBareProcess runs the bare handler in a child process (this test
// binary, TestLoadBareServer) with the given GOMAXPROCS.
func startBareProcess(t *testing.T, procs string) *loadTarget {
	t.Helper()
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadBareServer$")
	cmd.Env = append(childEnv(procs), "KEYWARD_LOAD_BARE_ADDR="+addr)
	tg := &loadTarget{name: "bare", addr: addr, auth: "Bearer x", body: verifyBody("kw_x")}
	tg.reqs = [][]byte{rawPost("/v1/keys/verify", tg.auth, tg.body)}
	tg.close = startChild(t, cmd, addr)
	tg.pid = cmd.Process.Pid
	return tg
}

// childEnv is this process's environment for a server child, with
// GOMAXPROCS set to procs, or unset when procs is "default".
func childEnv(procs string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") })
	if procs != "default" {
		env = append(env, "GOMAXPROCS="+procs)
	}
	return env
}

// startServeProcess runs `keyward serve` (HTTP only, log to /dev/null)
// over the database at path.
func startServeProcess(t *testing.T, name, bin, path, secret, procs string) *loadTarget {
	t.Helper()
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(bin, "--db", path, "serve", "--ssh", "", "--http", addr)
	cmd.Env = childEnv(procs)
	if v := os.Getenv("KEYWARD_LOAD_SERVE_GOGC"); v != "" {
		cmd.Env = append(cmd.Env, "GOGC="+v) // GC tuning of serve alone
	}
	tg := &loadTarget{name: name, addr: addr, auth: "Bearer " + secret}
	tg.close = startChild(t, cmd, addr)
	tg.pid = cmd.Process.Pid
	return tg
}

// startChild starts cmd (output to /dev/null), waits until addr accepts
// connections and returns how to stop it.
func startChild(t *testing.T, cmd *exec.Cmd, addr string) func() {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	deadline := time.Now().Add(2 * time.Minute) // a 1M-key store takes seconds to open
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return stop
		}
		select {
		case err := <-done:
			t.Fatalf("%s exited before listening: %v", cmd.Path, err)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("%s did not listen on %s within 2 min", cmd.Path, addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startServeChild runs Serve over the database at path in a child process
// (this test binary, TestLoadServeServer): unlike `keyward serve` it can
// turn last-used tracking off and write a CPU profile (to profile, when
// not empty).
func startServeChild(t *testing.T, name, path, secret, procs string, noLastUsed bool, profile string) *loadTarget {
	t.Helper()
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadServeServer$")
	cmd.Env = append(childEnv(procs), "KEYWARD_LOAD_SERVE_DB="+path, "KEYWARD_LOAD_SERVE_ADDR="+addr,
		"KEYWARD_LOAD_SERVE_PROFILE="+profile)
	if noLastUsed {
		cmd.Env = append(cmd.Env, "KEYWARD_LOAD_SERVE_NOLASTUSED=1")
	}
	tg := &loadTarget{name: name, addr: addr, auth: "Bearer " + secret}
	tg.close = startChild(t, cmd, addr)
	tg.pid = cmd.Process.Pid
	return tg
}

// TestLoadServeServer is a verify server's process for KEYWARD_LOAD_EXEC
// with KEYWARD_LOAD_CHILD: Serve over KEYWARD_LOAD_SERVE_DB with serve's
// flush interval, log to /dev/null, until interrupted.
func TestLoadServeServer(t *testing.T) {
	path, addr := os.Getenv("KEYWARD_LOAD_SERVE_DB"), os.Getenv("KEYWARD_LOAD_SERVE_ADDR")
	if path == "" || addr == "" {
		t.Skip("child process of TestLoadVerify with KEYWARD_LOAD_EXEC=1 and KEYWARD_LOAD_CHILD=1")
	}
	opts := storeOptions(t, &testkit.Clock{})
	opts.NoSync = false
	opts.FlushInterval = 0 // serve's default
	opts.NoLastUsed = os.Getenv("KEYWARD_LOAD_SERVE_NOLASTUSED") != ""
	st, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p := os.Getenv("KEYWARD_LOAD_SERVE_PROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := Serve(ctx, Config{Store: st, HTTPAddr: addr, Log: devnull}); err != nil {
		t.Fatal(err)
	}
}

// TestLoadBareServer is the bare server's process for KEYWARD_LOAD_EXEC:
// it serves until interrupted, and skips when not asked for.
func TestLoadBareServer(t *testing.T) {
	addr := os.Getenv("KEYWARD_LOAD_BARE_ADDR")
	if addr == "" {
		t.Skip("child process of TestLoadVerify with KEYWARD_LOAD_EXEC=1")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: bareHandler(), ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout, WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() { <-sig; srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
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
		t.Skip("load comparison; run with KEYWARD_LOAD=1 (see BENCHMARKS.md, section keyward serve HTTP verify)")
	}
	dur := envDuration("KEYWARD_LOAD_DURATION", 5*time.Second)
	rounds := envInt("KEYWARD_LOAD_ROUNDS", 3, 40)
	nKeys := envInt("KEYWARD_LOAD_KEYS", 10000, 1_000_000)
	nToks := envInt("KEYWARD_LOAD_TOKENS", min(nKeys, 100_000), 1_000_000)

	// One seeded database, copied for the last-used-off server, so both
	// verify servers hold the same keys.
	dir := t.TempDir()
	t0 := time.Now()
	path, toks, secret := seedLoadDB(t, dir, nKeys)
	path2 := filepath.Join(dir, "load-nolastused.db")
	if err := testkit.CopyFile(path, path2); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d keys in %s", nKeys, time.Since(t0).Round(time.Millisecond))
	bodies := spreadBodies(toks, nToks)
	var targets []*loadTarget
	if os.Getenv("KEYWARD_LOAD_EXEC") != "" {
		// Each server in its own process, as deployed: a GC of keyward's
		// heap then costs keyward only, not the bare server or the
		// generator. No last-used-off server: serve has no switch for it.
		procs := strconv.Itoa(envInt("KEYWARD_LOAD_EXEC_PROCS", 2, 256))
		if os.Getenv("KEYWARD_LOAD_EXEC_PROCS") == "default" {
			procs = "default" // each server as deployed: Go's default for bare, serve's own (--procs)
		}
		t.Logf("separate processes, GOMAXPROCS %s in each server", procs)
		if os.Getenv("KEYWARD_LOAD_CHILD") != "" {
			// Serve in the test binary: with a last-used-off server and,
			// with KEYWARD_LOAD_PROFILE=DIR, CPU profiles of both.
			prof := func(name string) string {
				if d := os.Getenv("KEYWARD_LOAD_PROFILE"); d != "" {
					return filepath.Join(d, name+".prof")
				}
				return ""
			}
			targets = []*loadTarget{startBareProcess(t, procs),
				startServeChild(t, "verify", path, secret, procs, false, prof("verify")),
				startServeChild(t, "verify-no-lastused", path2, secret, procs, true, prof("verify-no-lastused"))}
		} else {
			targets = []*loadTarget{startBareProcess(t, procs), startServeProcess(t, "verify", testkit.Binary(t), path, secret, procs)}
			if bin := os.Getenv("KEYWARD_LOAD_BASELINE_BIN"); bin != "" {
				// Another keyward build (an earlier commit, say) over a
				// copy of the same keys: a before/after in one run.
				targets = append(targets, startServeProcess(t, "baseline", bin, path2, secret, procs))
			}
		}
	} else {
		targets = []*loadTarget{
			startBareTarget(t),
			serveStore(t, "verify", openLoadStore(t, path, false), secret),
			serveStore(t, "verify-no-lastused", openLoadStore(t, path2, true), secret),
		}
	}
	defer func() {
		for _, tg := range targets {
			tg.close()
		}
	}()
	// Every target, bare included, cycles through the same request bodies
	// (nToks distinct tokens), so the generator does the same work for each.
	for _, tg := range targets {
		tg.setBodies(bodies)
	}
	// Warm up each target briefly.
	for _, tg := range targets {
		if _, err := runLoad(tg, loadConns, 500*time.Millisecond); err != nil {
			t.Fatalf("%s warm-up: %v", tg.name, err)
		}
	}
	loadAvg := func() string {
		b, _ := os.ReadFile("/proc/loadavg")
		return string(bytes.TrimSpace(b))
	}
	t.Logf("load average before: %s", loadAvg())
	results := map[string][]loadResult{}
	procs := loadProcs(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	pairCost, pairOn, pairOff, pairBase := map[int][]float64{}, map[int][]float64{}, map[int][]float64{}, map[int][]float64{} // per-round ratios: rounds share the machine's load of the moment
	for round := range rounds {
		for pi := range procs {
			np := procs[(pi+round)%len(procs)]
			if np > 0 {
				runtime.GOMAXPROCS(np)
			}
			// Rotate the order each round so no target always runs first.
			this := map[string]loadResult{}
			for k := range targets {
				tg := targets[(k+round)%len(targets)]
				var cpu0, gen0 time.Duration
				var busy0, total0 int64
				if tg.pid != 0 {
					cpu0, _ = procCPU(tg.pid)
					gen0, _ = procCPU(os.Getpid())
					busy0, total0 = machineJiffies()
				}
				r, err := runLoad(tg, loadConns, dur)
				if err != nil {
					t.Fatalf("%s: %v", tg.name, err)
				}
				cpuNote := ""
				if tg.pid != 0 {
					cpu1, err := procCPU(tg.pid)
					if err != nil {
						t.Fatal(err)
					}
					gen1, _ := procCPU(os.Getpid())
					busy1, total1 := machineJiffies()
					r.cpuPerReq = (cpu1 - cpu0) / time.Duration(r.requests)
					idle := 100 * (1 - float64(busy1-busy0)/float64(max(1, total1-total0)))
					cpuNote = fmt.Sprintf("  server CPU %.1f µs/req, generator %.1f µs/req, machine idle %.0f%%",
						float64(r.cpuPerReq)/float64(time.Microsecond), float64(gen1-gen0)/float64(r.requests)/float64(time.Microsecond), idle)
				}
				key := procsKey(tg.name, np)
				t.Logf("round %d %-24s %9.0f req/s  p50 %-10s p99 %-10s p99.9 %-10s max %s%s", round+1, key, r.rps(),
					r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.p999.Round(time.Microsecond), r.max.Round(time.Microsecond), cpuNote)
				results[key] = append(results[key], r)
				this[tg.name] = r
			}
			on, bare := this["verify"].rps(), this["bare"].rps()
			pairOn[np] = append(pairOn[np], 100*on/bare)
			if r, ok := this["baseline"]; ok {
				pairBase[np] = append(pairBase[np], 100*r.rps()/bare)
			}
			if r, ok := this["verify-no-lastused"]; ok {
				off := r.rps()
				pairCost[np] = append(pairCost[np], 100*(off-on)/off)
				pairOff[np] = append(pairOff[np], 100*off/bare)
			}
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
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
	t.Logf("load average after: %s", loadAvg())
	for _, np := range procs {
		bareRPS, bareP99 := med(procsKey("bare", np))
		vRPS, vP99 := med(procsKey("verify", np))
		t.Logf("Go generator, %d connections, %d rounds x %s, %d keys, %d distinct tokens, GOMAXPROCS %s (medians):", loadConns, rounds, dur, nKeys, len(bodies), procsName(np))
		t.Logf("| target | req/s | p99 | vs bare |")
		t.Logf("| bare net/http, fixed JSON | %.0f | %s | 100%% |", bareRPS, bareP99.Round(time.Microsecond))
		t.Logf("| verify, last-used on | %.0f | %s | %.1f%% req/s, p99 x%.2f |", vRPS, vP99.Round(time.Microsecond), 100*vRPS/bareRPS, float64(vP99)/float64(bareP99))
		if targets[0].pid != 0 {
			cpu := func(name string) float64 {
				var v []float64
				for _, r := range results[procsKey(name, np)] {
					v = append(v, float64(r.cpuPerReq)/float64(time.Microsecond))
				}
				return median(v)
			}
			line := fmt.Sprintf("server CPU per request (median of rounds): bare %.1f µs", cpu("bare"))
			for _, tg := range targets[1:] {
				line += fmt.Sprintf(", %s %.1f µs (%.2fx)", tg.name, cpu(tg.name), cpu(tg.name)/cpu("bare"))
			}
			t.Logf("%s; the rest of each request's cost is the generator's and the kernel's", line)
		}
		if len(pairBase[np]) > 0 {
			t.Logf("per-round pairs (median): baseline build %.1f%% of bare (rounds: %s)", median(pairBase[np]), fmtPcts(pairBase[np]))
		}
		if len(pairOff[np]) == 0 {
			t.Logf("per-round pairs (median): verify %.1f%% of bare (rounds: %s)", median(pairOn[np]), fmtPcts(pairOn[np]))
			continue
		}
		nRPS, nP99 := med(procsKey("verify-no-lastused", np))
		t.Logf("| verify, last-used off | %.0f | %s | %.1f%% req/s, p99 x%.2f |", nRPS, nP99.Round(time.Microsecond), 100*nRPS/bareRPS, float64(nP99)/float64(bareP99))
		t.Logf("last-used cost: %.1f%% of req/s (from the medians)", 100*(nRPS-vRPS)/nRPS)
		t.Logf("per-round pairs (median): verify on %.1f%% of bare, off %.1f%% of bare, last-used cost %.1f%% (rounds: %s)",
			median(pairOn[np]), median(pairOff[np]), median(pairCost[np]), fmtPcts(pairCost[np]))
	}

	if _, err := exec.LookPath("wrk"); err != nil {
		t.Logf("wrk not installed; skipping the wrk runs")
		return
	}
	wdir := t.TempDir()
	wrkRounds := envInt("KEYWARD_LOAD_WRK_ROUNDS", min(rounds, 3), 40)
	if os.Getenv("KEYWARD_LOAD_WRK_ROUNDS") == "0" {
		wrkRounds = 0 // envInt takes only positive counts
	}
	for round := range wrkRounds {
		for pi := range procs {
			np := procs[(pi+round)%len(procs)]
			if np > 0 {
				runtime.GOMAXPROCS(np)
			}
			for k := range targets {
				tg := targets[(k+round)%len(targets)]
				out, err := runWrk(wdir, tg, dur)
				if err != nil {
					t.Fatalf("wrk %s: %v\n%s", tg.name, err, out)
				}
				t.Logf("wrk round %d %-24s %s", round+1, procsKey(tg.name, np), out)
			}
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
	if len(tg.bodies) > 1 {
		// Rotate through up to 1000 bodies (each wrk thread from the start).
		var sb strings.Builder
		sb.WriteString(lua + "local bodies = {\n")
		for _, b := range tg.bodies[:min(1000, len(tg.bodies))] {
			fmt.Fprintf(&sb, "%q,\n", b)
		}
		sb.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n")
		lua = sb.String()
	}
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
	benchVerifyHandler(b, &httpAPI{st: st, log: log}, toks[0], secret)
}

// benchVerifyHandler runs verify requests for tok through api's handler
// (no network), reusing one request, and reports the process's CPU time
// per request beside the wall time.
func benchVerifyHandler(b *testing.B, api http.Handler, tok, secret string) {
	body := []byte(verifyBody(tok))
	req, _ := http.NewRequest("POST", "/v1/keys/verify", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	req.RemoteAddr = "127.0.0.1:5555"
	w := &discardWriter{h: http.Header{}}
	rd := bytes.NewReader(body)
	b.ReportAllocs()
	cpu0 := processCPU()
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
	// CPU time, unlike wall time, does not count the time this process
	// waited for a CPU on a busy machine.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(c int)           { d.code = c }

func fmtPcts(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.1f%%", x)
	}
	return strings.Join(parts, " ")
}
