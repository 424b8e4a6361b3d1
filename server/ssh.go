package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/ssh"
	"github.com/charmbracelet/wish"
	"github.com/charmbracelet/wish/activeterm"
	"github.com/charmbracelet/wish/bubbletea"
	"github.com/charmbracelet/wish/logging"
	"github.com/muesli/termenv"
	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/tui"
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
//   - Each session gets its own renderer and an OSC 52 clipboard written to
//     the session; every change is attributed to the operator.
type sshSide struct {
	st   *store.Store
	log  *logSink
	idle time.Duration
	srv  *ssh.Server

	closing atomic.Bool
	mu      sync.Mutex
	// live holds every session past authorisation, with its program once
	// it has one; shutdown quits them and waits for the map to empty.
	live map[ssh.Session]*tea.Program
}

type ctxKey struct{ name string }

var operatorKey = &ctxKey{"keyward-operator"}

func newSSHSide(st *store.Store, signer gossh.Signer, idle time.Duration, log *logSink) (*sshSide, error) {
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	s := &sshSide{st: st, log: log, idle: idle, live: map[ssh.Session]*tea.Program{}}
	srv, err := wish.NewServer(
		func(srv *ssh.Server) error { srv.AddHostKey(signer); return nil },
		wish.WithPublicKeyAuth(s.publicKeyAuth),
		wish.WithIdleTimeout(idle),
		wish.WithVersion("keyward"),
		func(srv *ssh.Server) error {
			// No password or keyboard-interactive handler, ever; and no
			// forwarding or subsystems (the zero values deny them).
			srv.PasswordHandler = nil
			srv.KeyboardInteractiveHandler = nil
			srv.ServerConfigCallback = func(ssh.Context) *gossh.ServerConfig {
				return &gossh.ServerConfig{MaxAuthTries: 6}
			}
			srv.ConnectionFailedCallback = func(c net.Conn, err error) {
				s.log.Printf("ssh handshake failed from=%s err=%s", c.RemoteAddr(), err)
			}
			return nil
		},
		// Composed first to last; the last runs first: logging, then the
		// authorisation re-check, then the PTY requirement, then the
		// refusal of commands, then the TUI.
		wish.WithMiddleware(
			bubbletea.MiddlewareWithProgramHandler(s.program, termenv.Ascii),
			refuseCommand,
			activeterm.Middleware(),
			s.authorize,
			logging.MiddlewareWithLogger(sshLogger{log}),
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

// publicKeyAuth answers the handshake's public-key queries: a key is
// acceptable when it belongs to an active operator whose name is the login
// name. Accepting here does not authorise a session by itself; see
// authorize.
func (s *sshSide) publicKeyAuth(ctx ssh.Context, key ssh.PublicKey) bool {
	op, ok := s.st.OperatorByKey(key.Marshal())
	if ok && op.Name == ctx.User() {
		return true
	}
	reason := "unknown key"
	if ok {
		reason = "key belongs to another operator"
	}
	s.log.Printf("ssh auth refused user=%s key=%s from=%s reason=%s", ctx.User(), gossh.FingerprintSHA256(key), ctx.RemoteAddr(), reason)
	return false
}

// sessionOperator re-derives the operator from the key that actually
// authenticated the connection (CVE-2024-45337: never from a key merely
// offered). The login name must match on both the session and the
// connection (a client may change user names between auth attempts).
func (s *sshSide) sessionOperator(sess ssh.Session) (model.Operator, string) {
	pk := sess.PublicKey()
	if pk == nil {
		return model.Operator{}, "no public key authenticated this session"
	}
	user := sess.User()
	if conn, ok := sess.Context().Value(ssh.ContextKeyConn).(*gossh.ServerConn); ok && conn.User() != user {
		return model.Operator{}, "login name changed during authentication"
	}
	if conn, ok := sess.Context().Value(ssh.ContextKeyConn).(*gossh.ServerConn); ok && conn.Permissions != nil {
		// The library records the verified key in the permissions of the
		// successful attempt; it must be the same key.
		if conn.Permissions.Extensions["gliderlabs/ssh.PublicKey"] == "" {
			return model.Operator{}, "no verified public key on the connection"
		}
	}
	op, ok := s.st.OperatorByKey(pk.Marshal())
	switch {
	case !ok:
		return model.Operator{}, "the key is not registered to an active operator"
	case op.Name != user:
		return model.Operator{}, "the key does not belong to this login name"
	case op.Disabled:
		return model.Operator{}, "operator is disabled"
	}
	return op, ""
}

// authorize is the middleware that gates every session: the operator is
// checked again now, the login is recorded, and the session is tracked so
// shutdown can end it.
func (s *sshSide) authorize(next ssh.Handler) ssh.Handler {
	return func(sess ssh.Session) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Printf("ssh session panic user=%s err=%s", sess.User(), fmt.Sprint(r))
				wish.Fatalln(sess, "keyward: internal error; the session was closed")
			}
		}()
		op, why := s.sessionOperator(sess)
		if why != "" {
			s.log.Printf("ssh session refused user=%s from=%s reason=%s", sess.User(), sess.RemoteAddr(), why)
			wish.Fatalln(sess, "keyward: access denied")
			return
		}
		if err := s.st.RecordLogin(op.Name, sess.RemoteAddr().String()); err != nil {
			s.log.Printf("ssh login not recorded user=%s err=%s", op.Name, err)
		}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			wish.Fatalln(sess, "keyward: the server is shutting down")
			return
		}
		s.live[sess] = nil
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.live, sess)
			s.mu.Unlock()
		}()
		sess.Context().SetValue(operatorKey, op)
		s.log.Printf("ssh session start user=%s role=%s key=%s from=%s", op.Name, op.Role, gossh.FingerprintSHA256(sess.PublicKey()), sess.RemoteAddr())
		next(sess)
		if s.closing.Load() {
			wish.Errorf(sess, "keyward: the server is shutting down\r\n")
		}
	}
}

