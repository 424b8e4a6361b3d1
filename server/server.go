// Package server is `keyward serve`: the SSH listener (one TUI program per
// session) and the HTTP verification API, both over one open store.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Config configures Serve.
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
}

// DefaultShutdownTimeout is used when Config.ShutdownTimeout is 0.
const DefaultShutdownTimeout = 10 * time.Second

// HostKeyFile is the host key's file name beside the database: the one
// default of the project (the CLI has always used it, so an install keeps
// its key).
const HostKeyFile = "ssh_host_ed25519"

// Serve listens until ctx is cancelled, then shuts down gracefully: both
// listeners stop accepting, in-flight HTTP requests finish and SSH
// sessions are asked to end (each bounded by ShutdownTimeout), and
// buffered last-used data is flushed. The caller closes the store.
func Serve(ctx context.Context, cfg Config) error {
	if cfg.Store == nil {
		return errors.New("server: no store")
	}
	if cfg.SSHAddr == "" && cfg.HTTPAddr == "" {
		return errors.New("server: nothing to serve (give an SSH or an HTTP address)")
	}
	if cfg.Store.ReadOnly() {
		// Serving writes: logins, last-used times, every change made over
		// SSH. Refuse at start rather than fail on the first of them.
		return fmt.Errorf("server: database %s is read-only; serve records logins and last-used times, so it needs a writable database", cfg.Store.Path())
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	log := newLogSink(cfg.Log)
	defer log.Close()

	if err := ensureSecret(cfg.Store); err != nil {
		return fmt.Errorf("server: shared secret: %w", err)
	}
	nofile := openFiles(log)

	var (
		sshLn, httpLn net.Listener
		sshS          *sshSide
		httpS         *http.Server
		err           error
	)
	closeAll := func() {
		if sshLn != nil {
			sshLn.Close()
		}
		if httpLn != nil {
			httpLn.Close()
		}
	}
	if cfg.SSHAddr != "" {
		path := cfg.HostKeyPath
		if path == "" {
			path = filepath.Join(filepath.Dir(cfg.Store.Path()), HostKeyFile)
		}
		signer, created, err := loadOrCreateHostKey(path, func(w string) { log.Printf("warning: %s", w) })
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		verb := "loaded"
		if created {
			verb = "generated"
		}
		log.Printf("ssh host key %s %s (%s)", gossh.FingerprintSHA256(signer.PublicKey()), path, verb)
		if sshS, err = newSSHSide(cfg.Store, signer, cfg.IdleTimeout, cfg.SSHLimits, nofile, log); err != nil {
			return fmt.Errorf("server: ssh: %w", err)
		}
		if sshLn, err = net.Listen("tcp", cfg.SSHAddr); err != nil {
			return fmt.Errorf("server: ssh listen: %w", err)
		}
	}
	if cfg.HTTPAddr != "" {
		maxConns, idle, lerr := httpLimits(cfg, log, nofile)
		if lerr != nil {
			closeAll()
			return fmt.Errorf("server: http: %w", lerr)
		}
		if httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			closeAll()
			return fmt.Errorf("server: http listen: %w", err)
		}
		lim := newConnLimiter(httpLn, maxConns, log)
		httpLn = lim
		httpS = newHTTPServer(&httpAPI{st: cfg.Store, log: log, requireScope: cfg.RequireScope}, log, idle, lim)
	}

	var bk *backupSide
	switch {
	case cfg.BackupSocket == "":
	case !backupSupported:
		log.Printf("online backup: not offered on this OS (no peer credentials); stop the server to back up")
	case len(cfg.BackupSocket) > maxSocketPath:
		log.Printf("warning: online backup: not offered: the socket path %s is longer than the %d bytes a unix socket allows; use a shorter --db path, or stop the server to back up", cfg.BackupSocket, maxSocketPath)
	default:
		if bk, err = listenBackup(cfg.BackupSocket, cfg.Store, log); err != nil {
			closeAll()
			return fmt.Errorf("server: backup socket: %w", err)
		}
		log.Printf("backup socket %s (keyward backup FILE works while serving)", cfg.BackupSocket)
	}

	var sshAddr, httpAddr string
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	if bk != nil {
		go bk.serve()
	}
	if sshLn != nil {
		sshAddr = sshLn.Addr().String()
		log.Printf("ssh listening on %s (connect: ssh -p %s OPERATOR@HOST)", sshAddr, port(sshAddr))
		// The lock file tells other keyward commands where to connect:
		// the bound address, so --ssh HOST:0 advertises the real port.
		if err := cfg.Store.AdvertiseSSH(sshAddr); err != nil {
			log.Printf("warning: lock file: %s", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- sshS.serve(sshLn) }()
	}
	if httpLn != nil {
		httpAddr = httpLn.Addr().String()
		log.Printf("http listening on %s (POST /v1/keys/verify, GET /healthz)", httpAddr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := httpS.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- err
				return
			}
			errs <- nil
		}()
	}
	if cfg.Ready != nil {
		cfg.Ready(sshAddr, httpAddr)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
		if serveErr == nil {
			serveErr = errors.New("server: a listener stopped unexpectedly")
		}
		log.Printf("server error: %s; shutting down", serveErr)
	}

	log.Printf("shutting down (waiting up to %s for requests and sessions)", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	var shut sync.WaitGroup
	var httpErr, sshErr, bkErr error
	if bk != nil {
		shut.Add(1)
		go func() { defer shut.Done(); bkErr = bk.shutdown(sctx) }()
	}
	if httpS != nil {
		shut.Add(1)
		go func() {
			defer shut.Done()
			if httpErr = httpS.Shutdown(sctx); httpErr != nil {
				_ = httpS.Close()
			}
		}()
	}
	if sshS != nil {
		shut.Add(1)
		go func() { defer shut.Done(); sshErr = sshS.shutdown(sctx) }()
	}
	shut.Wait()
	wg.Wait()
	if err := cfg.Store.FlushLastUsed(); err != nil {
		log.Printf("flushing last-used: %s", err)
		serveErr = errors.Join(serveErr, err)
	}
	if httpErr != nil {
		log.Printf("http shutdown: %s", httpErr)
	}
	if sshErr != nil {
		log.Printf("ssh shutdown: %s", sshErr)
	}
	if bkErr != nil {
		log.Printf("backup shutdown: %s", bkErr)
	}
	log.Printf("stopped")
	return serveErr
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

// httpLimits returns the HTTP side's connection cap and idle timeout, and
// logs them.
func httpLimits(cfg Config, log *logSink, nofile uint64) (int, time.Duration, error) {
	maxConns, err := httpConnBudget(cfg.HTTPMaxConns, nofile)
	if err != nil {
		return 0, 0, err
	}
	idle := cfg.HTTPIdleTimeout
	if idle <= 0 {
		idle = httpIdleTimeout
	}
	scope := "a verify without a scope authenticates the key only"
	if cfg.RequireScope {
		scope = "a verify must name a scope"
	}
	log.Printf("http: at most %d connections (the longest idle is closed for a new one), idle keep-alive %s, headers %d KiB; %s",
		maxConns, idle, HTTPMaxHeaderBlock>>10, scope)
	return maxConns, idle, nil
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
