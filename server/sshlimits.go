package server

import (
	"fmt"
	"time"
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
