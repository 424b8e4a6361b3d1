package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prometheus metrics (Config.MetricsAddr, `keyward serve --metrics`).
//
// GET /metrics is served on a listener of its own, never on the verify
// port: the verify port stays exactly the API gateways call, a scraper
// needs no shared secret (which can verify any key and should not sit in
// Prometheus' config), and operators bind it to loopback or a management
// network. It is off unless asked for. The README ("Metrics") lists every
// series.
//
// The verify path pays for metrics only when they are on, and then only
// a few atomic adds: the request count, the code's counter and the latency
// histogram, resolved once at start (no label lookup per request), and two
// clock reads. Error answers are counted where they are written (fail,
// failStale). Everything else (requests in flight, connections, keys by
// status, SSH sessions, the last-used backlog, etcd's lag) is read when
// Prometheus scrapes. With metrics off, httpAPI.m is nil and each hook is
// a nil check. BENCHMARKS.md, "Metrics overhead".

// metricsConns caps the metrics listener's connections: a scraper or two.
const metricsConns = 16

// keyStatusTTL is how long a count of keys by status is reused: counting
// reads every key's entry (0.5 ms per 100k keys), so scrapes,
// however frequent, do it at most once per TTL.
const keyStatusTTL = 15 * time.Second

// Verification endpoints, the values of keyward_verification_duration_seconds'
// endpoint label.
const (
	EndpointVerify = iota // POST /v1/keys/verify
	EndpointAuth          // /v1/auth (forward auth)
	numEndpoints
)

var endpointNames = [numEndpoints]string{"verify", "auth"}

// Reasons of keyward_ssh_logins_refused_total: a fixed set, whatever the
// client sent.
const (
	refusedUnknownKey  = "unknown_key"               // no operator has the key
	refusedOtherKey    = "other_operators_key"       // the key is another operator's
	refusedMaxConns    = "max_conns_per_operator"    // --max-conns-per-operator
	refusedAccess      = "access_denied"             // the operator is disabled, deleted, or the key changed
	refusedNoPTY       = "no_pty"                    // a session without a terminal
	refusedCommand     = "command"                   // a session asking to run a command
	refusedInternal    = "internal"                  // an untracked connection (a bug)
	refusedMaxSessions = "max_sessions_per_operator" // --max-sessions-per-operator
)

// Indexes of metrics.errors.
const (
	errorClass4xx = iota
	errorClass5xx
)

var sshRefusalReasons = []string{refusedUnknownKey, refusedOtherKey, refusedMaxConns, refusedAccess,
	refusedNoPTY, refusedCommand, refusedInternal, refusedMaxSessions}

// latencyBuckets span what a verification costs in the handler: a few µs
// from memory to milliseconds under load or GC.
var latencyBuckets = []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3}

// metrics is one server's registry and the instruments its parts update.
// A nil *metrics is valid: every method is then a no-op (metrics off).
type metrics struct {
	reg *prometheus.Registry

	codes    []prometheus.Counter // keyward_verifications_total, by model.Codes' order
	codeOdd  *prometheus.CounterVec
	latency  [numEndpoints]prometheus.Observer
	auth     *prometheus.CounterVec // keyward_forward_auth_decisions_total{decision,code}
	requests prometheus.Counter
	errors   [2]prometheus.Counter // keyward_http_errors_total{class="4xx"|"5xx"}
	refused  map[string]prometheus.Counter
	flushDur prometheus.Histogram
	flushErr prometheus.Counter

	keysMu   sync.Mutex
	keysAt   time.Time
	keysLast store.KeyStatusCounts
}

