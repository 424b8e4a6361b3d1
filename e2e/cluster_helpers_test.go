package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/etcdtest"
	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// The cluster harness: a real etcd cluster (etcdtest, 3 member
// processes on 127.0.0.1), one keyward installation on it (a prefix of
// its own, a master key file every node shares) and `keyward serve`
// nodes, each the built binary dialling etcd through its own TCP
// proxies so that one node can be cut off the way a partition does.

// clusterStaleness is --max-staleness for the nodes under test: short,
// so the fail-closed cases take seconds (the default is 15 s).
const clusterStaleness = 3 * time.Second

// kwCluster is one keyward installation on a 3-member etcd cluster.
type kwCluster struct {
	t      *testing.T
	etcd   *etcdtest.Cluster
	dir    string // HOME of CLI runs
	prefix string
	master string // the master key file every node and CLI run uses
	secret string // the shared secret, for HTTP verify
	admin  string // the ADMIN operator the CLI acts as (the OS user)
	// cliTimeout bounds each CLI run (default 60 s; a 1M-key seed needs more).
	cliTimeout time.Duration
	nodes      []*kwNode
}

// newKWCluster starts 3 etcd members and bootstraps a keyward store on
// them through the CLI (which also prints the shared secret).
func newKWCluster(t *testing.T, opts ...etcdtest.Option) *kwCluster {
	t.Helper()
	c := newKWClusterEmpty(t, opts...)
	c.bootstrap()
	return c
}

// newKWClusterEmpty starts 3 etcd members and names an empty prefix (no
// store yet: for migrate).
func newKWClusterEmpty(t *testing.T, opts ...etcdtest.Option) *kwCluster {
	t.Helper()
	c := &kwCluster{t: t, dir: t.TempDir()}
	c.etcd = etcdtest.Start(t, 3, opts...)
	c.prefix = fmt.Sprintf("/kwtest-%d/", time.Now().UnixNano()%1e6)
	c.master = filepath.Join(c.dir, "master.key")
	return c
}

// bootstrap creates the store on the prefix if there is none, and reads
// its shared secret and ADMIN operator.
func (c *kwCluster) bootstrap() {
	t := c.t
	t.Helper()
	var sec struct{ Secret string }
	r := c.cli(c.etcd.Endpoints(), "secret", "show", "--json")
	if r.Code != 0 {
		t.Fatalf("bootstrapping the store on etcd: %s", r)
	}
	if err := json.Unmarshal([]byte(r.Stdout), &sec); err != nil || sec.Secret == "" {
		t.Fatalf("secret show --json: %v\n%s", err, r)
	}
	c.secret = sec.Secret
	var ops []struct{ Name, Role string }
	if err := json.Unmarshal([]byte(c.ok(c.etcd.Endpoints(), "operators", "list", "--json").Stdout), &ops); err != nil || len(ops) == 0 {
		t.Fatalf("operators list --json: %v", err)
	}
	c.admin = ops[0].Name
}

