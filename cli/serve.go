package cli

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward/server"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// serveLong is serve's --help text.
const serveLong = `Serve until interrupted (SIGINT or SIGTERM):

  --ssh   the TUI over SSH, one session per operator, authenticated by the
          operators' registered public keys (keyward operators add --key)
  --http  POST /v1/keys/verify with "Authorization: Bearer <shared secret>",
          and GET /healthz

An empty address turns that side off. The SSH host key is generated once,
by default beside the database. While serving, this process holds the
database: other keyward commands on it report it as in use, with the
"ssh -p PORT OPERATOR@HOST" to use instead (the bound port). keyward backup
still works: serve hands it a consistent copy through the unix socket
<db>.sock (0600; only processes of this user are served).
Logs go to stderr.

--procs sets how many threads run Go code at once (GOMAXPROCS). By default
serve uses the CPU count but at least 4, even on a 1- or 2-CPU machine: a
commit's fsync holds one of them while it waits for the disk, and with
only 2 the verify API loses half its capacity during every admin write.
The price: while verifies saturate the CPUs, admin writes are slower.
A GOMAXPROCS environment variable is kept unless --procs is given.

SSH limits (what one client may cost; see README, "SSH limits"):
  --login-grace           a connection with no open session is closed after
                          this long: from connect to the first session, and
                          again after its last session ends
  --max-startups          connections not yet logged in, in total; at the
                          cap the one that has sent least is dropped
  --max-startups-per-source  the same, per source (IPv4 address, IPv6 /64)
  --max-conns-per-operator   logged-in connections of one operator
  --max-sessions-per-operator  TUI sessions of one operator
  --max-channels-per-conn  channels open at once on one connection
  --max-term-size         larger terminal sizes (COLSxROWS) are clamped
--max-startups is lowered to a quarter of the open-file limit if higher.

HTTP limits: at most --http-max-conns connections are open at once (by
default 1024, lowered to fit the open-files limit, which serve raises to
the hard limit at start; HTTP never takes more than half of it). At the
cap, the connection idle the longest is closed to admit a new one, so a
flood of idle connections cannot lock callers or /healthz out; only when
every connection is in the middle of a request is a new one answered 503.
Idle keep-alive connections are closed after --http-idle-timeout.
Request line and headers may total 16 KiB (431 above), bodies 64 KiB.
Without --require-scope, a verify that names no scope is VALID for any
live key: it authenticates the key and says nothing about what it may do.

On etcd (--etcd), serve answers from memory, kept current by a watch on
the cluster. When this node has heard nothing from etcd for
--max-staleness (default 15s), it fails closed: POST /v1/keys/verify and
GET /healthz answer 503 with {"error":"stale",...} and Retry-After, so a
load balancer drains the node; it recovers by itself once etcd answers.
The host key's default is then ~/.config/keyward/` + server.HostKeyFile + `
(beside the master key), one per node; there is no backup socket (keyward
--etcd ... backup reads the cluster).

--metrics ADDR serves GET /metrics in the Prometheus text format on a
listener of its own (off by default): verifications by code, their
latency, forward-auth decisions, HTTP in flight and errors, SSH sessions
and refused logins, keys by status, last-used flushes and, on etcd, the
sync lag. It asks for no secret: bind it to loopback or a management
network (README, "Metrics").` + serveAuthHelp + serveTLSLong

// serveOptions are serve's flags.
type serveOptions struct {
	sshAddr, httpAddr, hostKey string
	idle, flush, httpIdle      time.Duration
	maxStale                   time.Duration
	procs, httpMaxConns        int
	requireScope               bool
	lim                        server.SSHLimits
	termSize                   string
	auth                       authFlags // forward auth (serveauth.go)
	authCfg                    server.ForwardAuth
	tls                        serveTLSFlags // serve_tls.go
	metricsAddr                string        // --metrics (see registerMetrics)
}

func (a *app) serveCmd() *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the TUI over SSH and the verification API over HTTP",
		Long:  serveLong,
		Example: `  keyward serve
  keyward serve --ssh 0.0.0.0:2222 --http ""
  keyward serve --http 127.0.0.1:9000 --idle-timeout 10m`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			return o.tls.jsonStderr(a, func() error { return a.serve(cmd, &o) })
		},
	}
	o.register(c.Flags())
	return c
}