// newMetrics registers keyward's instruments and Go's runtime and process
// collectors.
func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), refused: map[string]prometheus.Counter{}}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	codes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_verifications_total",
		Help: "Verifications answered over HTTP (verify API and forward auth), by result code.",
	}, []string{"code"})
	f(codes)
	for _, c := range model.Codes {
		m.codes = append(m.codes, codes.WithLabelValues(string(c)))
	}
	m.codeOdd = codes
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyward_verification_duration_seconds",
		Help:    "Time from a verification request's arrival in the handler to its answer being written, by endpoint.",
		Buckets: latencyBuckets,
	}, []string{"endpoint"})
	f(lat)
	for i, n := range endpointNames {
		m.latency[i] = lat.WithLabelValues(n)
	}
	m.auth = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_forward_auth_decisions_total",
		Help: "Forward-auth answers to gateways: decision allow (2xx), deny (401, 403) or error (anything else), by X-Keyward-Code.",
	}, []string{"decision", "code"})
	f(m.auth)
	m.requests = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyward_http_requests_total",
		Help: "HTTP requests answered by the API handler.",
	})
	f(m.requests)
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_http_errors_total",
		Help: "HTTP requests answered with an error status by the API handler, by class (4xx, 5xx).",
	}, []string{"class"})
	f(errs)
	m.errors = [2]prometheus.Counter{errs.WithLabelValues("4xx"), errs.WithLabelValues("5xx")}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_ssh_logins_refused_total",
		Help: "SSH authentications and sessions refused, by reason.",
	}, []string{"reason"})
	f(refused)
	for _, r := range sshRefusalReasons {
		m.refused[r] = refused.WithLabelValues(r)
	}
	m.flushDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyward_lastused_flush_duration_seconds",
		Help:    "Duration of last-used flushes that wrote records.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 8), // 1 ms .. 16 s
	})
	f(m.flushDur)
	m.flushErr = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyward_lastused_flush_errors_total",
		Help: "Last-used flushes that failed (their records are kept for the next).",
	})
	f(m.flushErr)
	return m
}

// verification counts one verification answered with code on endpoint
// (EndpointVerify, EndpointAuth) and observes its time since start. The
// forward-auth handler calls it for every key it verified.
func (m *metrics) verification(endpoint int, code model.Code, start time.Time) {
	if m == nil {
		return
	}
	m.latency[endpoint].Observe(time.Since(start).Seconds())
	for i, c := range model.Codes {
		if c == code {
			m.codes[i].Inc()
			return
		}
	}
	m.codeOdd.WithLabelValues(labelCode(string(code))).Inc()
}

// authDecision counts one forward-auth answer: status is what the gateway
// gets (2xx allow, 401/403 deny, anything else error), code is its
// X-Keyward-Code. The forward-auth handler calls it once per answer.
func (m *metrics) authDecision(code string, status int) {
	if m == nil {
		return
	}
	decision := "error"
	switch {
	case status >= 200 && status < 300:
		decision = "allow"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		decision = "deny"
	}
	m.auth.WithLabelValues(decision, labelCode(code)).Inc()
}

// labelCode bounds a code label: codes are upper-case words of keyward's
// own; anything else (empty, or not such a word) is counted as OTHER.
func labelCode(code string) string {
	if code == "" || len(code) > 40 {
		return "OTHER"
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; (c < 'A' || c > 'Z') && c != '_' {
			return "OTHER"
		}
	}
	return code
}

// sshRefused counts one refused SSH login or session (reason: one of the
// refused* constants).
func (m *metrics) sshRefused(reason string) {
	if m == nil {
		return
	}
	if c, ok := m.refused[reason]; ok {
		c.Inc()
	}
}

// observeFlush is the store's FlushObserver.
func (m *metrics) observeFlush(d time.Duration, _ int, err error) {
	m.flushDur.Observe(d.Seconds())
	if err != nil {
		m.flushErr.Inc()
	}
}

// request counts one request reaching the API handler.
func (m *metrics) request() {
	if m != nil {
		m.requests.Inc()
	}
}

// httpError counts one error answer of the API handler by class (4xx,
// 5xx). Every error answer goes through httpAPI.fail or failStale, which
// call it; an endpoint that answers errors otherwise must call it too.
func (m *metrics) httpError(status int) {
	switch {
	case m == nil:
	case status >= 500:
		m.errors[errorClass5xx].Inc()
	case status >= 400:
		m.errors[errorClass4xx].Inc()
	}
}

// activeConns counts the connections with a request in progress (net/http's
// StateActive, kept by the ConnState hook): requests in flight, read when
// Prometheus scrapes rather than counted on every request.
func (l *connLimiter) activeConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if http.ConnState(c.state.Load()) == http.StateActive {
			n++
		}
	}
	return n
}