// cli runs keyward against the cluster through endpoints eps.
func (c *kwCluster) cli(eps []string, args ...string) result {
	c.t.Helper()
	d := c.cliTimeout
	if d == 0 {
		d = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	full := append([]string{"--etcd", strings.Join(eps, ","), "--etcd-prefix", c.prefix, "--master-key", c.master}, args...)
	cmd := exec.CommandContext(ctx, testkit.Binary(c.t), full...)
	cmd.Env = testkit.Environ(c.dir, "")
	cmd.Dir = c.dir
	return testkit.RunCommand(c.t, cmd)
}

// ok is cli that fails the test unless keyward exits 0.
func (c *kwCluster) ok(eps []string, args ...string) result {
	c.t.Helper()
	r := c.cli(eps, args...)
	if r.Code != 0 {
		c.t.Fatalf("keyward %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// create makes a key through eps and returns it with its token.
func (c *kwCluster) create(eps []string, name string, extra ...string) cliKey {
	c.t.Helper()
	args := append([]string{"keys", "create", "--json", "--name", name, "--scope", "coupons:read"}, extra...)
	k := testkit.Decode[cliKey](c.t, c.ok(eps, args...))
	if k.Token == "" || k.ID == "" {
		c.t.Fatalf("keys create printed no id or token")
	}
	return k
}

// openStore opens the installation in this test process through eps (a
// node of its own: memory, watch, staleness).
func (c *kwCluster) openStore(eps []string) *store.Store {
	c.t.Helper()
	st, err := store.OpenEtcd(store.EtcdConfig{Endpoints: eps, Prefix: c.prefix},
		store.Options{MasterKey: c.master, MaxStaleness: clusterStaleness, FlushInterval: time.Second, Warn: func(s string) { c.t.Logf("store: %s", s) }})
	if err != nil {
		c.t.Fatalf("store.OpenEtcd: %v", err)
	}
	c.t.Cleanup(func() { st.Close() })
	return st
}

// kwNode is one `keyward serve` process on the cluster, dialling etcd
// through its own proxies.
type kwNode struct {
	c        *kwCluster
	name     string
	px       *etcdtest.ProxySet
	dir      string
	httpAddr string
	sshAddr  string
	hostKey  string
	logPath  string
	extra    []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startNode starts another serve node (HTTP and SSH on free ports,
// --max-staleness clusterStaleness) and waits until it answers /healthz.
func (c *kwCluster) startNode(extra ...string) *kwNode {
	c.t.Helper()
	n := &kwNode{c: c, name: fmt.Sprintf("node%d", len(c.nodes)), px: c.etcd.Proxies(c.t), extra: extra}
	n.dir = filepath.Join(c.dir, n.name)
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	n.hostKey = filepath.Join(n.dir, "ssh_host_ed25519")
	n.logPath = filepath.Join(n.dir, "serve.log")
	c.nodes = append(c.nodes, n)
	n.start()
	c.t.Cleanup(n.kill)
	return n
}

// startNodes starts k nodes at once and waits for all of them.
func (c *kwCluster) startNodes(k int, extra ...string) []*kwNode {
	c.t.Helper()
	var ns []*kwNode
	for i := 0; i < k; i++ {
		ns = append(ns, c.startNode(extra...))
	}
	return ns
}

// start (re)starts the node's process on its ports and waits until it
// answers /healthz 200.
func (n *kwNode) start() {
	t := n.c.t
	t.Helper()
	if n.httpAddr == "" {
		n.httpAddr, n.sshAddr = testkit.FreeAddr(t), testkit.FreeAddr(t)
	}
	logFile, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	args := append([]string{"--etcd", strings.Join(n.px.Endpoints(), ","), "--etcd-prefix", n.c.prefix, "--master-key", n.c.master,
		"serve", "--http", n.httpAddr, "--ssh", n.sshAddr, "--host-key", n.hostKey, "--max-staleness", clusterStaleness.String()}, n.extra...)
	cmd := exec.Command(testkit.Binary(t), args...)
	cmd.Env = testkit.Environ(n.dir, "")
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n.healthz() == 200 {
			return
		}
		select {
		case <-done:
			t.Fatalf("%s exited before serving:\n%s", n.name, n.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer /healthz 200 within 30s:\n%s", n.name, n.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill SIGKILLs the node (if running) and waits for it to exit.
func (n *kwNode) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (n *kwNode) logs() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// eps are the node's etcd endpoints (its proxies).
func (n *kwNode) eps() []string { return n.px.Endpoints() }

var clusterHTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// verifyAns is one HTTP verify's answer: Status, and Code for a 200 or
// Error for an error answer.
type verifyAns struct {
	Status int
	Code   string
	Error  string
}

func (a verifyAns) String() string {
	if a.Status == 200 {
		return a.Code
	}
	return fmt.Sprintf("%d %s", a.Status, a.Error)
}

// verify posts one verification of tok (scope coupons:read) to the node.
func (n *kwNode) verify(tok string) (verifyAns, error) {
	code, body, err := verifyOnce(clusterHTTP, "http://"+n.httpAddr, n.c.secret, `{"key":"`+tok+`","scope":"coupons:read"}`)
	if err != nil {
		return verifyAns{}, err
	}
	a := verifyAns{Status: code}
	var v struct{ Code, Error string }
	if err := json.Unmarshal(body, &v); err != nil {
		return a, fmt.Errorf("status %d, body not JSON: %q", code, body)
	}
	a.Code, a.Error = v.Code, v.Error
	return a, nil
}

// healthz is the status of GET /healthz (0 if no answer).
func (n *kwNode) healthz() int {
	resp, err := clusterHTTP.Get("http://" + n.httpAddr + "/healthz")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitAnswer polls the node until verify of tok answers want (a code
// such as "VALID", or "503 stale"), and returns how long that took. It
// fails the test after d.
func (n *kwNode) waitAnswer(tok, want string, d time.Duration) time.Duration {
	n.c.t.Helper()
	start := time.Now()
	var last string
	for {
		a, err := n.verify(tok)
		if err == nil {
			last = a.String()
			if last == want {
				return time.Since(start)
			}
		} else {
			last = err.Error()
		}
		if time.Since(start) > d {
			n.c.t.Fatalf("%s: verify did not answer %s within %s (last: %s)\n%s", n.name, want, d, last, testkit.Tail(n.logs(), 3000))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitHealthz polls /healthz until it answers want; fails after d.
func (n *kwNode) waitHealthz(want int, d time.Duration) time.Duration {
	n.c.t.Helper()
	start := time.Now()
	for {
		got := n.healthz()
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > d {
			n.c.t.Fatalf("%s: /healthz did not answer %d within %s (last %d)\n%s", n.name, want, d, got, testkit.Tail(n.logs(), 3000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// verifyLoad runs verify loops of valid tokens against nodes until stop
// and counts every answer that is not VALID (transport errors, 5xx and
// refusals alike) as a failure.
type verifyLoad struct {
	mu       sync.Mutex
	ok, fail int
	fails    []string
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startVerifyLoad(nodes []*kwNode, toks []string, perNode int) *verifyLoad {
	l := &verifyLoad{stop: make(chan struct{})}
	for _, n := range nodes {
		for g := 0; g < perNode; g++ {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for i := g; ; i++ {
					select {
					case <-l.stop:
						return
					default:
					}
					a, err := n.verify(toks[i%len(toks)])
					l.mu.Lock()
					switch {
					case err != nil:
						l.fail++
						l.fails = append(l.fails, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), n.name, err))
					case a.Status != 200 || a.Code != "VALID":
						l.fail++
						l.fails = append(l.fails, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), n.name, a))
					default:
						l.ok++
					}
					l.mu.Unlock()
					time.Sleep(time.Millisecond)
				}
			}()
		}
	}
	return l
}

// end stops the load and returns its counts.
func (l *verifyLoad) end() (ok, fail int, fails []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok, l.fail, l.fails
}

// acked is the writes a writer loop had acknowledged: key name → token.
type acked struct {
	mu   sync.Mutex
	keys map[string]string
	errs []string
}

// startWriter creates keys through st in a loop until stop, recording
// each acknowledged one (and each error: an unacknowledged write may or
// may not have happened, and is not checked).
func startWriter(st *store.Store, actor, prefix string, stop <-chan struct{}, wg *sync.WaitGroup) *acked {
	a := &acked{keys: map[string]string{}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("%s-%d", prefix, i)
			_, tok, err := st.CreateKey(actor, model.KeySpec{Name: name, Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Active: true})
			a.mu.Lock()
			if err != nil {
				a.errs = append(a.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), name, err))
			} else {
				a.keys[name] = tok
			}
			a.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return a
}

// checkAllValid fails the test unless every token answers VALID on
// every node within d.
func checkAllValid(t *testing.T, nodes []*kwNode, toks map[string]string, d time.Duration) {
	t.Helper()
	names := make([]string, 0, len(toks))
	for n := range toks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range nodes {
		for _, name := range names {
			n.waitAnswer(toks[name], "VALID", d)
		}
	}
}

// percentile of sorted durations (p in 0..100).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}
