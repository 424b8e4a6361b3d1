package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The performance figures of issue 14 (BENCHMARKS.md, "etcd cluster").
// Each runs in CI in a short form, so it cannot rot; the figures in
// BENCHMARKS.md are the long form:
//
//	KEYWARD_CLUSTER_BENCH=1 go test -run 'TestClusterBench' -v -count=1 ./e2e/
//	KEYWARD_CLUSTER_BENCH_1M=1 go test -run 'TestClusterBenchReady' -v -count=1 -timeout 30m ./e2e/
//
// They check only what must hold on any machine (every disable is
// refused, every verify answered); the goals are compared by hand.

func clusterBenchLong() bool { return os.Getenv("KEYWARD_CLUSTER_BENCH") == "1" }

// pick is short in CI, long under KEYWARD_CLUSTER_BENCH=1.
func pick[T any](short, long T) T {
	if clusterBenchLong() {
		return long
	}
	return short
}

// makeTokens creates n real keys through st (ImportKeys, batched on
// etcd) and returns their tokens.
func makeTokens(t *testing.T, st *store.Store, actor, prefix string, n int) []string {
	t.Helper()
	var toks []string
	for len(toks) < n {
		var specs []model.KeySpec
		for i := len(toks); i < n && len(specs) < 1000; i++ {
			specs = append(specs, model.KeySpec{Name: fmt.Sprintf("%s-%d", prefix, i), Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Active: true})
		}
		_, ts, err := st.ImportKeys(actor, specs)
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		toks = append(toks, ts...)
	}
	return toks
}

// Disable on one node (the in-process store) → refused on the others
// (two serve nodes, polled over HTTP): the delay from the disable's
// acknowledgement to DISABLED on both, and from its start.
func TestClusterBenchDisable(t *testing.T) {
	c := newKWCluster(t)
	ns := c.startNodes(2)
	a := c.openStore(c.etcd.Proxies(t).Endpoints())
	n := pick(20, 200)
	keys, toks, err := a.ImportKeys(c.admin, func() []model.KeySpec {
		var specs []model.KeySpec
		for i := 0; i < n; i++ {
			specs = append(specs, model.KeySpec{Name: fmt.Sprintf("dis-%d", i), Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Active: true})
		}
		return specs
	}())
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range ns {
		for _, tok := range toks {
			nd.waitAnswer(tok, "VALID", propagate)
		}
	}
	var fromAck, fromStart, write []time.Duration
	for i, k := range keys {
		start := time.Now()
		if _, err := a.SetKeyActive(c.admin, k.ID, false); err != nil {
			t.Fatalf("disable %s: %v", k.ID, err)
		}
		acked := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var last time.Time
		for _, nd := range ns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ans, err := nd.verify(toks[i])
					if err == nil && ans.String() == "DISABLED" {
						break
					}
					if time.Since(acked) > propagate {
						t.Errorf("%s: disable of %s not refused after %s (last %v %v)", nd.name, k.ID, propagate, ans, err)
						return
					}
				}
				mu.Lock()
				if now := time.Now(); now.After(last) {
					last = now
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		write = append(write, acked.Sub(start))
		fromAck = append(fromAck, last.Sub(acked))
		fromStart = append(fromStart, last.Sub(start))
	}
	for _, s := range [][]time.Duration{write, fromAck, fromStart} {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	}
	t.Logf("%d disables, refused on %d other nodes: write (start→ack) p50 %s p99 %s; ack→refused everywhere p50 %s p99 %s max %s; start→refused everywhere p50 %s p99 %s max %s",
		len(keys), len(ns), percentile(write, 50), percentile(write, 99),
		percentile(fromAck, 50), percentile(fromAck, 99), fromAck[len(fromAck)-1],
		percentile(fromStart, 50), percentile(fromStart, 99), fromStart[len(fromStart)-1])
}