// registerServer adds the series read at scrape time from the server's
// parts: keys by status, SSH sessions, the last-used backlog, staleness
// and, on etcd, the watch's progress. It also makes the store report its
// flushes.
func (m *metrics) registerServer(s *Server) {
	st := s.cfg.Store
	st.ObserveFlushes(m.observeFlush)
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_lastused_backlog",
		Help: "Keys whose last-used record waits in memory for the next flush.",
	}, func() float64 { return float64(st.LastUsedBacklog()) }))
	f(&keyStatusCollector{m: m, st: st, desc: prometheus.NewDesc("keyward_keys",
		fmt.Sprintf("Keys by status (active, disabled, expired: active but past expiry); counted at most every %s.", keyStatusTTL),
		[]string{"status"}, nil)})
	stale := s.cfg.Stale
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_stale",
		Help: "1 while this node answers verifications with 503 because its memory may be out of date (etcd), else 0.",
	}, func() float64 {
		if stale() != nil {
			return 1
		}
		return 0
	}))
	if s.http != nil {
		ln := s.http.ln
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyward_http_requests_in_flight",
			Help: "HTTP requests in progress on the API listener (connections with a request being read or answered).",
		}, func() float64 { return float64(ln.activeConns()) }))
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyward_http_connections",
			Help: "Open connections on the API listener (at most --http-max-conns).",
		}, func() float64 { return float64(ln.open()) }))
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_ssh_sessions",
		Help: "SSH TUI sessions open.",
	}, func() float64 {
		if s.ssh == nil {
			return 0
		}
		s.ssh.mu.Lock()
		defer s.ssh.mu.Unlock()
		return float64(len(s.ssh.live))
	}))
	if st.Backend() != "etcd" {
		return
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_etcd_sync_lag_seconds",
		Help: "Seconds since etcd last spoke to this node (a watch event or progress mark).",
	}, func() float64 { return st.SinceHeard().Seconds() }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keyward_etcd_applied_revision",
		Help: "The etcd revision this node's memory reflects.",
	}, func() float64 { return float64(st.Applied()) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "keyward_etcd_relists_total",
		Help: "Times this node re-read the whole key space (its watch was compacted away or broke).",
	}, func() float64 { return float64(st.Relists()) }))
}

// keyStatusCollector reports keyward_keys{status}, counting again at most
// every keyStatusTTL.
type keyStatusCollector struct {
	m    *metrics
	st   *store.Store
	desc *prometheus.Desc
}

func (c *keyStatusCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keyStatusCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.m.keyCounts(c.st)
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n.Active), "active")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n.Disabled), "disabled")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n.Expired), "expired")
}

// keyCounts returns the cached count, counting again once it is
// keyStatusTTL old. Concurrent scrapes wait for one count.
func (m *metrics) keyCounts(st *store.Store) store.KeyStatusCounts {
	m.keysMu.Lock()
	defer m.keysMu.Unlock()
	if now := time.Now(); m.keysAt.IsZero() || now.Sub(m.keysAt) >= keyStatusTTL {
		m.keysLast, m.keysAt = st.CountKeyStatus(st.Now()), now
	}
	return m.keysLast
}

// metricsSide is the metrics listener: GET /metrics and nothing else.
type metricsSide struct {
	srv *http.Server
	ln  *connLimiter
}

// listenMetrics binds the metrics listener.
func listenMetrics(cfg Config, m *metrics, log *logSink) (*metricsSide, error) {
	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("server: metrics listen: %w", err)
	}
	prom := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            newStdLogger(log, "metrics: "),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             httpWriteTimeout - time.Second,
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", prom)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such endpoint; use GET /metrics", http.StatusNotFound)
	})
	lim := newConnLimiter(ln, metricsConns, log)
	return &metricsSide{srv: newHTTPServer(mux, log, httpIdleTimeout, lim), ln: lim}, nil
}

func (ms *metricsSide) serve() error {
	if err := ms.srv.Serve(ms.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (ms *metricsSide) shutdown(ctx context.Context) error {
	err := ms.srv.Shutdown(ctx)
	if err != nil {
		_ = ms.srv.Close()
	}
	_ = ms.ln.Close()
	return err
}
