// Package server is `keyward serve`: the SSH listener (one TUI program per
// session) and the HTTP verification API, both over one open store, and
// the online-backup socket beside it.
//
// Start at Server (this file): New, Serve and Shutdown over three parts,
// each with its own listener and shutdown. The SSH side is ssh.go (its
// lifecycle), sshauth.go (who may log in, and while), sshsession.go (the
// TUI program per session), sshchannel.go, sshconn.go and sshlimits.go
// (what a client may cost) and sshlog.go; the HTTP side is httpside.go
// (listener and limits), http.go and body.go (the verify API), auth.go
// (forward auth), connlimit.go and tls.go (HTTPS, the certificate
// reload); the backup socket is backup.go; the Prometheus listener
// (--metrics) and the counters the other parts feed is metrics.go. log.go
// is the one log sink (logjson.go: JSON).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Config configures New and Serve.
type Config struct {
	Store *store.Store
	// SSHAddr and HTTPAddr are listen addresses; empty disables that side.
	SSHAddr  string
	HTTPAddr string
	// HTTPMaxConns caps the HTTP listener's open connections (0:
	// DefaultHTTPMaxConns, lowered to fit the open-files limit). At the
	// cap the longest-idle connection is closed to admit a new one; see
	// connLimiter.
	HTTPMaxConns int
	// HTTPIdleTimeout closes idle keep-alive HTTP connections (0: 30s).
	HTTPIdleTimeout time.Duration
	// RequireScope answers 400 to a verify without a scope, instead of
	// VALID for any live key (authentication only).
	RequireScope bool
	// HostKeyPath is the ed25519 SSH host key, generated once (0600).
	// Empty means HostKeyFile beside the database.
	HostKeyPath string
	// IdleTimeout ends idle SSH sessions (0: default 30m).
	IdleTimeout time.Duration
	// SSHLimits bounds what SSH clients may cost (zero fields: defaults).
	SSHLimits SSHLimits
	// Log receives one sanitised line per event; never key material.
	// Nil means os.Stderr.
	Log io.Writer
	// Ready, if set, is called with the bound addresses once listening.
	Ready func(sshAddr, httpAddr string)
	// BackupSocket, if set, is the unix socket through which `keyward
	// backup` takes a consistent copy while this server holds the database
	// (store.BackupSocketPath; see backup.go). Empty: no online backup.
	BackupSocket string
	// ShutdownTimeout bounds the wait for in-flight HTTP requests and for
	// SSH sessions to end once ctx is cancelled (0: 10s).
	ShutdownTimeout time.Duration
	// LogFormat is LogText (default, "") or LogJSON (logjson.go).
	LogFormat string
	// TLS, when it names a certificate and key, serves the HTTP side
	// over TLS (tls.go).
	TLS HTTPTLS
	// Stale reports whether this node's memory is too old to answer
	// verifications (see stale.go). Nil: Store.Stale. Tests set it to
	// make a bbolt-backed server stale.
	Stale func() error
	// ForwardAuth configures /v1/auth, forward auth for gateways (auth.go).
	ForwardAuth ForwardAuth

	// MetricsAddr, if set, serves GET /metrics (Prometheus) on a listener
	// of its own; empty: no metrics, and none are counted (metrics.go).
	MetricsAddr string
	metrics     *metrics // built by checked when MetricsAddr is set
}

// DefaultShutdownTimeout is used when Config.ShutdownTimeout is 0.
const DefaultShutdownTimeout = 10 * time.Second

// HostKeyFile is the host key's file name beside the database: the one
// default of the project (the CLI has always used it, so an install keeps
// its key).
const HostKeyFile = "ssh_host_ed25519"

// Server is `keyward serve`: up to three parts over one open store, each
// with its own listener and its own shutdown: the SSH side (sshSide, one
// TUI program per session), the HTTP side (httpSide, the verify API) and
// the online-backup socket (backupSide). New binds the listeners, Serve
// runs the parts until its context ends or one of them fails, and
// Shutdown stops them and flushes buffered last-used data.
type Server struct {
	cfg    Config
	log    *logSink
	ssh    *sshSide     // nil: no SSH address
	http   *httpSide    // nil: no HTTP address
	backup *backupSide  // nil: no online backup
	mside  *metricsSide // nil: no metrics listener

	errs     chan error     // what a part's serve loop returned
	running  sync.WaitGroup // the parts' serve loops
	quit     chan struct{}  // closed when Shutdown starts
	shutOnce sync.Once
	shutErr  error
}

