package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// dial connects to the target, over TLS when it serves TLS (the
// handshake is done before the first request is timed).
func (t *loadTarget) dial() (net.Conn, error) {
	if t.tls == nil {
		return net.Dial("tcp", t.addr)
	}
	c, err := tls.Dial("tcp", t.addr, t.tls)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// TestLoadHTTPS compares, in one run, keyward's verify over HTTPS with a
// bare net/http handler over HTTPS with the same TLS setup (the same
// certificate reloader, TLS 1.2+, HTTP/1.1), driven by runLoad's
// generator over keep-alive TLS connections, rounds interleaved
// (BENCHMARKS.md, section HTTPS):
//
//	KEYWARD_LOAD=1 go test -run TestLoadHTTPS -v -count=1 ./server
//
// With KEYWARD_LOAD_EXEC=1 each server runs in its own process (the built
// keyward serve with --http-tls-cert/--http-tls-key; the bare handler in
// this test binary, TestLoadBareTLSServer), and each round also reports
// the server's CPU time per request, which a busy machine disturbs far
// less than requests per second.
func TestLoadHTTPS(t *testing.T) {
	if os.Getenv("KEYWARD_LOAD") == "" {
		t.Skip("load comparison; run with KEYWARD_LOAD=1 (see BENCHMARKS.md, section HTTPS)")
	}
	dur := envDuration("KEYWARD_LOAD_DURATION", 5*time.Second)
	rounds := envInt("KEYWARD_LOAD_ROUNDS", 3, 40)
	nKeys := envInt("KEYWARD_LOAD_KEYS", 10000, 1_000_000)

	dir := t.TempDir()
	ca := testkit.NewTLSCA(t)
	pair := HTTPTLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), PollInterval: -1}
	ca.Leaf(t, "load", time.Time{}, time.Time{}).Write(t, pair.CertFile, pair.KeyFile)
	clientTLS := ca.TLSClientConfig()

	var verify, bare *loadTarget
	var toks []string
	if os.Getenv("KEYWARD_LOAD_EXEC") != "" {
		path, tk, secret := seedLoadDB(t, dir, nKeys)
		toks = tk
		procs := strconv.Itoa(envInt("KEYWARD_LOAD_EXEC_PROCS", 2, 256))
		addr := testkit.FreeAddr(t)
		cmd := exec.Command(testkit.Binary(t), "--db", path, "serve", "--ssh", "", "--http", addr,
			"--http-tls-cert", pair.CertFile, "--http-tls-key", pair.KeyFile, "--http-tls-poll", "0")
		cmd.Env = childEnv(procs)
		verify = &loadTarget{name: "https verify", addr: addr, auth: "Bearer " + secret, tls: clientTLS}
		verify.close = startChild(t, cmd, addr)
		verify.pid = cmd.Process.Pid

		baddr := testkit.FreeAddr(t)
		bcmd := exec.Command(os.Args[0], "-test.run=^TestLoadBareTLSServer$")
		bcmd.Env = append(childEnv(procs), "KEYWARD_LOAD_BARE_ADDR="+baddr, "KEYWARD_LOAD_BARE_TLS_CERT="+pair.CertFile, "KEYWARD_LOAD_BARE_TLS_KEY="+pair.KeyFile)
		bare = &loadTarget{name: "https bare", addr: baddr, auth: "Bearer x", tls: clientTLS}
		bare.close = startChild(t, bcmd, baddr)
		bare.pid = bcmd.Process.Pid
		t.Logf("separate processes, GOMAXPROCS %s in each server", procs)
	} else {
		verify, bare, toks = startHTTPSInProcess(t, dir, nKeys, pair, clientTLS)
	}
	defer verify.close()
	defer bare.close()
	verify.setBodies(spreadBodies(toks, min(len(toks), 10000)))
	bare.setBodies(verify.bodies)
	for _, tg := range []*loadTarget{bare, verify} { // warm up
		if _, err := runLoad(tg, loadConns, 500*time.Millisecond); err != nil {
			t.Fatalf("%s warm-up: %v", tg.name, err)
		}
	}

	t.Logf("load average before: %s", loadAvg())
	res := map[string][]loadResult{}
	var pairs, cpuPairs []float64
	for round := range rounds {
		order := []*loadTarget{bare, verify}
		if round%2 == 1 {
			order = []*loadTarget{verify, bare}
		}
		got := map[string]loadResult{}
		for _, tg := range order {
			var cpu0 time.Duration
			if tg.pid != 0 {
				cpu0, _ = procCPU(tg.pid)
			}
			r, err := runLoad(tg, loadConns, dur)
			if err != nil {
				t.Fatalf("%s: %v", tg.name, err)
			}
			note := ""
			if tg.pid != 0 {
				cpu1, _ := procCPU(tg.pid)
				r.cpuPerReq = (cpu1 - cpu0) / time.Duration(r.requests)
				note = fmt.Sprintf("  server CPU %.1f µs/req", float64(r.cpuPerReq)/float64(time.Microsecond))
			}
			got[tg.name] = r
			res[tg.name] = append(res[tg.name], r)
			t.Logf("round %d %-12s %8.0f req/s  p50 %s  p99 %s%s", round+1, tg.name, r.rps(), r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), note)
		}
		pairs = append(pairs, 100*got[verify.name].rps()/got[bare.name].rps())
		if verify.pid != 0 {
			cpuPairs = append(cpuPairs, 100*float64(got[bare.name].cpuPerReq)/float64(got[verify.name].cpuPerReq))
		}
	}
	t.Logf("load average after: %s", loadAvg())
	med := func(name string) (float64, time.Duration) {
		var rps []float64
		var p99 []time.Duration
		for _, r := range res[name] {
			rps, p99 = append(rps, r.rps()), append(p99, r.p99)
		}
		slices.Sort(rps)
		slices.Sort(p99)
		return rps[len(rps)/2], p99[len(p99)/2]
	}
	bRPS, bP99 := med(bare.name)
	vRPS, vP99 := med(verify.name)
	t.Logf("Go generator, %d keep-alive TLS connections, %d rounds x %s, %d keys (medians):", loadConns, rounds, dur, nKeys)
	t.Logf("| target | req/s | p99 | vs bare |")
	t.Logf("| HTTPS bare net/http, fixed JSON | %.0f | %s | 100%% |", bRPS, bP99.Round(time.Microsecond))
	t.Logf("| HTTPS verify, last-used on | %.0f | %s | %.1f%% req/s, p99 x%.2f |", vRPS, vP99.Round(time.Microsecond), 100*vRPS/bRPS, float64(vP99)/float64(bP99))
	t.Logf("per-round pairs: verify %s of bare", fmtPcts(pairs))
	if len(cpuPairs) > 0 {
		s := slices.Clone(cpuPairs)
		slices.Sort(s)
		t.Logf("server CPU per request, bare/verify per round: %s (median %.1f%%: the req/s verify would reach, CPU-bound, relative to bare)", fmtPcts(cpuPairs), s[len(s)/2])
	}
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// startHTTPSInProcess runs Serve with TLS and a bare handler behind the
// same TLS setup, both in this process.
func startHTTPSInProcess(t *testing.T, dir string, nKeys int, pair HTTPTLS, clientTLS *tls.Config) (verify, bare *loadTarget, toks []string) {
	st, toks, secret := loadStore(t, dir, nKeys, false)
	verify = serveStoreTLS(t, "https verify", st, secret, pair)
	verify.tls = clientTLS

	srv, ln := bareTLSServer(t, "127.0.0.1:0", pair)
	go srv.ServeTLS(ln, "", "")
	bare = &loadTarget{name: "https bare", addr: ln.Addr().String(), auth: "Bearer x", tls: clientTLS, close: func() { srv.Close() }}
	return verify, bare, toks
}

// bareTLSServer is the bare handler behind serve's TLS setup.
func bareTLSServer(t *testing.T, addr string, pair HTTPTLS) (*http.Server, net.Listener) {
	certs, err := newCertReloader(pair, newLogSink(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: bareHandler(), ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout, WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes}
	useTLS(srv, certs)
	return srv, ln
}

// TestLoadBareTLSServer is the bare HTTPS server's process for
// TestLoadHTTPS with KEYWARD_LOAD_EXEC: it serves until interrupted, and
// skips when not asked for.
func TestLoadBareTLSServer(t *testing.T) {
	addr := os.Getenv("KEYWARD_LOAD_BARE_ADDR")
	if addr == "" || os.Getenv("KEYWARD_LOAD_BARE_TLS_CERT") == "" {
		t.Skip("child process of TestLoadHTTPS with KEYWARD_LOAD_EXEC=1")
	}
	srv, ln := bareTLSServer(t, addr, HTTPTLS{CertFile: os.Getenv("KEYWARD_LOAD_BARE_TLS_CERT"), KeyFile: os.Getenv("KEYWARD_LOAD_BARE_TLS_KEY")})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() { <-sig; srv.Close() }()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
}