// rawLoad drives POST /v1/keys/verify on addr from conns keep-alive
// connections for d, round-robin over bodies; it returns the number of
// VALID answers, anything else, and the latencies.
func rawLoad(addr, secret string, bodies []string, conns int, d time.Duration) (ok, bad int64, lat []time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for g := 0; g < conns; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() { mu.Lock(); lat = append(lat, mine...); mu.Unlock() }()
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				atomic.AddInt64(&bad, 1)
				return
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 4096)
			for i := g; time.Now().Before(end); i++ {
				body := bodies[i%len(bodies)]
				req := "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret +
					"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
				t0 := time.Now()
				c.SetDeadline(t0.Add(5 * time.Second))
				if _, err := c.Write([]byte(req)); err != nil {
					atomic.AddInt64(&bad, 1)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					atomic.AddInt64(&bad, 1)
					return
				}
				b := make([]byte, 512)
				nr, _ := readFull(resp, b)
				resp.Body.Close()
				mine = append(mine, time.Since(t0))
				if resp.StatusCode == 200 && strings.Contains(string(b[:nr]), `"VALID"`) {
					atomic.AddInt64(&ok, 1)
				} else {
					atomic.AddInt64(&bad, 1)
				}
			}
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return ok, bad, lat
}

func readFull(resp *http.Response, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := resp.Body.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// HTTP verify on an etcd-backed node vs a bbolt-backed node with the
// same keys (the bbolt file is `keyward --etcd … backup`'s copy), the
// same run, rounds alternated.
func TestClusterBenchVerify(t *testing.T) {
	c := newKWCluster(t)
	w := c.openStore(c.etcd.Endpoints())
	toks := makeTokens(t, w, c.admin, "v", pick(1000, 10000))
	w.Close()
	db := filepath.Join(c.dir, "copy.db")
	c.ok(c.etcd.Endpoints(), "backup", db)
	etcdNode := c.startNode("--flush-interval", "10s")

	// The bbolt node: serve --db on the copy, same master key.
	bolt := &kwNode{c: c, name: "bbolt", dir: filepath.Join(c.dir, "bbolt"), httpAddr: testkit.FreeAddr(t)}
	os.MkdirAll(bolt.dir, 0o700)
	bolt.logPath = filepath.Join(bolt.dir, "serve.log")
	lf, _ := os.Create(bolt.logPath)
	cmd := exec.Command(testkit.Binary(t), "--db", db, "--master-key", c.master, "serve", "--http", bolt.httpAddr, "--ssh", "", "--flush-interval", "10s")
	cmd.Env = testkit.Environ(bolt.dir, "")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	bolt.waitHealthz(200, 20*time.Second)
	bolt.waitAnswer(toks[0], "VALID", time.Second)
	etcdNode.waitAnswer(toks[len(toks)-1], "VALID", propagate)

	var bodies []string
	for _, tok := range toks {
		bodies = append(bodies, `{"key":"`+tok+`","scope":"coupons:read"}`)
	}
	d := pick(time.Second, 5*time.Second)
	rounds := pick(1, 3)
	conns := 16
	var okE, okB, badE, badB int64
	var latE, latB []time.Duration
	for r := 0; r < rounds; r++ {
		o, b, l := rawLoad(etcdNode.httpAddr, c.secret, bodies, conns, d)
		okE, badE, latE = okE+o, badE+b, append(latE, l...)
		o, b, l = rawLoad(bolt.httpAddr, c.secret, bodies, conns, d)
		okB, badB, latB = okB+o, badB+b, append(latB, l...)
	}
	sort.Slice(latE, func(i, j int) bool { return latE[i] < latE[j] })
	sort.Slice(latB, func(i, j int) bool { return latB[i] < latB[j] })
	total := time.Duration(rounds) * d
	rE, rB := float64(okE)/total.Seconds(), float64(okB)/total.Seconds()
	t.Logf("verify, %d keys, %d conns, %d×%s per side: etcd node %.0f/s (p50 %s p99 %s), bbolt node %.0f/s (p50 %s p99 %s): ratio %.1f %%",
		len(toks), conns, rounds, d, rE, percentile(latE, 50), percentile(latE, 99), rB, percentile(latB, 50), percentile(latB, 99), 100*rE/rB)
	if badE+badB > 0 {
		t.Errorf("answers other than VALID: etcd %d, bbolt %d", badE, badB)
	}
}

// Create throughput, one writer, CreateKey in a loop: etcd (3 members)
// vs a bbolt file, same process.
func TestClusterBenchCreate(t *testing.T) {
	c := newKWCluster(t)
	n := pick(50, 500)
	run := func(st *store.Store, prefix string) float64 {
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, _, err := st.CreateKey(c.admin, model.KeySpec{Name: fmt.Sprintf("%s-%d", prefix, i), Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Active: true}); err != nil {
				t.Fatal(err)
			}
		}
		return float64(n) / time.Since(start).Seconds()
	}
	e := c.openStore(c.etcd.Endpoints())
	b, err := store.Open(filepath.Join(t.TempDir(), "b.db"), store.Options{Bootstrap: c.admin, DefaultCatalog: testkit.CatalogJSON(t), Warn: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	re := run(e, "ce")
	rb := run(b, "cb")
	imp := func(st *store.Store, prefix string) float64 {
		start := time.Now()
		makeTokens(t, st, c.admin, prefix, 10*n)
		return float64(10*n) / time.Since(start).Seconds()
	}
	ie, ib := imp(e, "ie"), imp(b, "ib")
	t.Logf("CreateKey, %d sequential: etcd %.0f/s, bbolt %.0f/s (etcd/bbolt %.2f); ImportKeys of %d: etcd %.0f keys/s, bbolt %.0f keys/s", n, re, rb, re/rb, 10*n, ie, ib)
}

// Last-used writes on etcd while a node verifies as fast as it can over
// K distinct keys: every put under lu/ is counted through a watch.
func TestClusterBenchLastUsed(t *testing.T) {
	c := newKWCluster(t)
	w := c.openStore(c.etcd.Endpoints())
	k := pick(200, 2000)
	toks := makeTokens(t, w, c.admin, "lu", k)
	ns := c.startNodes(2, "--flush-interval", "1s")
	for _, nd := range ns {
		nd.waitAnswer(toks[len(toks)-1], "VALID", propagate)
	}
	cl := c.etcd.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var puts atomic.Int64
	wch := cl.Watch(ctx, c.prefix+"lu/", clientv3.WithPrefix())
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut {
					puts.Add(1)
				}
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	var bodies []string
	for _, tok := range toks {
		bodies = append(bodies, `{"key":"`+tok+`","scope":"coupons:read"}`)
	}
	d := pick(3*time.Second, 10*time.Second)
	var wg sync.WaitGroup
	var oks [2]int64
	for i, nd := range ns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oks[i], _, _ = rawLoad(nd.httpAddr, c.secret, bodies, 8, d)
		}()
	}
	wg.Wait()
	time.Sleep(2500 * time.Millisecond) // the last flushes (1 s) and their events
	total := oks[0] + oks[1]
	t.Logf("last used: %d distinct keys, 2 nodes, %s: %d verifications (%.0f/s per node), %d lu/ puts (%.2f per key, %.1f puts/s)",
		k, d, total, float64(total)/d.Seconds()/2, puts.Load(), float64(puts.Load())/float64(k), float64(puts.Load())/d.Seconds())
	if puts.Load() > int64(2*k) {
		t.Errorf("%d lu/ puts for %d keys in %s: more than one per key per node", puts.Load(), k, d)
	}
}