func (o *serveOptions) register(fl *pflag.FlagSet) {
	fl.StringVar(&o.sshAddr, "ssh", "127.0.0.1:2222", `SSH listen address ("" turns SSH off)`)
	fl.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", `HTTP listen address ("" turns HTTP off)`)
	fl.DurationVar(&o.idle, "idle-timeout", 30*time.Minute, "end SSH sessions idle this long")
	fl.StringVar(&o.hostKey, "host-key", "", "SSH host key file (default: "+server.HostKeyFile+" beside the database)")
	fl.DurationVar(&o.flush, "flush-interval", 10*time.Second, "how often last-used times are written")
	fl.IntVar(&o.procs, "procs", 0, "GOMAXPROCS for the server (0: the CPU count, but at least 4)")
	fl.DurationVar(&o.lim.LoginGrace, "login-grace", server.DefaultLoginGrace, "close SSH connections with no open session after this long (from connect, and after the last session)")
	fl.IntVar(&o.lim.MaxStartups, "max-startups", server.DefaultMaxStartups, "SSH connections not yet logged in, in total")
	fl.IntVar(&o.lim.MaxStartupsPerSource, "max-startups-per-source", server.DefaultMaxStartupsPerSource, "SSH connections not yet logged in, per source (IPv4 address, IPv6 /64)")
	fl.IntVar(&o.lim.MaxConnsPerOperator, "max-conns-per-operator", server.DefaultMaxConnsPerOperator, "logged-in SSH connections per operator")
	fl.IntVar(&o.lim.MaxSessionsPerOperator, "max-sessions-per-operator", server.DefaultMaxSessionsPerOperator, "SSH TUI sessions per operator")
	fl.IntVar(&o.lim.MaxChannelsPerConn, "max-channels-per-conn", server.DefaultMaxChannelsPerConn, "channels open at once on one SSH connection")
	fl.StringVar(&o.termSize, "max-term-size", fmt.Sprintf("%dx%d", server.DefaultMaxTermWidth, server.DefaultMaxTermHeight), "largest terminal COLSxROWS an SSH client may claim (larger is clamped)")
	fl.IntVar(&o.httpMaxConns, "http-max-conns", 0, "most open HTTP connections; at the cap the longest idle is closed (0: 1024, lowered to fit ulimit -n)")
	fl.DurationVar(&o.httpIdle, "http-idle-timeout", 30*time.Second, "close idle HTTP keep-alive connections after this long")
	fl.DurationVar(&o.maxStale, "max-staleness", store.DefaultMaxStaleness, "with --etcd: answer verify and /healthz with 503 after this long without word from the cluster")
	fl.BoolVar(&o.requireScope, "require-scope", false, `answer 400 to a verify without "scope" (default: such a verify only authenticates the key)`)
	o.auth.register(fl)
	o.tls.register(fl)
	o.registerMetrics(fl)
}

// registerMetrics adds --metrics: Prometheus metrics on a listener of
// their own, off by default (README, "Metrics").
func (o *serveOptions) registerMetrics(fl *pflag.FlagSet) {
	fl.StringVar(&o.metricsAddr, "metrics", "", `serve GET /metrics (Prometheus) on this address, apart from --http; no shared secret, so bind it to loopback or a management network ("": off)`)
}

// check validates the flags, before anything is opened or listened on.
func (o *serveOptions) check() error {
	if o.sshAddr == "" && o.httpAddr == "" {
		return usageErrorf("both --ssh and --http are off; nothing to serve")
	}
	if o.metricsAddr != "" && (o.metricsAddr == o.httpAddr || o.metricsAddr == o.sshAddr) {
		return usageErrorf("--metrics %s is also the --http or --ssh address; give metrics a port of its own", o.metricsAddr)
	}
	if o.procs < 0 {
		return usageErrorf("--procs must be 0 (automatic) or more")
	}
	if err := checkSSHLimits(&o.lim, o.termSize); err != nil {
		return err
	}
	if o.httpMaxConns < 0 {
		return usageErrorf("--http-max-conns must be 0 (automatic) or more")
	}
	if o.httpIdle < time.Second {
		return usageErrorf("--http-idle-timeout must be at least 1s")
	}
	if o.maxStale <= 0 {
		return usageErrorf("--max-staleness must be positive (got %s)", o.maxStale)
	}
	var err error
	if o.authCfg, err = o.auth.config(); err != nil {
		return err
	}
	return o.tls.check(o.httpAddr)
}

