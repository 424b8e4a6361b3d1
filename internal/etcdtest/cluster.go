package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ReadyTimeout bounds how long Start and Restart wait for etcd to serve.
const ReadyTimeout = 10 * time.Second

// Test timing defaults. Faster than etcd's 100 ms / 1 s would make leader
// loss quicker to recover from, but the CI box has 2 cores shared with
// compilers, and a starved member then calls spurious elections; these keep
// failover near one second without that noise.
const (
	DefaultHeartbeat = 100 * time.Millisecond
	DefaultElection  = 1000 * time.Millisecond
	// DefaultQuota is the backend quota per member: room for the 1M-key
	// measurements, well under etcd's 8 GiB suggested maximum.
	DefaultQuota = 4 << 30
)

type config struct {
	bin                 string
	args                []string
	heartbeat, election time.Duration
	quota               int64
	tls                 bool
}

// Option changes how Start runs the members.
type Option func(*config)

// WithBin runs this etcd binary instead of Bin's (for example Debian's
// /usr/bin/etcd 3.4 in the smoke run).
func WithBin(path string) Option { return func(c *config) { c.bin = path } }

// WithArgs appends flags to every member's command line.
func WithArgs(extra ...string) Option {
	return func(c *config) { c.args = append(c.args, extra...) }
}

// WithAutoCompaction turns on etcd's own compaction, mode "periodic" or
// "revision", retention as etcd takes it ("1h", "1000").
func WithAutoCompaction(mode, retention string) Option {
	return WithArgs("--auto-compaction-mode="+mode, "--auto-compaction-retention="+retention)
}

// WithTiming sets the raft heartbeat and election timeout.
func WithTiming(heartbeat, election time.Duration) Option {
	return func(c *config) { c.heartbeat, c.election = heartbeat, election }
}

// WithQuota sets --quota-backend-bytes.
func WithQuota(bytes int64) Option { return func(c *config) { c.quota = bytes } }

// Cluster is n etcd member processes on 127.0.0.1, killed at test cleanup.
type Cluster struct {
	members  []*Member
	admin    *clientv3.Client // for Status calls; closed at cleanup
	tlsFiles *TLSFiles        // WithTLS
}

// Member is one etcd process. Its ports and data dir survive Kill/Restart.
type Member struct {
	name      string
	clientURL string
	peerURL   string
	dataDir   string
	logPath   string
	bin       string
	args      []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
	c    *Cluster
}

// Start runs n members and waits (≤ ReadyTimeout) until they have a leader
// and answer a linearizable read. Everything it starts is SIGKILLed at
// cleanup, also when the test fails or Start itself fails. Timing defaults
// to DefaultHeartbeat/DefaultElection (see WithTiming).
func Start(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: Start with %d members", n)
	}
	cfg := config{heartbeat: DefaultHeartbeat, election: DefaultElection, quota: DefaultQuota}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.bin == "" {
		cfg.bin = Bin(t)
	}
	// Free ports are found by binding :0 and letting go; another process may
	// take one before etcd binds it. Such a start is retried on fresh ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := tryStart(t, n, cfg)
		if err == nil {
			return c
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("etcdtest: cluster of %d did not start: %v", n, lastErr)
	return nil
}

var errPortTaken = errors.New("a port was taken before etcd bound it")

func tryStart(t testing.TB, n int, cfg config) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	base := t.TempDir()
	c := &Cluster{}
	scheme, tlsArgs := "http://", []string(nil)
	if cfg.tls {
		if c.tlsFiles, tlsArgs, err = makeTLS(base); err != nil {
			return nil, err
		}
		scheme = "https://"
	}
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{
			name:      fmt.Sprintf("m%d", i),
			clientURL: scheme + "127.0.0.1:" + strconv.Itoa(ports[2*i]),
			peerURL:   "http://127.0.0.1:" + strconv.Itoa(ports[2*i+1]),
			dataDir:   filepath.Join(base, fmt.Sprintf("m%d.etcd", i)),
			logPath:   filepath.Join(base, fmt.Sprintf("m%d.log", i)),
			bin:       cfg.bin,
			c:         c,
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	for _, m := range c.members {
		m.args = append([]string{
			"--name=" + m.name,
			"--data-dir=" + m.dataDir,
			"--listen-client-urls=" + m.clientURL,
			"--advertise-client-urls=" + m.clientURL,
			"--listen-peer-urls=" + m.peerURL,
			"--initial-advertise-peer-urls=" + m.peerURL,
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-state=new",
			"--initial-cluster-token=keyward-test-" + strconv.Itoa(ports[0]),
			"--heartbeat-interval=" + strconv.FormatInt(cfg.heartbeat.Milliseconds(), 10),
			"--election-timeout=" + strconv.FormatInt(cfg.election.Milliseconds(), 10),
			"--quota-backend-bytes=" + strconv.FormatInt(cfg.quota, 10),
		}, append(tlsArgs, cfg.args...)...)
	}
	// Registered before any process starts, so a Fatal anywhere below (or
	// in the test) still kills them all.
	t.Cleanup(func() {
		for _, m := range c.members {
			m.Kill()
		}
		if c.admin != nil {
			c.admin.Close()
		}
		if t.Failed() {
			c.dumpLogs(t)
		}
	})
	for _, m := range c.members {
		if err := m.start(); err != nil {
			return nil, err
		}
	}
	c.admin, err = c.newClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	for _, m := range c.members {
		if err := m.waitServing(ctx, true); err != nil {
			return nil, c.startErr(m, err)
		}
	}
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := c.admin.Get(rctx, "/etcdtest/ready")
		rcancel()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no linearizable read within %v: %w", ReadyTimeout, err)
		}
	}
}

