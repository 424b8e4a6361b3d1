package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/charmbracelet/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// SSHLimits bounds what one SSH client may cost, before and after login.
// Zero fields take the defaults below (see README.md, "SSH limits").
type SSHLimits struct {
	// LoginGrace closes a connection that has no open session this long:
	// from accept to the first session (handshake, authentication and the
	// session request), and again whenever its last session ends.
	LoginGrace time.Duration
	// MaxStartups caps connections that have not authenticated yet, in
	// total; MaxStartupsPerSource caps them per source IP address. At a
	// cap the pending connection that has sent the fewest bytes (the
	// oldest among equals) is dropped to make room, so an idle or
	// trickling flood cannot crowd out a client that is logging in.
	MaxStartups          int
	MaxStartupsPerSource int
	// MaxConnsPerOperator caps one operator's authenticated connections;
	// MaxSessionsPerOperator their TUI sessions across connections.
	MaxConnsPerOperator    int
	MaxSessionsPerOperator int
	// MaxChannelsPerConn caps the channels open at once on a connection.
	MaxChannelsPerConn int
	// MaxTermWidth and MaxTermHeight bound the terminal size a client may
	// claim (pty-req and window-change); larger values are clamped.
	MaxTermWidth, MaxTermHeight int
}

// Defaults for SSHLimits.
const (
	DefaultLoginGrace             = 30 * time.Second
	DefaultMaxStartups            = 64
	DefaultMaxStartupsPerSource   = 8
	DefaultMaxConnsPerOperator    = 4
	DefaultMaxSessionsPerOperator = 4
	DefaultMaxChannelsPerConn     = 4
	DefaultMaxTermWidth           = 1000
	DefaultMaxTermHeight          = 500
)

// Fixed bounds that need no flag.
const (
	// maxRefusedPerConn: a connection whose sessions were refused this
	// many times is closed (no PTY, access denied, over a cap). A real
	// client stops at the first; a loop of channels does not.
	maxRefusedPerConn = 8
	// maxEnvPerChannel: "env" requests kept per channel (the library
	// appends every one); later ones are refused.
	maxEnvPerChannel = 32
	// maxTermName bounds the TERM a pty-req may name.
	maxTermName = 64
	// preAuthShield: a pending connection this young is dropped only
	// when every candidate is as young (see leastProgress).
	preAuthShield = 250 * time.Millisecond
	// logFoldEvery, logFoldBurst: lines of one kind are written at most
	// logFoldBurst times per logFoldEvery, with a count of the ones folded.
	logFoldEvery = 10 * time.Second
	logFoldBurst = 5
)

// withDefaults fills zero fields.
func (l SSHLimits) withDefaults() SSHLimits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.LoginGrace <= 0 {
		l.LoginGrace = DefaultLoginGrace
	}
	def(&l.MaxStartups, DefaultMaxStartups)
	def(&l.MaxStartupsPerSource, DefaultMaxStartupsPerSource)
	def(&l.MaxConnsPerOperator, DefaultMaxConnsPerOperator)
	def(&l.MaxSessionsPerOperator, DefaultMaxSessionsPerOperator)
	def(&l.MaxChannelsPerConn, DefaultMaxChannelsPerConn)
	def(&l.MaxTermWidth, DefaultMaxTermWidth)
	def(&l.MaxTermHeight, DefaultMaxTermHeight)
	l.MaxStartupsPerSource = min(l.MaxStartupsPerSource, l.MaxStartups)
	return l
}

// fitFDs lowers MaxStartups so that pre-auth connections can hold at most
// a quarter of the process's file descriptors (soft limit), leaving the
// rest for authenticated sessions, the HTTP side and the database. It
// returns the limits and a note when it lowered them.
func (l SSHLimits) fitFDs(softLimit uint64) (SSHLimits, string) {
	if softLimit == 0 {
		return l, ""
	}
	budget := int(min(softLimit/4, 1<<20))
	if budget < 1 {
		budget = 1
	}
	if l.MaxStartups <= budget {
		return l, ""
	}
	note := fmt.Sprintf("ssh max-startups lowered from %d to %d (a quarter of the open-file limit %d)", l.MaxStartups, budget, softLimit)
	l.MaxStartups = budget
	l.MaxStartupsPerSource = min(l.MaxStartupsPerSource, budget)
	return l, note
}