// serve holds the database and serves until SIGINT or SIGTERM.
func (a *app) serve(cmd *cobra.Command, o *serveOptions) error {
	hostKey := o.hostKey
	if hostKey == "" {
		dir := filepath.Dir(a.dbPath)
		if a.etcdCfg != nil { // each node its own key, beside the master key
			dir = filepath.Dir(a.etcdf.masterKey)
		}
		hostKey = filepath.Join(dir, server.HostKeyFile)
	}
	cur := runtime.GOMAXPROCS(0)
	if n := serveProcs(o.procs, a.getenv("GOMAXPROCS"), cur); n != cur {
		runtime.GOMAXPROCS(n)
	}
	tune := func(so *store.Options) {
		// The SSH address goes into the lock file once it is
		// bound (server.Serve), with the real port.
		so.FlushInterval = o.flush
		so.Lean = true // see store/slots.go: the verify path's heap is pointer-free
		so.MaxStaleness = o.maxStale
	}
	return a.withStore(cmd, tune, func(st *store.Store) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		cfg := server.Config{
			Store:        st,
			BackupSocket: a.backupSocket(),
			SSHAddr:      o.sshAddr,
			HTTPAddr:     o.httpAddr,
			HostKeyPath:  hostKey,
			IdleTimeout:  o.idle,
			SSHLimits:    o.lim,
			Log:          a.stderr, // the server logs where it listens

			HTTPMaxConns:    o.httpMaxConns,
			HTTPIdleTimeout: o.httpIdle,
			RequireScope:    o.requireScope,
			ForwardAuth:     o.authCfg,

			MetricsAddr: o.metricsAddr,
		}
		o.tls.apply(&cfg)
		return server.Serve(ctx, cfg)
	})
}

// checkSSHLimits validates serve's SSH limit flags and parses
// --max-term-size into lim.
func checkSSHLimits(lim *server.SSHLimits, termSize string) error {
	if lim.LoginGrace <= 0 {
		return usageErrorf("--login-grace must be positive")
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"--max-startups", lim.MaxStartups}, {"--max-startups-per-source", lim.MaxStartupsPerSource},
		{"--max-conns-per-operator", lim.MaxConnsPerOperator}, {"--max-sessions-per-operator", lim.MaxSessionsPerOperator},
		{"--max-channels-per-conn", lim.MaxChannelsPerConn},
	} {
		if f.v < 1 {
			return usageErrorf("%s must be at least 1", f.name)
		}
	}
	w, h, ok := strings.Cut(strings.ToLower(termSize), "x")
	cols, err1 := strconv.Atoi(w)
	rows, err2 := strconv.Atoi(h)
	if !ok || err1 != nil || err2 != nil || cols < 20 || rows < 5 || cols > 10000 || rows > 10000 {
		return usageErrorf("--max-term-size must be COLSxROWS, 20x5 to 10000x10000 (got %q)", termSize)
	}
	lim.MaxTermWidth, lim.MaxTermHeight = cols, rows
	return nil
}

// serveMinProcs is serve's default floor for GOMAXPROCS. A goroutine in a
// disk syscall (bbolt's fdatasync on every commit) keeps its P until
// sysmon takes it back, up to 10 ms later. On 2 CPUs with GOMAXPROCS=2,
// that cut verify throughput by up to half during admin writes, and p99
// rose up to 4.3× idle. With 4 Ps it stayed within 0.8–1.4× idle, and verify
// vs bare was no worse. The cost is slower admin writes while verifies
// saturate the CPUs. BENCHMARKS.md, section "Reads during writes".
const serveMinProcs = 4

// serveProcs returns the GOMAXPROCS serve runs with: flag if set, else the
// current value when the GOMAXPROCS environment variable chose it, else the
// current value (the CPU count) raised to serveMinProcs.
func serveProcs(flag int, env string, cur int) int {
	switch {
	case flag > 0:
		return flag
	case env != "":
		return cur
	}
	return max(cur, serveMinProcs)
}
