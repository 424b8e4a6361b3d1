package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// connLimiter caps how many connections the HTTP listener holds open.
//
// At the cap, a new connection is not queued (netutil.LimitListener blocks
// Accept, so a caller would wait in the kernel's backlog until some flood
// connection times out) and not simply refused (then whoever holds the
// slots, idle or not, keeps them). Instead the limiter closes the
// connection that has been idle the longest: a keep-alive connection
// between requests, or one that has sent no complete request header for
// staleNew (net/http's own Shutdown treats such connections as idle too).
// A legitimate client loses nothing but a reconnect; a flood of idle
// connections only ever evicts itself. Only when every slot is busy with
// a request is the new connection answered 503 and closed at once.
//
// Requests in progress are never closed. The one race is the one every
// keep-alive server has with its idle timeout: a request whose first bytes
// arrive just as its idle connection is evicted.
type connLimiter struct {
	net.Listener
	max int
	log *logSink
	tls bool // the server speaks TLS on these connections

	mu    sync.Mutex
	conns map[*limitedConn]struct{}

	// seq orders connections by when they became idle (or were
	// accepted): cheaper than reading the clock twice per request.
	seq              atomic.Int64
	evicted, refused atomic.Int64 // since the last log line
	lastLog          atomic.Int64 // unix nanoseconds
}

// staleNew is how long a connection may stay without a complete request
// header before the limiter may evict it like an idle one. A real client
// sends its request right after connecting.
const staleNew = time.Second

func newConnLimiter(ln net.Listener, max int, log *logSink) *connLimiter {
	return &connLimiter{Listener: ln, max: max, log: log, conns: make(map[*limitedConn]struct{}, min(max, 4096))}
}

// limitedConn is one counted connection. state and since are written by
// the server's ConnState hook (atomics: the hook runs twice per request).
type limitedConn struct {
	net.Conn
	l      *connLimiter
	born   int64        // unix nanoseconds when accepted
	state  atomic.Int32 // http.ConnState
	since  atomic.Int64 // l.seq when it became idle or was accepted
	closed atomic.Bool
}

func (c *limitedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	}
	return c.Conn.Close()
}

// CloseWrite lets net/http half-close after an error answer (431, 400) and
// drain, so the client reads the answer instead of a reset.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connState is the http.Server's ConnState hook.
func (l *connLimiter) connState(nc net.Conn, st http.ConnState) {
	if tc, ok := nc.(*tls.Conn); ok { // ServeTLS wraps the accepted conn
		nc = tc.NetConn()
	}
	c, ok := nc.(*limitedConn)
	if !ok {
		return
	}
	if st == http.StateIdle {
		c.since.Store(l.seq.Add(1))
	}
	c.state.Store(int32(st))
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		now := time.Now().UnixNano()
		c := &limitedConn{Conn: nc, l: l, born: now}
		c.state.Store(int32(http.StateNew))
		c.since.Store(l.seq.Add(1))
		if l.admit(c, now) {
			return c, nil
		}
		if l.tls {
			nc.Close() // a plain-text 503 would be garbage to a TLS client
		} else {
			refuse503(nc)
		}
		l.refused.Add(1)
		l.note(now)
	}
}

// admit counts c in, evicting the longest-idle connection when at the cap.
// It reports false when every slot is busy with a request.
func (l *connLimiter) admit(c *limitedConn, now int64) bool {
	l.mu.Lock()
	var victim *limitedConn
	if len(l.conns) >= l.max {
		oldest := int64(0)
		for o := range l.conns {
			since := o.since.Load()
			switch http.ConnState(o.state.Load()) {
			case http.StateIdle:
			case http.StateNew:
				if now-o.born < int64(staleNew) {
					continue
				}
			default:
				continue
			}
			if victim == nil || since < oldest {
				victim, oldest = o, since
			}
		}
		if victim == nil {
			l.mu.Unlock()
			return false
		}
		if victim.closed.CompareAndSwap(false, true) {
			delete(l.conns, victim)
		}
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	if victim != nil {
		victim.Conn.Close() // net/http's read fails and its goroutine ends
		l.evicted.Add(1)
		l.note(now)
	}
	return true
}

// open returns how many connections are counted now.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// note logs, at most once a second, how many connections the cap evicted
// or refused since the last line (a flood must not flood the log too).
func (l *connLimiter) note(now int64) {
	last := l.lastLog.Load()
	if now-last < int64(time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.log.Printf("http: at the connection cap (%d, --http-max-conns): closed %d idle connections, refused %d busy-time connections with 503",
		l.max, l.evicted.Swap(0), l.refused.Swap(0))
}

var busyAnswer = func() []byte {
	body := `{"error":"too many connections in progress; retry (--http-max-conns)"}` + "\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n" +
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

// refuse503 answers 503 on a fresh connection and closes it. The answer fits
// an empty socket buffer, so the write does not wait; the deadline is a
// guard.
func refuse503(nc net.Conn) {
	_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = nc.Write(busyAnswer)
	_ = nc.Close()
}
