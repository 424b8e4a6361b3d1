package server

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/charmbracelet/ssh"
)

type connState int

const (
	connPending connState = iota // accepted, not authenticated
	connAuthed
	connClosed
)

// connTracker admits, counts and expires SSH connections.
type connTracker struct {
	lim  SSHLimits
	log  *foldLog
	mu   sync.Mutex
	pend map[string][]*trackedConn // pending connections by source address, oldest first
	npen int
	ops  map[string]int // authenticated connections per operator
	sess map[string]int // live sessions per operator
	all  map[*trackedConn]struct{}
}

func newConnTracker(lim SSHLimits, log *foldLog) *connTracker {
	return &connTracker{lim: lim, log: log, pend: map[string][]*trackedConn{}, ops: map[string]int{}, sess: map[string]int{}, all: map[*trackedConn]struct{}{}}
}

// trackedConn is one accepted SSH connection. Close releases its counts.
type trackedConn struct {
	net.Conn
	t        *connTracker
	src      string
	accepted time.Time
	rx       atomic.Int64 // bytes received: progress, for choosing whom to drop
	timer    *time.Timer  // the grace timer; runs while no session is open
	once     sync.Once

	// guarded by t.mu
	state    connState
	op       string
	sessions int
	channels int
	refused  int
	loggedIn bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rx.Add(int64(n))
	return n, err
}

// sent is how many bytes the client has sent: read, plus still queued.
func (c *trackedConn) sent() int64 { return c.rx.Load() + unreadBytes(c.Conn) }

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.timer.Stop()
		c.t.release(c)
	})
	return c.Conn.Close()
}

// sourceOf is the source a connection counts against: its IPv4 address,
// or its IPv6 /64 (one host can hold a whole /64).
func sourceOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ta.IP.To4() == nil && len(ta.IP) == net.IPv6len {
			return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
		}
		return ta.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// admit registers a new connection, first dropping a pending one if a
// cap is reached: the per-source cap drops from the same source, the
// total cap from the source with the most pending connections; the one
// dropped is the one that has sent the fewest bytes, the oldest among
// equals. The newcomer always gets its grace period.
func (t *connTracker) admit(nc net.Conn) *trackedConn {
	c := &trackedConn{Conn: nc, t: t, src: sourceOf(nc.RemoteAddr()), accepted: time.Now()}
	var victim *trackedConn
	var why string
	t.mu.Lock()
	switch {
	case len(t.pend[c.src]) >= t.lim.MaxStartupsPerSource:
		victim, why = leastProgress(t.pend[c.src]), "per-source pre-auth limit"
	case t.npen >= t.lim.MaxStartups:
		var busiest []*trackedConn
		for _, l := range t.pend {
			if len(l) > len(busiest) {
				busiest = l
			}
		}
		victim, why = leastProgress(busiest), "pre-auth limit"
	}
	if victim != nil {
		t.unpendLocked(victim)
		victim.state = connClosed
	}
	t.pend[c.src] = append(t.pend[c.src], c)
	t.npen++
	t.all[c] = struct{}{}
	c.timer = time.AfterFunc(t.lim.LoginGrace, c.expire)
	t.mu.Unlock()
	if victim != nil {
		_ = victim.Close()
		t.log.Printf("drop:"+why, "ssh pre-auth connection dropped from=%s reason=%s (after %s, %d bytes read)", victim.src, why, time.Since(victim.accepted).Round(time.Millisecond), victim.rx.Load())
	}
	return c
}

// leastProgress picks the pending connection to drop: the one that has
// sent the fewest bytes (read or queued in the kernel), the oldest among
// equals. A connection younger than preAuthShield may not have had the
// time to send anything, so it is picked only when all are that young.
// A client that is logging in has sent its version and key exchange (a
// kilobyte or more) within a round trip; idle and trickling connections
// have sent next to nothing.
func leastProgress(l []*trackedConn) *trackedConn {
	now := time.Now()
	var best *trackedConn
	var bestYoung bool
	var bestRx int64
	for _, c := range l { // oldest first, so ties go to the oldest
		young, rx := now.Sub(c.accepted) < preAuthShield, c.sent()
		if best == nil || (!young && bestYoung) || (young == bestYoung && rx < bestRx) {
			best, bestYoung, bestRx = c, young, rx
		}
	}
	return best
}

