package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/ssh"
	"github.com/charmbracelet/wish"
	"github.com/charmbracelet/wish/bubbletea"
	"github.com/charmbracelet/wish/logging"
	"github.com/muesli/termenv"
	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// DefaultIdleTimeout ends SSH sessions that have been idle this long.
const DefaultIdleTimeout = 30 * time.Minute

// sshSide is the SSH listener: one TUI program per session, for operators
// whose registered public key signed the handshake.
//
// Security model (see README.md, section SSH security model):
//   - Public-key auth only. Password and keyboard-interactive handlers are
//     never set, and because a public-key handler is set the library's
//     "no handler: accept everyone" fallback (NoClientAuth) is off.
//   - The login name must equal the name of the operator owning the key.
//   - Authorisation is decided again at session start on sess.PublicKey(),
//     the key that actually signed the handshake, never on keys merely
//     offered during it (CVE-2024-45337), against the store's state then
//     (a disabled or deleted operator is refused even mid-handshake).
//   - A session acts as the operator account (its id, not its name) and
//     the key that signed, both carried in its actor (model.Actor): the
//     store refuses its writes once the account is deleted (even if a new
//     one takes the name), disabled or demoted, or the key is removed.
//   - The SSH side watches the store's change feed for operator changes
//     and ends every session whose account or key no longer stands, or
//     whose ADMIN was demoted (see recheck). The feed is what every node
//     sees, so this holds across nodes too.
//   - Each session gets its own renderer and an OSC 52 clipboard written to
//     the session; every change is attributed to the operator.
//   - What a client may cost is bounded (sshlimits.go, sshconn.go,
//     sshchannel.go): connections pass a tracker (login grace, pre-auth
//     caps in total and per source, connections and sessions per
//     operator, channels per connection), and each session channel's
//     requests are filtered (terminal sizes clamped, agent forwarding
//     refused) before the library sees them.
type sshSide struct {
	st    *store.Store
	log   *logSink
	fold  *foldLog
	idle  time.Duration
	lim   SSHLimits
	conns *connTracker
	m     *metrics // refusals are counted here (metrics.go); nil: off
	srv   *ssh.Server
	ln    net.Listener // bound by listenSSH

	closing atomic.Bool
	mu      sync.Mutex
	// live holds every session past authorisation, with its program once
	// it has one; shutdown quits them and waits for the map to empty.
	live map[ssh.Session]*liveSession
	// watch is the store's change feed while serving (see watchOperators).
	watch *store.Subscription
}

// liveSession is one authorised session. p, ended and the rest are
// guarded by sshSide.mu.
type liveSession struct {
	sess  ssh.Session
	actor string // model.Actor: name, account id, key fingerprint
	name  string
	role  model.OperatorRole // at login
	p     *tea.Program       // nil until the program is built
	ended string             // why the session was ended, once it was
}

type ctxKey struct{ name string }

// listenSSH loads (or generates) the host key, builds the SSH side and
// binds its listener.
func listenSSH(cfg Config, nofile uint64, log *logSink) (*sshSide, error) {
	path := cfg.HostKeyPath
	if path == "" {
		path = filepath.Join(filepath.Dir(cfg.Store.Path()), HostKeyFile)
	}
	signer, created, err := loadOrCreateHostKey(path, func(w string) { log.Printf("warning: %s", w) })
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	verb := "loaded"
	if created {
		verb = "generated"
	}
	log.Printf("ssh host key %s %s (%s)", gossh.FingerprintSHA256(signer.PublicKey()), path, verb)
	s, err := newSSHSide(cfg.Store, signer, cfg.IdleTimeout, cfg.SSHLimits, nofile, log)
	if err != nil {
		return nil, fmt.Errorf("server: ssh: %w", err)
	}
	if s.ln, err = net.Listen("tcp", cfg.SSHAddr); err != nil {
		return nil, fmt.Errorf("server: ssh listen: %w", err)
	}
	return s, nil
}

