package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keyward/keyward/internal/etcdtest"
	"github.com/keyward/keyward/store"
)

// One suite, two backends. The store tests run against the backend
// KEYWARD_TEST_BACKEND names: "bbolt" (the default) or "etcd". In the etcd
// run the test binary starts one 3-member etcd cluster (internal/etcdtest,
// real processes on 127.0.0.1) on first use, every env gets a prefix of
// its own, so each test sees a fresh store, and TestMain stops the cluster
// after the run. Tests about the bbolt file itself (its bytes, locks, side
// files, modes, schema migrations, Peek, crashes) call newBoltEnv or
// store.Open and so run on bbolt in both runs: nothing is skipped.
const envBackend = "KEYWARD_TEST_BACKEND"

// testBackend is the backend this test binary runs newEnv on.
func testBackend() string {
	switch b := os.Getenv(envBackend); b {
	case "", "bbolt":
		return "bbolt"
	default:
		return b // "etcd"; TestMain refuses anything else
	}
}

func checkBackendEnv() error {
	switch b := testBackend(); b {
	case "bbolt", "etcd":
		return nil
	default:
		return fmt.Errorf("%s=%q: want bbolt or etcd", envBackend, b)
	}
}

// suiteCluster is the etcd cluster of the whole test binary, started by
// the first newEnv of the etcd run.
var suiteCluster struct {
	once   sync.Once
	tb     *mainTB
	c      *etcdtest.Cluster
	client *clientv3.Client
	err    error
	n      atomic.Int64 // prefixes handed out
}

// etcdCluster returns the suite's cluster, starting it on the first call.
// A failed start fails every test that asks (never a skip).
func etcdCluster(t testing.TB) (*etcdtest.Cluster, *clientv3.Client) {
	t.Helper()
	suiteCluster.once.Do(func() {
		tb := newMainTB()
		suiteCluster.tb = tb
		start := time.Now()
		suiteCluster.err = tb.run(func() {
			suiteCluster.c = etcdtest.Start(tb, 3)
			suiteCluster.client = suiteCluster.c.Client(tb)
		})
		if suiteCluster.err == nil {
			fmt.Fprintf(os.Stderr, "store tests: etcd cluster of 3 members up in %v at %s\n",
				time.Since(start).Round(time.Millisecond), strings.Join(suiteCluster.c.Endpoints(), ","))
		}
	})
	if suiteCluster.err != nil {
		t.Fatalf("starting the suite's etcd cluster: %v", suiteCluster.err)
	}
	return suiteCluster.c, suiteCluster.client
}

// stopEtcdCluster runs the cluster's cleanups (kills the members, removes
// their data) after m.Run. It reports whether the cleanups failed.
func stopEtcdCluster() bool {
	if suiteCluster.tb == nil {
		return true
	}
	suiteCluster.tb.cleanup()
	return !suiteCluster.tb.Failed()
}

// etcdPrefix is a prefix no other env of this binary uses: the test's
// name, made safe for a key, and a sequence number. The trailing slash
// keeps /kwtest/TestA-1/ and /kwtest/TestA-10/ apart.
func etcdPrefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, t.Name())
	return fmt.Sprintf("/kwtest/%s-%d/", name, suiteCluster.n.Add(1))
}

// etcdDump is the full contents of prefix: every key with its mod
// revision and value, in key order. Two equal dumps mean nothing under
// prefix was written in between.
func etcdDump(t testing.TB, cl *clientv3.Client, prefix string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		t.Fatalf("reading %s from etcd: %v", prefix, err)
	}
	var b strings.Builder
	for _, kv := range resp.Kvs {
		fmt.Fprintf(&b, "%s\x00%d\x00%s\n", kv.Key, kv.ModRevision, kv.Value)
	}
	return []byte(b.String())
}

// mainTB is the testing.TB that etcdtest.Start gets from TestMain's side:
// the cluster outlives any one test, so it cannot hang off a test's t.
// It implements what etcdtest uses; the embedded nil TB makes any other
// call panic, so a new use shows up at once instead of misbehaving.
type mainTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	ctx      context.Context
	cancel   context.CancelFunc
}

func newMainTB() *mainTB {
	ctx, cancel := context.WithCancel(context.Background())
	return &mainTB{ctx: ctx, cancel: cancel}
}

// mainTBFatal is the panic by which Fatal ends fn in run.
type mainTBFatal struct{ msg string }

