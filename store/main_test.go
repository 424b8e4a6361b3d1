package store_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Child processes: the lock and crash tests re-execute the test binary with
// KEYWARD_TEST_CHILD set, so they exercise real cross-process behaviour.
const (
	envChild = "KEYWARD_TEST_CHILD"
	envDB    = "KEYWARD_TEST_DB"
)

func TestMain(m *testing.M) {
	if err := checkBackendEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	switch os.Getenv(envChild) {
	case "":
	case "hold":
		childHold(os.Getenv(envDB))
		os.Exit(0)
	case "create":
		childCreate(os.Getenv(envDB))
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode")
		os.Exit(3)
	}
	code := m.Run()
	cleanupBench()
	if !stopEtcdCluster() && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// childHold opens the store, says "ready" and holds it until stdin closes.
func childHold(path string) {
	s, err := store.Open(path, childOptions())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = s.Close()
}

// childCreate creates keys until killed, printing "id token" after each
// CreateKey returns (that is, after its commit).
func childCreate(path string) {
	s, err := store.Open(path, childOptions())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	prefix := fmt.Sprint(os.Getpid())
	for i := 0; ; i++ {
		k, tok, err := s.CreateKey("admin", model.KeySpec{Name: fmt.Sprintf("crash-%s-%d", prefix, i), Role: model.RoleEditor,
			Scopes: []string{"coupons:read"}, Active: true})
		if err != nil {
			fmt.Fprintln(w, "error:", err)
			w.Flush()
			os.Exit(2)
		}
		fmt.Fprintln(w, k.ID, tok)
		w.Flush()
	}
}

func childOptions() store.Options {
	cat, err := os.ReadFile("../testdata/catalog.json") // no testing.TB in a child
	if err != nil {
		panic(err)
	}
	return store.Options{Bootstrap: "admin", DefaultCatalog: cat, FlushInterval: time.Hour,
		Lock: store.LockInfo{Command: "keyward test holder"}}
}

// newClock is a store clock fixed at 2026-03-01 09:00 UTC; tests
// Advance it.
func newClock() *testkit.Clock { return testkit.NewClock(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)) }

// env is one test store with its clock, on the run's backend (newEnv) or
// on a bbolt file (newBoltEnv; see backends_test.go).
type env struct {
	t       testing.TB
	backend string // "bbolt" or "etcd"
	path    string // the bbolt file; "" on etcd
	etcd    store.EtcdConfig
	client  *clientv3.Client // etcd: the suite's client, for state()
	clock   *testkit.Clock
	opts    store.Options
	s       *store.Store
}

// newEnv is a fresh store on the backend of this run (KEYWARD_TEST_BACKEND).
func newEnv(t testing.TB) *env {
	t.Helper()
	if testBackend() == "etcd" {
		return newEtcdEnv(t)
	}
	return newBoltEnv(t)
}

// init sets the options every env starts from; the caller then opens.
func (e *env) init() {
	e.opts = store.Options{Bootstrap: "admin", DefaultCatalog: testkit.CatalogJSON(e.t), Now: e.clock.Now, FlushInterval: time.Hour}
	e.t.Cleanup(func() {
		if e.s != nil {
			_ = e.s.Close()
		}
	})
}

func (e *env) open() {
	e.t.Helper()
	var s *store.Store
	var err error
	if e.backend == "etcd" {
		s, err = store.OpenEtcd(e.etcd, e.opts)
	} else {
		s, err = store.Open(e.path, e.opts)
	}
	if err != nil {
		e.t.Fatalf("Open (%s): %v", e.backend, err)
	}
	e.s = s
}

// masterKeyPath is the file that holds e's master key.
func (e *env) masterKeyPath() string {
	if e.opts.MasterKey != "" {
		return e.opts.MasterKey
	}
	return store.MasterKeyPath(e.path)
}

// reopen closes the store and opens it again (the file, or the same etcd
// prefix), so tests can check that memory and the backend agree.
func (e *env) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.s = nil
	e.open()
}

// state is everything the backend holds for e: the bbolt file's bytes, or
// on etcd every key under e's prefix with its mod revision and value.
func (e *env) state() []byte {
	e.t.Helper()
	if e.backend == "etcd" {
		return etcdDump(e.t, e.client, e.etcd.Prefix)
	}
	b, err := os.ReadFile(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) audit() []model.AuditEvent {
	e.t.Helper()
	evs, err := e.s.Audit(store.AuditFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func spec(name string, scopes ...string) model.KeySpec {
	if len(scopes) == 0 {
		scopes = []string{"coupons:read"}
	}
	return model.KeySpec{Name: name, Role: model.RoleEditor, Scopes: scopes, Active: true}
}

func (e *env) create(sp model.KeySpec) (*model.Key, string) {
	e.t.Helper()
	k, tok, err := e.s.CreateKey("admin", sp)
	if err != nil {
		e.t.Fatalf("CreateKey(%q): %v", sp.Name, err)
	}
	return k, tok
}

func (e *env) verify(tok, scope, resource string) model.Code {
	return e.s.Verify(tok, scope, resource, "test").Code
}

func (e *env) wantCode(tok, scope, resource string, want model.Code) {
	e.t.Helper()
	if r := e.s.Verify(tok, scope, resource, "test"); r.Code != want {
		e.t.Fatalf("Verify(scope %q, resource %q) = %s (%s), want %s", scope, resource, r.Code, r.Reason, want)
	}
}

// sameKey compares two keys by their JSON form (times, pointers and all),
// apart from last-used, which verifications change on their own and which
// TestLastUsed covers.
func sameKey(t testing.TB, a, b *model.Key) {
	t.Helper()
	ca, cb := *a, *b
	ca.LastUsedAt, ca.LastUsedFrom, cb.LastUsedAt, cb.LastUsedFrom = nil, "", nil, ""
	ja, _ := json.Marshal(ca)
	jb, _ := json.Marshal(cb)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("keys differ:\n%s\n%s", ja, jb)
	}
}

// unchanged runs fn and fails if it changed the backend's state (the
// database file, or the etcd prefix) or the audit log. fn's own
// assertions run first.
func (e *env) unchanged(what string, fn func()) {
	e.t.Helper()
	before, n := e.state(), len(e.audit())
	fn()
	if !bytes.Equal(before, e.state()) {
		e.t.Fatalf("%s: the %s state changed", what, e.backend)
	}
	if m := len(e.audit()); m != n {
		e.t.Fatalf("%s: %d audit events written", what, m-n)
	}
}

func isErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
