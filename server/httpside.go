package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"time"
)

// httpSide is the HTTP listener: the verify API (httpAPI) behind a
// connection limiter (connLimiter), with every timeout set.
type httpSide struct {
	srv *http.Server
	ln  *connLimiter
	tls *tlsSide // nil: plain HTTP
}

// listenHTTP works out the HTTP side's limits, logs them and binds its
// listener.
func listenHTTP(cfg Config, nofile uint64, log *logSink) (*httpSide, error) {
	maxConns, idle, err := httpLimits(cfg, log, nofile)
	if err != nil {
		return nil, fmt.Errorf("server: http: %w", err)
	}
	fa, err := newFwdAuth(cfg.ForwardAuth)
	if err != nil {
		return nil, fmt.Errorf("server: http: %w", err)
	}
	log.Printf("http: %s", fa.describe())
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("server: http listen: %w", err)
	}
	lim := newConnLimiter(ln, maxConns, log)
	api := &httpAPI{st: cfg.Store, log: log, requireScope: cfg.RequireScope, stale: cfg.Stale, auth: fa, m: cfg.metrics}
	h := &httpSide{srv: newHTTPServer(api, log, idle, lim), ln: lim}
	if h.tls, err = listenTLS(cfg.TLS, h.srv, lim, log); err != nil {
		ln.Close()
		return nil, fmt.Errorf("server: http tls: %w", err)
	}
	return h, nil
}

// serve answers requests until shutdown (then it returns nil).
func (h *httpSide) serve() error {
	serve := h.srv.Serve
	if h.tls != nil {
		serve = h.tls.serve
	}
	if err := serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// shutdown stops accepting and lets requests in flight finish until ctx
// ends; then it closes every connection.
func (h *httpSide) shutdown(ctx context.Context) error {
	err := h.srv.Shutdown(ctx)
	if err != nil {
		_ = h.srv.Close()
	}
	if h.tls != nil {
		h.tls.stop() // after the last handshake: flushes the folded count
	}
	_ = h.ln.Close() // if serve never ran, nothing else closes it
	return err
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

// newHTTPServer returns an http.Server with every timeout set, whose
// connections are counted by lim (nil: not counted).
func newHTTPServer(h http.Handler, log *logSink, idle time.Duration, lim *connLimiter) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          newStdLogger(log, "http: "),
	}
	if lim != nil {
		s.ConnState = lim.connState
	}
	return s
}

// HTTP server limits. Verification is a small request and a small answer,
// so every phase is bounded tightly.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 10 * time.Second
	// httpIdleTimeout is the default for Config.HTTPIdleTimeout: long
	// enough for a gateway's pool to reuse a connection between bursts,
	// short enough that idle connections do not pile up (it was 120 s).
	httpIdleTimeout = 30 * time.Second
	// HTTPMaxHeaderBlock is the most bytes of request line and headers
	// (with their CRLFs and the blank line) a request may have; more is
	// answered 431. net/http reads MaxHeaderBytes plus 4096 bytes of
	// "bufio slop" (Server.initialReadLimitSize) before it refuses, so
	// MaxHeaderBytes is set that much lower to make the limit the
	// documented 16 KiB. TestHTTPHeaderLimit pins it.
	HTTPMaxHeaderBlock = 16 << 10
	httpMaxHeaderBytes = HTTPMaxHeaderBlock - netHTTPHeaderSlack
	netHTTPHeaderSlack = 4096
)

// Connection budget of the HTTP listener (Config.HTTPMaxConns).
const (
	// DefaultHTTPMaxConns is the cap when none is given (lowered to fit
	// the open-files limit). An idle connection costs about 20 KiB, so
	// the cap bounds the HTTP side near 20 MiB and 1024 descriptors.
	DefaultHTTPMaxConns = 1024
	// fdReserve descriptors are kept out of every listener's budget for
	// the database, its lock, the host key, logs and the listeners.
	fdReserve = 256
	// minHTTPConns is the smallest budget serve starts with.
	minHTTPConns = 16
)

// httpConnBudget returns the HTTP connection cap for a requested value (0:
// the default) under an open-files limit nofile (0: unknown). HTTP may
// use at most half of what is left after fdReserve, so an HTTP flood
// cannot take the descriptors the SSH side and the store need. A default
// that does not fit is lowered; a requested value that does not fit is an
// error, as is a limit too low for minHTTPConns.
func httpConnBudget(requested int, nofile uint64) (int, error) {
	if requested < 0 {
		return 0, fmt.Errorf("the HTTP connection cap must be 0 (default) or more, not %d", requested)
	}
	avail := int64(math.MaxInt32)
	if nofile > 0 && nofile < math.MaxInt32 {
		avail = (int64(nofile) - fdReserve) / 2
	}
	if requested == 0 {
		if avail < minHTTPConns {
			return 0, fmt.Errorf("the open-files limit (ulimit -n) is %d; serve needs at least %d (%d for HTTP connections, as many for SSH, %d reserved)",
				nofile, fdReserve+2*minHTTPConns, minHTTPConns, fdReserve)
		}
		return int(min(DefaultHTTPMaxConns, avail)), nil
	}
	if int64(requested) > avail {
		return 0, fmt.Errorf("--http-max-conns %d needs an open-files limit of at least %d (twice the cap, half kept for SSH, plus %d reserved), but it is %d: raise ulimit -n or lower --http-max-conns",
			requested, 2*int64(requested)+fdReserve, fdReserve, nofile)
	}
	return requested, nil
}
