package server

import (
	"net/http"
	"sync/atomic"
	"time"
)

// Failing closed on a stale node (etcd).
//
// A node on etcd answers from memory that a watch keeps current. When it
// has not heard from the cluster for --max-staleness (store.Stale), its
// memory may miss a disable or a delete, so it answers no verification:
// POST /v1/keys/verify and GET /healthz answer 503 with
//
//	{"error":"stale","detail":"<why>"}
//
// and Retry-After, so a load balancer that checks /healthz drains the
// node, and a caller retries elsewhere. The check is done on every
// request; it costs an atomic load and a clock read on etcd, and nothing
// on a bbolt file (BenchmarkStaleGate). The node recovers by itself: the
// next request after the store is current again is answered.
//
// SSH sessions stay open on a stale node: they show what memory holds,
// and every change they make fails with the store's error (etcd is not
// reachable), which the TUI shows.

// staleRetryAfter is the Retry-After of a stale answer, in seconds: about
// how often a node retries the cluster.
var staleRetryAfter = []string{"5"}

// staleWatchInterval is how often the server looks at Stale to log the
// node going stale and coming back (once each).
const staleWatchInterval = time.Second

// failStale answers 503 with {"error":"stale","detail":...} and logs the
// request as fail does.
func (a *httpAPI) failStale(w http.ResponseWriter, r *http.Request, err error) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["X-Content-Type-Options"] = hdrNoSniff
	h["Retry-After"] = staleRetryAfter
	w.WriteHeader(http.StatusServiceUnavailable)
	a.m.httpError(http.StatusServiceUnavailable)
	if r.Method != http.MethodHead {
		bp := bufPool.Get().(*[]byte)
		b := append((*bp)[:0], `{"error":"stale","detail":`...)
		b = appendJSONString(b, truncUTF8(err.Error(), 512))
		b = append(b, "}\n"...)
		_, _ = w.Write(b)
		*bp = b
		putBuf(bp)
	}
	lp := a.log.line()
	b := append(*lp, "http "...)
	b = append(b, safeField(r.Method)...)
	b = append(b, ' ')
	b = append(b, safeField(truncUTF8(r.URL.Path, 128))...)
	b = append(b, " status=503 stale from="...)
	b = appendSafe(b, remoteIP(r.RemoteAddr))
	*lp = b
	a.log.send(lp)
}

// staleWatch logs the node going stale and coming back, once each, while
// the server runs (until quit closes).
type staleWatch struct {
	stale func() error
	log   *logSink
	was   atomic.Bool
}

func (s *staleWatch) run(quit <-chan struct{}) {
	t := time.NewTicker(staleWatchInterval)
	defer t.Stop()
	for {
		s.check()
		select {
		case <-quit:
			return
		case <-t.C:
		}
	}
}

// check logs a change of state since the last check.
func (s *staleWatch) check() {
	err := s.stale()
	if now := err != nil; s.was.Swap(now) != now {
		if now {
			s.log.Printf("stale: %s; answering verify and /healthz with 503 until etcd is heard from again", err)
		} else {
			s.log.Printf("in touch with etcd again; answering verify and /healthz")
		}
	}
}