// startErr wraps a member's startup failure, recognising a lost port race.
func (c *Cluster) startErr(m *Member, err error) error {
	for _, o := range c.members {
		if !o.Running() {
			if b, _ := os.ReadFile(o.logPath); bytes.Contains(b, []byte("address already in use")) {
				return fmt.Errorf("%s: %w", o.name, errPortTaken)
			}
		}
	}
	return fmt.Errorf("%s (%s): %w", m.name, m.clientURL, err)
}

func (c *Cluster) dumpLogs(t testing.TB) {
	for _, m := range c.members {
		b, err := os.ReadFile(m.logPath)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		t.Logf("etcdtest: last %d lines of %s's log (%s):\n%s", len(lines), m.name, m.logPath, strings.Join(lines, "\n"))
	}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) newClient() (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if c.tlsFiles != nil {
		cfg.TLS = c.tlsFiles.config
	}
	return clientv3.New(cfg)
}

// Endpoints are the members' client URLs (direct, no proxy).
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// Members are the members in start order (m0, m1, ...).
func (c *Cluster) Members() []*Member { return c.members }

// Client is a client of every member, closed at t's cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cl, err := c.newClient()
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Leader asks each running member for its status and returns the one that
// says it is the leader. It errs when no member does before ctx ends.
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	var lastErr error = errors.New("no running member")
	for {
		for _, m := range c.members {
			if !m.Running() {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			st, err := c.admin.Status(sctx, m.clientURL)
			cancel()
			if err != nil {
				lastErr = fmt.Errorf("%s: %w", m.name, err)
				continue
			}
			if st.Leader != 0 && st.Leader == st.Header.MemberId {
				return m, nil
			}
			lastErr = fmt.Errorf("%s is not the leader (leader id %x)", m.name, st.Leader)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no leader: %w (%v)", lastErr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Name is the member's etcd name (m0, m1, ...).
func (m *Member) Name() string { return m.name }

// ClientURL is the member's client URL, http://127.0.0.1:port.
func (m *Member) ClientURL() string { return m.clientURL }

// PeerURL is the member's peer URL.
func (m *Member) PeerURL() string { return m.peerURL }

// DataDir is the member's data directory (kept across Restart).
func (m *Member) DataDir() string { return m.dataDir }

// LogPath is the file holding the member's stdout and stderr.
func (m *Member) LogPath() string { return m.logPath }

func (m *Member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("%s is already running", m.name)
	}
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== etcdtest: %s %s\n", m.bin, strings.Join(m.args, " "))
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.bin, err)
	}
	done := make(chan struct{})
	m.cmd, m.done = cmd, done
	go func() {
		cmd.Wait()
		m.mu.Lock()
		if m.cmd == cmd {
			m.cmd = nil
		}
		m.mu.Unlock()
		close(done)
	}()
	return nil
}

// cleanEnv is the test's environment without ETCD_* variables, which etcd
// would read as flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") && !strings.HasPrefix(kv, "ETCDCTL_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitServing waits until the member answers Status and, when wantLeader,
// knows a leader.
func (m *Member) waitServing(ctx context.Context, wantLeader bool) error {
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	var lastErr error = ctx.Err()
	for {
		select {
		case <-done:
			return fmt.Errorf("exited during startup (see %s)", m.logPath)
		default:
		}
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		st, err := m.c.admin.Status(sctx, m.clientURL)
		cancel()
		switch {
		case err != nil:
			lastErr = err
		case wantLeader && st.Leader == 0:
			lastErr = errors.New("no leader yet")
		default:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not serving: %v", lastErr)
		case <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *Member) signal(sig syscall.Signal) (done chan struct{}, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return nil, false
	}
	m.cmd.Process.Signal(sig)
	return m.done, true
}

// Kill SIGKILLs the member and waits for it to exit. A member that is not
// running is left alone.
func (m *Member) Kill() {
	if done, ok := m.signal(syscall.SIGKILL); ok {
		<-done
	}
}

// Stop SIGTERMs the member (resuming it if paused) and waits for it to
// exit; after 10 s it is killed.
func (m *Member) Stop() {
	done, ok := m.signal(syscall.SIGTERM)
	if !ok {
		return
	}
	m.signal(syscall.SIGCONT)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.Kill()
	}
}

// Pause SIGSTOPs the member: it holds its connections and answers nothing.
// A client whose connection is to this member hangs until its context ends
// (gRPC sees no error); write through a client of the other members.
func (m *Member) Pause() { m.signal(syscall.SIGSTOP) }

// Resume SIGCONTs a paused member.
func (m *Member) Resume() { m.signal(syscall.SIGCONT) }

// Running reports whether the member's process is alive (paused counts).
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil
}

// Restart starts a stopped or killed member again on the same ports and
// data dir, and waits (≤ ReadyTimeout) until it answers; when a quorum of
// members is running it also waits until the member knows a leader.
func (m *Member) Restart(t testing.TB) {
	t.Helper()
	if m.Running() {
		t.Fatalf("etcdtest: Restart %s: still running", m.name)
	}
	if err := m.start(); err != nil {
		t.Fatalf("etcdtest: Restart %s: %v", m.name, err)
	}
	running := 0
	for _, o := range m.c.members {
		if o.Running() {
			running++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := m.waitServing(ctx, running > len(m.c.members)/2); err != nil {
		m.c.dumpLogs(t)
		t.Fatalf("etcdtest: Restart %s: %v", m.name, err)
	}
}

// MustLeader is Leader within d, failing t when no member leads by then.
func (c *Cluster) MustLeader(t testing.TB, d time.Duration) *Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	l, err := c.Leader(ctx)
	if err != nil {
		t.Fatalf("etcdtest: no leader within %v: %v", d, err)
	}
	return l
}