// refuseCommand ends a session that asks to run a command ("ssh host keys
// list"): the server runs only the TUI, and running it instead would
// answer a script with a full-screen program. The command is neither
// echoed nor logged here (it may hold a token).
func refuseCommand(next ssh.Handler) ssh.Handler {
	return func(sess ssh.Session) {
		if len(sess.RawCommand()) > 0 {
			wish.Fatalln(sess, "keyward: this server runs only the TUI; commands are not supported over SSH.\r\n"+
				"Connect without a command (ssh -p PORT NAME@HOST), or run the keyward CLI on the server.")
			return
		}
		next(sess)
	}
}

// sessionIO is the session as the program's input and output. Writes are
// serialised so an OSC 52 sequence can never land inside a frame, and
// reads stamp the last input time for the idle watchdog.
type sessionIO struct {
	ssh.Session
	wmu       sync.Mutex
	lastInput atomic.Int64
}

func (s *sessionIO) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.Session.Write(p)
}

func (s *sessionIO) Read(p []byte) (int, error) {
	n, err := s.Session.Read(p)
	if n > 0 {
		s.lastInput.Store(time.Now().UnixNano())
	}
	return n, err
}

// program builds one TUI program for an authorised session.
func (s *sshSide) program(sess ssh.Session) *tea.Program {
	op, ok := sess.Context().Value(operatorKey).(model.Operator)
	if !ok {
		wish.Fatalln(sess, "keyward: access denied")
		return nil
	}
	sio := &sessionIO{Session: sess}
	sio.lastInput.Store(time.Now().UnixNano())
	renderer := bubbletea.MakeRenderer(sess)
	m, err := newTUI(tui.Options{Store: s.st, Actor: op.Name, Renderer: renderer, Clipboard: tui.OSC52Clipboard(sio)})
	if err != nil {
		s.log.Printf("ssh tui failed user=%s err=%s", op.Name, err)
		wish.Fatalln(sess, "keyward: the admin UI could not start")
		return nil
	}
	if c, ok := m.(tui.Model); ok {
		// The session can end without a quit key (dropped connection, idle
		// timeout, shutdown): release the TUI's change feed either way.
		go func() {
			<-sess.Context().Done()
			c.Close()
		}()
	}
	p := tea.NewProgram(m, tea.WithInput(sio), tea.WithOutput(sio), tea.WithAltScreen())
	s.mu.Lock()
	if _, tracked := s.live[sess]; !tracked || s.closing.Load() {
		s.mu.Unlock()
		wish.Fatalln(sess, "keyward: the server is shutting down")
		return nil
	}
	s.live[sess] = p
	s.mu.Unlock()
	go s.watchIdle(sess.Context(), sio, p)
	return p
}

// newTUI calls tui.New, turning a panic into an error so one broken
// session cannot take the server down.
func newTUI(opts tui.Options) (m tea.Model, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("tui.New: %v", r)
		}
	}()
	return tui.New(opts), nil
}

// watchIdle quits the program when the operator has typed nothing for the
// idle timeout. The connection-level timeout (wish.WithIdleTimeout) also
// applies, but any output (live refresh) keeps a connection alive, so the
// input clock is what decides.
func (s *sshSide) watchIdle(ctx context.Context, sio *sessionIO, p *tea.Program) {
	step := min(s.idle/4, 15*time.Second)
	step = max(step, 10*time.Millisecond)
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if time.Since(time.Unix(0, sio.lastInput.Load())) >= s.idle {
				s.log.Printf("ssh session idle user=%s after=%s", sio.User(), s.idle)
				_, _ = fmt.Fprintf(sio.Stderr(), "keyward: idle for %s; disconnecting\r\n", s.idle)
				p.Quit()
				return
			}
		}
	}
}

// serve accepts connections on ln until shutdown.
func (s *sshSide) serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if err == ssh.ErrServerClosed {
		return nil
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
	for _, p := range s.live {
		if p != nil {
			go p.Quit() // Send blocks until the program's loop reads it
		}
	}
	s.mu.Unlock()
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(ctx) }() // closes the listener first
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
			for _, p := range s.live {
				if p != nil {
					p.Kill()
				}
			}
			s.mu.Unlock()
			break wait
		case <-tick.C:
		}
	}
	_ = s.srv.Close()
	if serr := <-shut; err == nil && serr != nil && serr != ssh.ErrServerClosed {
		err = serr
	}
	return err
}

// sshLogger feeds wish's logging middleware into the sink; every argument
// (user names, commands, terminal names) is sanitised.
type sshLogger struct{ l *logSink }

func (s sshLogger) Printf(format string, args ...any) {
	for i, a := range args {
		if words, ok := a.([]string); ok { // the session's command: a token may be in it
			args[i] = model.MaskTokenWords(words)
		}
	}
	s.l.Printf("ssh "+format, args...)
}