// run calls fn and turns its Fatal into an error.
func (m *mainTB) run(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(mainTBFatal); ok {
				err = fmt.Errorf("%s", f.msg)
				return
			}
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	fn()
	if m.Failed() {
		return fmt.Errorf("etcd cluster start reported errors (see the log above)")
	}
	return nil
}

func (m *mainTB) cleanup() {
	m.cancel()
	m.mu.Lock()
	fns := m.cleanups
	m.cleanups = nil
	m.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

func (m *mainTB) Helper()                         {}
func (m *mainTB) Name() string                    { return "TestMain" }
func (m *mainTB) Context() context.Context        { return m.ctx }
func (m *mainTB) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (m *mainTB) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (m *mainTB) Error(args ...any)               { m.fail(); m.Log(args...) }
func (m *mainTB) Errorf(format string, args ...any) {
	m.fail()
	m.Logf(format, args...)
}
func (m *mainTB) Fatal(args ...any) { m.fail(); panic(mainTBFatal{fmt.Sprint(args...)}) }
func (m *mainTB) Fatalf(format string, args ...any) {
	m.fail()
	panic(mainTBFatal{fmt.Sprintf(format, args...)})
}
func (m *mainTB) FailNow() { m.fail(); panic(mainTBFatal{"FailNow"}) }
func (m *mainTB) Fail()    { m.fail() }
func (m *mainTB) fail() {
	m.mu.Lock()
	m.failed = true
	m.mu.Unlock()
}
func (m *mainTB) Failed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}
func (m *mainTB) Cleanup(fn func()) {
	m.mu.Lock()
	m.cleanups = append(m.cleanups, fn)
	m.mu.Unlock()
}
func (m *mainTB) TempDir() string {
	dir, err := os.MkdirTemp("", "keyward-store-etcd-")
	if err != nil {
		m.Fatalf("TempDir: %v", err)
	}
	m.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// In the etcd run the internal tests (package store) open their stores
// through this: a fresh prefix per opener, a master key file of the test's.
func init() {
	if testBackend() != "etcd" {
		return
	}
	store.OpenForTest = func(t testing.TB, _ string) func(store.Options) (*store.Store, error) {
		c, _ := etcdCluster(t)
		cfg := store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: etcdPrefix(t)}
		mk := filepath.Join(t.TempDir(), "master.key")
		return func(o store.Options) (*store.Store, error) {
			if o.MasterKey == "" {
				o.MasterKey = mk
			}
			return store.OpenEtcd(cfg, o)
		}
	}
}

// newBoltEnv is a test database in a bbolt file, whatever the backend of
// the run: for tests about the file itself.
func newBoltEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, backend: "bbolt", path: filepath.Join(t.TempDir(), "data", "keyward.db"), clock: newClock()}
	e.init()
	e.open()
	return e
}

// newEtcdEnv is a test store under a fresh prefix of the suite's cluster.
// The master key is a file of the test's own (on etcd it cannot sit beside
// a database file).
func newEtcdEnv(t testing.TB) *env {
	t.Helper()
	c, cl := etcdCluster(t)
	e := &env{t: t, backend: "etcd", clock: newClock(), client: cl,
		etcd: store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: etcdPrefix(t)}}
	e.init()
	e.opts.MasterKey = filepath.Join(t.TempDir(), "master.key")
	e.open()
	return e
}

// TestSuiteBackend: newEnv really opens the run's backend (so the etcd
// pass is not bbolt twice), and on etcd each env's prefix is its own: a
// key created in one store is not in the other, and the prefix holds
// everything the store wrote.
func TestSuiteBackend(t *testing.T) {
	a, b := newEnv(t), newEnv(t)
	if got := a.s.Backend(); got != testBackend() {
		t.Fatalf("newEnv opened %s, the run is %s", got, testBackend())
	}
	k, _ := a.create(spec("only-in-a"))
	if _, err := b.s.Key(k.ID); err == nil || b.s.KeyCount() != 0 {
		t.Fatalf("a key of one env is in another (%d keys)", b.s.KeyCount())
	}
	if !strings.Contains(string(a.state()), k.ID) || strings.Contains(string(b.state()), k.ID) {
		t.Fatal("state() does not hold what this env wrote, or holds another env's")
	}
	if a.backend == "etcd" && (a.etcd.Prefix == b.etcd.Prefix || !strings.HasPrefix(a.etcd.Prefix, "/kwtest/TestSuiteBackend-")) {
		t.Fatalf("prefixes %q and %q", a.etcd.Prefix, b.etcd.Prefix)
	}
}