func newSSHSide(st *store.Store, signer gossh.Signer, idle time.Duration, lim SSHLimits, nofile uint64, log *logSink) (*sshSide, error) {
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	lim, note := lim.withDefaults().fitFDs(nofile)
	if note != "" {
		log.Printf("%s", note)
	}
	fold := newFoldLog(log)
	s := &sshSide{st: st, log: log, fold: fold, idle: idle, lim: lim, conns: newConnTracker(lim, fold), live: map[ssh.Session]*liveSession{}}
	srv, err := wish.NewServer(
		func(srv *ssh.Server) error { srv.AddHostKey(signer); return nil },
		wish.WithPublicKeyAuth(s.publicKeyAuth),
		// A backstop a little after the input clock (watchIdle), which
		// says why before it ends the session: at the same instant the two
		// raced, and a loaded box closed the connection without a word.
		wish.WithIdleTimeout(idle+max(idle/4, 2*time.Second)),
		wish.WithVersion("keyward"),
		func(srv *ssh.Server) error {
			// No password or keyboard-interactive handler, ever; and no
			// forwarding or subsystems (the zero values deny them).
			srv.PasswordHandler = nil
			srv.KeyboardInteractiveHandler = nil
			srv.ConnCallback = func(ctx ssh.Context, c net.Conn) net.Conn {
				ctx.SetValue(trackedKey, c) // a *trackedConn from limitListener
				return c
			}
			srv.ServerConfigCallback = s.serverConfig
			srv.ConnectionFailedCallback = func(c net.Conn, err error) {
				s.fold.Printf("handshake", "ssh handshake failed from=%s err=%s", c.RemoteAddr(), err)
			}
			// Only session channels, each counted and with its requests
			// bounded; no global requests are answered (forwarding is
			// refused by the library's nil handlers).
			srv.ChannelHandlers = map[string]ssh.ChannelHandler{"session": s.sessionChannel, "default": s.otherChannel}
			srv.RequestHandlers = map[string]ssh.RequestHandler{}
			return nil
		},
		// Composed first to last; the last runs first: the authorisation
		// re-check with the PTY requirement, the refusal of commands and
		// the caps, then logging (of accepted sessions only), then the TUI.
		wish.WithMiddleware(
			bubbletea.MiddlewareWithProgramHandler(s.program, termenv.Ascii),
			logging.MiddlewareWithLogger(sshLogger{log}),
			s.authorize,
		),
	)
	if err != nil {
		return nil, err
	}
	if srv.PasswordHandler != nil || srv.KeyboardInteractiveHandler != nil || srv.PublicKeyHandler == nil {
		return nil, fmt.Errorf("ssh server misconfigured: only public-key auth may be enabled")
	}
	s.srv = srv
	return s, nil
}

// serve accepts connections until shutdown (then it returns nil).
func (s *sshSide) serve() error {
	s.mu.Lock()
	if !s.closing.Load() && s.watch == nil {
		s.watch = s.st.Watch()
		go s.watchOperators(s.watch)
	}
	s.mu.Unlock()
	err := s.srv.Serve(&limitListener{Listener: s.ln, t: s.conns})
	if err == ssh.ErrServerClosed || s.closing.Load() {
		return nil // shutdown, which may have closed the listener first
	}
	return err
}

// shutdown stops accepting, asks every running TUI to quit (so operators
// see a clean exit and a message), waits for the sessions to end within
// ctx, then closes the connections that are left (an authenticated client
// may keep a connection open with no session).
func (s *sshSide) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	if s.watch != nil {
		s.watch.Close()
	}
	for _, ls := range s.live {
		if ls.p != nil {
			go ls.p.Quit() // Send blocks until the program's loop reads it
		}
	}
	s.mu.Unlock()
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(ctx) }() // closes the listener first
	_ = s.ln.Close()                            // also when serve never ran
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		s.mu.Lock()
		n := len(s.live)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			err = fmt.Errorf("%d SSH sessions did not end in time: %w", n, ctx.Err())
			s.mu.Lock()
			for _, ls := range s.live {
				if ls.p != nil {
					ls.p.Kill()
				}
			}
			s.mu.Unlock()
			break wait
		case <-tick.C:
		}
	}
	_ = s.srv.Close()
	s.conns.closeAll() // connections still in their handshake
	s.fold.flush()
	if serr := <-shut; err == nil && serr != nil && serr != ssh.ErrServerClosed {
		err = serr
	}
	return err
}