// ---------------------------------------------------------------------------
// Connection accounting

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

// ---------------------------------------------------------------------------
// Channel requests

// boundedChannel hands the session handler a request stream in which
// client-claimed sizes are clamped and unwanted requests are refused
// before the library (and the TUI) sees them.
type boundedChannel struct {
	gossh.NewChannel
	lim  SSHLimits
	note func(what string)
}

func (b *boundedChannel) Accept() (gossh.Channel, <-chan *gossh.Request, error) {
	ch, reqs, err := b.NewChannel.Accept()
	if err != nil {
		return ch, reqs, err
	}
	out := make(chan *gossh.Request)
	go func() {
		defer close(out)
		env := 0
		for r := range reqs {
			switch r.Type {
			case "pty-req":
				if !b.clampPty(r) {
					_ = r.Reply(false, nil)
					continue
				}
			case "window-change":
				b.clampWindow(r.Payload)
			case "env":
				if env++; env > maxEnvPerChannel {
					_ = r.Reply(false, nil)
					continue
				}
			case "auth-agent-req@openssh.com":
				// No agent channel is ever opened: say so.
				b.note("agent forwarding refused")
				_ = r.Reply(false, nil)
				continue
			}
			out <- r
		}
	}()
	return ch, out, nil
}

// clampPty bounds the size in a pty-req payload (string TERM, then
// columns, rows, pixel width, pixel height); false refuses the request.
func (b *boundedChannel) clampPty(r *gossh.Request) bool {
	p := r.Payload
	if len(p) < 4 {
		return false
	}
	n := binary.BigEndian.Uint32(p)
	if n > maxTermName || uint64(len(p)) < 4+uint64(n)+16 {
		return false
	}
	b.clampWindow(p[4+n:])
	return true
}

// clampWindow bounds columns and rows (and the pixel sizes, to what such
// a terminal could have) at the start of w, in place.
func (b *boundedChannel) clampWindow(w []byte) {
	if len(w) < 16 {
		return // the library refuses it
	}
	clamp := func(off int, limit uint32) bool {
		if binary.BigEndian.Uint32(w[off:]) > limit {
			binary.BigEndian.PutUint32(w[off:], limit)
			return true
		}
		return false
	}
	cols, rows := uint32(b.lim.MaxTermWidth), uint32(b.lim.MaxTermHeight)
	c1 := clamp(0, cols)
	c2 := clamp(4, rows)
	clamp(8, cols*64)
	clamp(12, rows*64)
	if c1 || c2 {
		b.note(fmt.Sprintf("terminal size clamped to at most %dx%d", cols, rows))
	}
}

// ---------------------------------------------------------------------------
// Folded logging

// foldLog writes at most logFoldBurst lines of one kind per logFoldEvery;
// the lines folded in are counted on the next line of that kind (or at
// flush), so a flood costs a few lines and nothing goes unreported.
// Kinds must come from a bounded set (reasons, operator names), never
// from raw client input.
type foldLog struct {
	l     *logSink
	every time.Duration
	burst int
	mu    sync.Mutex
	kinds map[string]*foldState
}

type foldState struct {
	since  time.Time // the current window's start
	lines  int       // written in this window
	folded int       // not written since the last line of this kind
}

func newFoldLog(l *logSink) *foldLog {
	return &foldLog{l: l, every: logFoldEvery, burst: logFoldBurst, kinds: map[string]*foldState{}}
}

func (f *foldLog) Printf(kind, format string, args ...any) {
	now := time.Now()
	f.mu.Lock()
	st := f.kinds[kind]
	if st == nil {
		st = &foldState{since: now}
		f.kinds[kind] = st
	}
	if now.Sub(st.since) >= f.every {
		st.since, st.lines = now, 0
	}
	if st.lines >= f.burst {
		st.folded++
		f.mu.Unlock()
		return
	}
	st.lines++
	n := st.folded
	st.folded = 0
	f.mu.Unlock()
	if n > 0 {
		format += " (+%d similar not logged)"
		args = append(args, n)
	}
	f.l.Printf(format, args...)
}

// flush reports the counts still folded.
func (f *foldLog) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for kind, st := range f.kinds {
		if st.folded > 0 {
			f.l.Printf("ssh %d more log lines of kind %s folded", st.folded, kind)
			st.folded = 0
		}
	}
}