func (t *connTracker) unpendLocked(c *trackedConn) {
	l := t.pend[c.src]
	for i, x := range l {
		if x == c {
			l = append(l[:i], l[i+1:]...)
			t.npen--
			break
		}
	}
	if len(l) == 0 {
		delete(t.pend, c.src)
	} else {
		t.pend[c.src] = l
	}
}

func (t *connTracker) release(c *trackedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.all, c)
	switch c.state {
	case connPending:
		t.unpendLocked(c)
	case connAuthed:
		if t.ops[c.op]--; t.ops[c.op] <= 0 {
			delete(t.ops, c.op)
		}
	}
	c.state = connClosed
}

// expire is the grace timer: it closes a connection that has no session.
func (c *trackedConn) expire() {
	t := c.t
	t.mu.Lock()
	state, sessions, op := c.state, c.sessions, c.op
	t.mu.Unlock()
	switch {
	case state == connClosed || sessions > 0:
		return
	case state == connPending:
		t.log.Printf("grace:pending", "ssh login grace expired from=%s after=%s (%d bytes read)", c.src, t.lim.LoginGrace, c.rx.Load())
	default:
		t.log.Printf("grace:"+op, "ssh connection closed user=%s from=%s reason=no session for %s", op, c.src, t.lim.LoginGrace)
	}
	_ = c.Close()
}

// errOperatorConns refuses an authentication over the per-operator cap.
var errOperatorConns = errors.New("too many connections for this operator")

// authenticated moves c from pending to operator op, within the
// per-operator connection cap. The grace timer restarts: the client now
// has LoginGrace to open a session.
func (c *trackedConn) authenticated(op string) error {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.state != connPending {
		return errors.New("connection closed")
	}
	if t.ops[op] >= t.lim.MaxConnsPerOperator {
		return errOperatorConns
	}
	t.unpendLocked(c)
	c.state, c.op = connAuthed, op
	t.ops[op]++
	c.timer.Reset(t.lim.LoginGrace)
	return nil
}

// openChannel counts a channel against MaxChannelsPerConn.
func (c *trackedConn) openChannel() bool {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if c.channels >= c.t.lim.MaxChannelsPerConn {
		return false
	}
	c.channels++
	return true
}

func (c *trackedConn) closeChannel() {
	c.t.mu.Lock()
	c.channels--
	c.t.mu.Unlock()
}

// errOperatorSessions refuses a session over the per-operator cap.
var errOperatorSessions = errors.New("too many sessions for this operator")

// startSession counts an accepted session for op and stops the grace
// timer. first is true for the connection's first session: the login.
func (c *trackedConn) startSession(op string) (first bool, err error) {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sess[op] >= t.lim.MaxSessionsPerOperator {
		return false, errOperatorSessions
	}
	t.sess[op]++
	c.sessions++
	c.timer.Stop()
	first, c.loggedIn = !c.loggedIn, true
	return first, nil
}

func (c *trackedConn) endSession(op string) {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sess[op]--; t.sess[op] <= 0 {
		delete(t.sess, op)
	}
	if c.sessions--; c.sessions == 0 && c.state != connClosed {
		c.timer.Reset(t.lim.LoginGrace)
	}
}

// refusedSession counts a refused session or channel; at
// maxRefusedPerConn the connection is closed.
func (c *trackedConn) refusedSession() (closed bool) {
	c.t.mu.Lock()
	c.refused++
	n := c.refused
	c.t.mu.Unlock()
	if n < maxRefusedPerConn {
		return false
	}
	_ = c.Close()
	return true
}

// closeAll closes every tracked connection (shutdown: the SSH library
// closes only authenticated ones).
func (t *connTracker) closeAll() {
	t.mu.Lock()
	l := make([]*trackedConn, 0, len(t.all))
	for c := range t.all {
		l = append(l, c)
	}
	t.mu.Unlock()
	for _, c := range l {
		_ = c.Close()
	}
}

// limitListener admits every accepted connection through the tracker.
type limitListener struct {
	net.Listener
	t *connTracker
}

func (l *limitListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.t.admit(nc), nil
}

var trackedKey = &ctxKey{"keyward-conn"}

func trackedFrom(ctx ssh.Context) *trackedConn {
	c, _ := ctx.Value(trackedKey).(*trackedConn)
	return c
}