// Serve listens until ctx is cancelled, then shuts down gracefully: both
// listeners stop accepting, in-flight HTTP requests finish and SSH
// sessions are asked to end (each bounded by ShutdownTimeout), and
// buffered last-used data is flushed. The caller closes the store.
func Serve(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// New checks cfg, makes sure the shared secret exists, raises the
// open-files limit and binds every listener cfg asks for. The listeners
// accept nothing until Serve; Shutdown releases them either way.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.checked()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: newLogSinkFormat(cfg.Log, cfg.LogFormat), errs: make(chan error, 3), quit: make(chan struct{})}
	if err := s.open(); err != nil {
		s.close()
		s.log.Close()
		return nil, err
	}
	return s, nil
}

// checked refuses a Config that cannot serve and fills its defaults.
func (cfg Config) checked() (Config, error) {
	if cfg.Store == nil {
		return cfg, errors.New("server: no store")
	}
	if cfg.SSHAddr == "" && cfg.HTTPAddr == "" {
		return cfg, errors.New("server: nothing to serve (give an SSH or an HTTP address)")
	}
	if cfg.TLS.enabled() && cfg.HTTPAddr == "" {
		return cfg, errors.New("server: a TLS certificate is given, but the HTTP side is off")
	}
	if err := CheckLogFormat(cfg.LogFormat); err != nil {
		return cfg, fmt.Errorf("server: %w", err)
	}
	if err := cfg.TLS.check(); err != nil {
		return cfg, fmt.Errorf("server: %w", err)
	}
	if cfg.Store.ReadOnly() {
		// Serving writes: logins, last-used times, every change made over
		// SSH. Refuse at start rather than fail on the first of them.
		return cfg, fmt.Errorf("server: database %s is read-only; serve records logins and last-used times, so it needs a writable database", cfg.Store.Path())
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Stale == nil {
		cfg.Stale = cfg.Store.Stale
	}
	if cfg.MetricsAddr != "" {
		cfg.metrics = newMetrics()
	}
	return cfg, nil
}

// open builds the parts and binds their listeners, SSH first.
func (s *Server) open() error {
	if err := ensureSecret(s.cfg.Store); err != nil {
		return fmt.Errorf("server: shared secret: %w", err)
	}
	nofile := openFiles(s.log)
	var err error
	if s.cfg.SSHAddr != "" {
		if s.ssh, err = listenSSH(s.cfg, nofile, s.log); err != nil {
			return err
		}
	}
	if s.cfg.HTTPAddr != "" {
		if s.http, err = listenHTTP(s.cfg, nofile, s.log); err != nil {
			return err
		}
	}
	if m := s.cfg.metrics; m != nil {
		if s.ssh != nil {
			s.ssh.m = m
		}
		if s.mside, err = listenMetrics(s.cfg, m, s.log); err != nil {
			return err
		}
		m.registerServer(s)
	}
	s.backup, err = openBackup(s.cfg, s.log)
	return err
}

// close releases the listeners of a Server that never served.
func (s *Server) close() {
	if s.ssh != nil {
		s.ssh.ln.Close()
	}
	if s.http != nil {
		s.http.ln.Close()
		if s.http.tls != nil {
			s.http.tls.stop()
		}
	}
	if s.mside != nil {
		s.mside.ln.Close()
	}
}

// Serve runs the parts until ctx is cancelled, Shutdown is called, or a
// part stops on its own (an error), then shuts down within
// Config.ShutdownTimeout. It returns the part's error, if any, joined
// with Shutdown's. Call it once.
func (s *Server) Serve(ctx context.Context) error {
	sshAddr, httpAddr := s.start()
	if s.cfg.Ready != nil {
		s.cfg.Ready(sshAddr, httpAddr)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case <-s.quit:
	case serveErr = <-s.errs:
		if serveErr == nil {
			serveErr = errors.New("server: a listener stopped unexpectedly")
		}
		s.log.Printf("server error: %s; shutting down", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.shutdown(sctx, "up to "+s.cfg.ShutdownTimeout.String()); err != nil {
		serveErr = errors.Join(serveErr, err)
	}
	return serveErr
}

// start sets each part's serve loop going and returns the bound addresses.
func (s *Server) start() (sshAddr, httpAddr string) {
	if s.backup != nil {
		go s.backup.serve()
	}
	sw := &staleWatch{stale: s.cfg.Stale, log: s.log}
	sw.check() // a node that starts stale says so before it listens
	go sw.run(s.quit)
	if s.ssh != nil {
		sshAddr = s.ssh.ln.Addr().String()
		s.log.Printf("ssh listening on %s (connect: ssh -p %s OPERATOR@HOST)", sshAddr, port(sshAddr))
		// The lock file tells other keyward commands where to connect:
		// the bound address, so --ssh HOST:0 advertises the real port.
		if err := s.cfg.Store.AdvertiseSSH(sshAddr); err != nil {
			s.log.Printf("warning: lock file: %s", err)
		}
		s.run(s.ssh.serve)
	}
	if s.http != nil {
		httpAddr = s.http.ln.Addr().String()
		s.log.Printf("http listening on %s (POST /v1/keys/verify, GET /healthz)", httpAddr)
		s.run(s.http.serve)
	}
	if s.mside != nil {
		s.log.Printf("metrics listening on %s (GET /metrics)", s.mside.ln.Addr())
		s.run(s.mside.serve)
	}
	return sshAddr, httpAddr
}

// run starts one part's serve loop; what it returns goes to s.errs.
func (s *Server) run(serve func() error) {
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		s.errs <- serve()
	}()
}

// Shutdown stops every part within ctx (see Serve) and flushes buffered
// last-used data; a Serve running returns. It returns the flush error;
// the parts' shutdown errors are logged. Later calls wait for the first
// and return its result.
func (s *Server) Shutdown(ctx context.Context) error {
	wait := "until the context ends"
	if d, ok := ctx.Deadline(); ok {
		wait = "up to " + time.Until(d).Round(time.Millisecond).String()
	}
	return s.shutdown(ctx, wait)
}

func (s *Server) shutdown(ctx context.Context, wait string) error {
	s.shutOnce.Do(func() {
		close(s.quit)
		s.shutErr = s.stop(ctx, wait)
	})
	return s.shutErr
}

// stop shuts the parts down at once, waits for their serve loops, flushes
// last-used data and closes the log.
func (s *Server) stop(ctx context.Context, wait string) error {
	s.log.Printf("shutting down (waiting %s for requests and sessions)", wait)
	var parts sync.WaitGroup
	var httpErr, sshErr, bkErr, metricsErr error
	each := func(errp *error, shutdown func(context.Context) error) {
		parts.Add(1)
		go func() { defer parts.Done(); *errp = shutdown(ctx) }()
	}
	if s.backup != nil {
		each(&bkErr, s.backup.shutdown)
	}
	if s.http != nil {
		each(&httpErr, s.http.shutdown)
	}
	if s.ssh != nil {
		each(&sshErr, s.ssh.shutdown)
	}
	if s.mside != nil {
		each(&metricsErr, s.mside.shutdown)
	}
	parts.Wait()
	s.running.Wait()
	err := s.cfg.Store.FlushLastUsed()
	if err != nil {
		s.log.Printf("flushing last-used: %s", err)
	}
	if s.cfg.metrics != nil {
		s.cfg.Store.ObserveFlushes(nil) // the store outlives this server
	}
	for _, e := range []struct {
		part string
		err  error
	}{{"http", httpErr}, {"ssh", sshErr}, {"backup", bkErr}, {"metrics", metricsErr}} {
		if e.err != nil {
			s.log.Printf("%s shutdown: %s", e.part, e.err)
		}
	}
	s.log.Printf("stopped")
	s.log.Close()
	return err
}

// openFiles raises the open-files limit to the hard limit, logs what it
// became and returns it (0: unknown). Every connection is a descriptor:
// a low soft limit would let one listener's flood starve the other.
func openFiles(log *logSink) uint64 {
	nofile, before, err := raiseOpenFiles()
	switch {
	case err != nil:
		log.Printf("open files limit %d (could not raise the soft limit to the hard one: %s)", nofile, err)
	case nofile != before:
		log.Printf("open files limit %d (raised from %d)", nofile, before)
	case nofile > 0:
		log.Printf("open files limit %d (the hard limit)", nofile)
	}
	return nofile
}

// ensureSecret makes sure HTTP callers have a shared secret to present.
// The generation is audited as the first active ADMIN operator (the store
// attributes every write to an operator).
func ensureSecret(st *store.Store) error {
	if meta, err := st.SecretInfo(); err != nil || meta.Exists {
		return err
	}
	for _, op := range st.Operators() {
		if !op.Disabled && op.Role == model.OperatorAdmin {
			return st.EnsureSecret(op.Name)
		}
	}
	return errors.New("no active ADMIN operator to generate it; run keyward secret rotate")
}

func port(addr string) string {
	if _, p, err := net.SplitHostPort(addr); err == nil {
		return p
	}
	return addr
}