// A node ready (first VALID answered) with many keys in etcd, and its
// RSS. 2,000 keys in CI; KEYWARD_CLUSTER_BENCH_1M=1 seeds a million with
// `keyward dev seed` (batched, as etcd limits a transaction).
func TestClusterBenchReady(t *testing.T) {
	n := 2_000
	if os.Getenv("KEYWARD_CLUSTER_BENCH_1M") == "1" {
		n = 1_000_000
	}
	c := newKWCluster(t)
	c.cliTimeout = 40 * time.Minute
	start := time.Now()
	r := c.ok(c.etcd.Endpoints(), "dev", "seed", "--keys", strconv.Itoa(n))
	seedTook := time.Since(start)
	t.Logf("dev seed %d on etcd: %s (%.0f keys/s): %s", n, seedTook.Round(time.Millisecond), float64(n)/seedTook.Seconds(), strings.TrimSpace(r.Stdout+r.Stderr))
	k := c.create(c.etcd.Endpoints(), "ready")
	ready, rss, _ := timeNodeReady(t, c, "ready", k.Token)
	t.Logf("node ready (first VALID) with %d keys in etcd: %s; serve %s", n+1, ready.Round(time.Millisecond), rss)
}

// Moving a bbolt database into etcd (`keyward --etcd … migrate`), then a
// node ready on it: 2,000 keys in CI, a million with
// KEYWARD_CLUSTER_BENCH_1M=1. The bbolt file is seeded with `dev seed`
// (fast on bbolt), so this is also the quicker way to put 1M keys in etcd.
func TestClusterBenchMigrateReady(t *testing.T) {
	n := 2_000
	if os.Getenv("KEYWARD_CLUSTER_BENCH_1M") == "1" {
		n = 1_000_000
	}
	c := newKWClusterEmpty(t)
	c.cliTimeout = 40 * time.Minute
	db := filepath.Join(c.dir, "old.db")
	run := func(args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), c.cliTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, testkit.Binary(t), append([]string{"--db", db, "--master-key", c.master}, args...)...)
		cmd.Env = testkit.Environ(c.dir, "")
		var errb strings.Builder
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("keyward --db %s: %v\n%s%s", strings.Join(args, " "), err, out, errb.String())
		}
		return result{Stdout: string(out)}
	}
	start := time.Now()
	run("dev", "seed", "--keys", strconv.Itoa(n))
	k := testkit.Decode[cliKey](t, run("keys", "create", "--json", "--name", "moved", "--scope", "coupons:read"))
	t.Logf("bbolt: dev seed %d + one real key: %s", n, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	r := c.ok(c.etcd.Endpoints(), "migrate", db)
	took := time.Since(start)
	t.Logf("migrate %d keys into etcd: %s (%.0f keys/s): %s", n+1, took.Round(time.Millisecond), float64(n+1)/took.Seconds(), strings.TrimSpace(r.Stdout))
	c.bootstrap()
	ready, rss, logs := timeNodeReady(t, c, "moved", k.Token)
	t.Logf("node ready (first VALID) with %d keys moved into etcd: %s; serve %s\nserve log:\n%s", n+1, ready.Round(time.Millisecond), rss, logs)
}

