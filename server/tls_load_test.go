package server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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

	st, toks, secret := loadStore(t, dir, nKeys, false)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
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
		t.Fatalf("serve: %v", err)
	}
	defer func() { cancel(); <-done; st.Close() }()
	verify := &loadTarget{name: "https verify", addr: addr, auth: "Bearer " + secret, tls: clientTLS}
	verify.setBodies(spreadBodies(toks, min(len(toks), 10000)))

	// The bare handler behind the same TLS setup.
	certs, err := newCertReloader(pair, newLogSink(devnull))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: bareHandler(), ReadHeaderTimeout: httpReadHeaderTimeout, ReadTimeout: httpReadTimeout, WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes}
	useTLS(srv, certs)
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	bare := &loadTarget{name: "https bare", addr: ln.Addr().String(), auth: "Bearer x", tls: clientTLS}
	bare.setBodies(verify.bodies)

	res := map[string][]loadResult{}
	var pairs []float64
	for round := range rounds {
		order := []*loadTarget{bare, verify}
		if round%2 == 1 {
			order = []*loadTarget{verify, bare}
		}
		got := map[string]loadResult{}
		for _, tg := range order {
			r, err := runLoad(tg, loadConns, dur)
			if err != nil {
				t.Fatalf("%s: %v", tg.name, err)
			}
			got[tg.name] = r
			res[tg.name] = append(res[tg.name], r)
			t.Logf("round %d %-12s %8.0f req/s  p50 %s  p99 %s", round+1, tg.name, r.rps(), r.p50, r.p99)
		}
		pairs = append(pairs, 100*got[verify.name].rps()/got[bare.name].rps())
	}
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
	t.Logf("Go generator, %d keep-alive TLS connections, %d rounds x %s, %d keys, GOMAXPROCS %d (medians):", loadConns, rounds, dur, nKeys, runtime.GOMAXPROCS(0))
	t.Logf("| target | req/s | p99 | vs bare |")
	t.Logf("| HTTPS bare net/http, fixed JSON | %.0f | %s | 100%% |", bRPS, bP99.Round(time.Microsecond))
	t.Logf("| HTTPS verify, last-used on | %.0f | %s | %.1f%% req/s, p99 x%.2f |", vRPS, vP99.Round(time.Microsecond), 100*vRPS/bRPS, float64(vP99)/float64(bP99))
	t.Logf("per-round pairs: verify %s of bare", fmtPcts(pairs))
}