// timeNodeReady starts a serve node on c's prefix and times it from the
// process start to its first VALID for token; it returns that time, the
// node's VmRSS and VmHWM a second later, and the tail of its log.
func timeNodeReady(t *testing.T, c *kwCluster, name, token string) (time.Duration, string, string) {
	t.Helper()
	nd := &kwNode{c: c, name: name, px: c.etcd.Proxies(t), dir: filepath.Join(c.dir, name)}
	os.MkdirAll(nd.dir, 0o700)
	nd.hostKey = filepath.Join(nd.dir, "hk")
	nd.logPath = filepath.Join(nd.dir, "serve.log")
	nd.httpAddr, nd.sshAddr = testkit.FreeAddr(t), testkit.FreeAddr(t)
	lf, _ := os.Create(nd.logPath)
	cmd := exec.Command(testkit.Binary(t), "--etcd", strings.Join(nd.px.Endpoints(), ","), "--etcd-prefix", c.prefix, "--master-key", c.master,
		"serve", "--http", nd.httpAddr, "--ssh", nd.sshAddr, "--host-key", nd.hostKey)
	cmd.Env = testkit.Environ(nd.dir, "")
	cmd.Stdout, cmd.Stderr = lf, lf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for {
		if a, err := nd.verify(token); err == nil && a.String() == "VALID" {
			break
		}
		if time.Since(t0) > 120*time.Second {
			t.Fatalf("no VALID within 120s:\n%s", testkit.Tail(nd.logs(), 2000))
		}
		time.Sleep(5 * time.Millisecond)
	}
	ready := time.Since(t0)
	time.Sleep(time.Second)
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	rss := ""
	for _, line := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			rss += strings.Join(strings.Fields(line), " ") + "; "
		}
	}
	return ready, rss, testkit.Tail(nd.logs(), 1500)
}
