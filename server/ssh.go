package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
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
//   - What a client may cost is bounded (sshlimits.go): connections pass a
//     tracker (login grace, pre-auth caps in total and per source,
//     connections and sessions per operator, channels per connection),
//     and each session channel's requests are filtered (terminal sizes
//     clamped, agent forwarding refused) before the library sees them.
type sshSide struct {
	st    *store.Store
	log   *logSink
	fold  *foldLog
	idle  time.Duration
	lim   SSHLimits
	conns *connTracker
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

var sessionKey = &ctxKey{"keyward-session"}

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
		wish.WithIdleTimeout(idle),
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
	s.fold.Printf("auth:"+reason, "ssh auth refused user=%s key=%s from=%s reason=%s", ctx.User(), gossh.FingerprintSHA256(key), ctx.RemoteAddr(), reason)
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

// serverConfig is the per-connection handshake configuration: at most 6
// failed authentications, and the per-operator connection cap applied
// once a key's signature is verified (the connection then stops counting
// as pre-auth).
func (s *sshSide) serverConfig(ctx ssh.Context) *gossh.ServerConfig {
	tc := trackedFrom(ctx)
	return &gossh.ServerConfig{
		MaxAuthTries: 6,
		VerifiedPublicKeyCallback: func(meta gossh.ConnMetadata, key gossh.PublicKey, perms *gossh.Permissions, _ string) (*gossh.Permissions, error) {
			op, ok := s.st.OperatorByKey(key.Marshal())
			if !ok || tc == nil {
				return nil, errors.New("key not registered")
			}
			if err := tc.authenticated(op.Name); err != nil {
				s.fold.Printf("conns:"+op.Name, "ssh login refused user=%s from=%s reason=%s (limit %d)", op.Name, meta.RemoteAddr(), err, s.lim.MaxConnsPerOperator)
				return nil, &gossh.BannerError{Err: err, Message: fmt.Sprintf("keyward: %s already has %d connections open (--max-conns-per-operator)\r\n", op.Name, s.lim.MaxConnsPerOperator)}
			}
			return perms, nil
		},
	}
}

// sessionChannel opens a session channel within the connection's channel
// cap, with its requests bounded (boundedChannel).
func (s *sshSide) sessionChannel(srv *ssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx ssh.Context) {
	tc := trackedFrom(ctx)
	if tc == nil {
		_ = nc.Reject(gossh.Prohibited, "not tracked")
		return
	}
	if !tc.openChannel() {
		s.fold.Printf("channels:"+conn.User(), "ssh channel refused user=%s from=%s reason=more than %d channels open on one connection", conn.User(), conn.RemoteAddr(), s.lim.MaxChannelsPerConn)
		_ = nc.Reject(gossh.ResourceShortage, "too many channels on this connection")
		if tc.refusedSession() {
			s.fold.Printf("refusals:"+conn.User(), "ssh connection closed user=%s from=%s reason=%d refused sessions", conn.User(), conn.RemoteAddr(), maxRefusedPerConn)
		}
		return
	}
	defer tc.closeChannel()
	user := conn.User()
	ssh.DefaultSessionHandler(srv, conn, &boundedChannel{NewChannel: nc, lim: s.lim, note: func(what string) {
		s.fold.Printf("req:"+what+":"+user, "ssh session user=%s from=%s: %s", user, conn.RemoteAddr(), what)
	}}, ctx)
}

// otherChannel refuses every channel type but "session" (direct-tcpip,
// x11, ...), counting each as a refusal so a loop of them ends the
// connection.
func (s *sshSide) otherChannel(_ *ssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx ssh.Context) {
	_ = nc.Reject(gossh.Prohibited, "only session channels are allowed")
	s.fold.Printf("chantype:"+conn.User(), "ssh channel refused user=%s from=%s type=%s", conn.User(), conn.RemoteAddr(), nc.ChannelType())
	if tc := trackedFrom(ctx); tc != nil && tc.refusedSession() {
		s.fold.Printf("refusals:"+conn.User(), "ssh connection closed user=%s from=%s reason=%d refused sessions", conn.User(), conn.RemoteAddr(), maxRefusedPerConn)
	}
}

// authorize is the middleware that gates every session: the operator is
// checked again now, a PTY is required, the per-operator session cap
// applies, and only then is the login recorded (once per connection) and
// the session tracked so shutdown can end it. Refusals are logged folded
// and counted: a connection refused maxRefusedPerConn times is closed.
func (s *sshSide) authorize(next ssh.Handler) ssh.Handler {
	return func(sess ssh.Session) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Printf("ssh session panic user=%s err=%s", sess.User(), fmt.Sprint(r))
				wish.Fatalln(sess, "keyward: internal error; the session was closed")
			}
		}()
		tc := trackedFrom(sess.Context())
		refuse := func(op model.Operator, reason, msg string) {
			fp := ""
			if pk := sess.PublicKey(); pk != nil {
				fp = gossh.FingerprintSHA256(pk)
			}
			s.fold.Printf("refused:"+reason+":"+op.Name, "ssh session refused user=%s role=%s key=%s from=%s reason=%s", sess.User(), string(op.Role), fp, sess.RemoteAddr(), reason)
			wish.Fatalln(sess, msg)
			if tc != nil && tc.refusedSession() {
				s.fold.Printf("refusals:"+op.Name, "ssh connection closed user=%s from=%s reason=%d refused sessions", sess.User(), sess.RemoteAddr(), maxRefusedPerConn)
			}
		}
		op, why := s.sessionOperator(sess)
		if why != "" {
			refuse(model.Operator{}, why, "keyward: access denied")
			return
		}
		if _, _, isPty := sess.Pty(); !isPty {
			refuse(op, "no PTY", "Requires an active PTY (ssh -t)")
			return
		}
		if len(sess.RawCommand()) > 0 {
			refuse(op, "command", commandRefused)
			return
		}
		if tc == nil {
			refuse(op, "untracked connection", "keyward: internal error")
			return
		}
		first, err := tc.startSession(op.Name)
		if err != nil {
			refuse(op, err.Error(), fmt.Sprintf("keyward: %s already has %d sessions open (--max-sessions-per-operator); close one first", op.Name, s.lim.MaxSessionsPerOperator))
			return
		}
		defer tc.endSession(op.Name)
		if first {
			// One login per authenticated connection, however many
			// sessions it then opens.
			if err := s.st.RecordLogin(op.Name, sess.RemoteAddr().String()); err != nil {
				s.log.Printf("ssh login not recorded user=%s err=%s", op.Name, err)
			}
		}
		fp := gossh.FingerprintSHA256(sess.PublicKey())
		ls := &liveSession{sess: sess, name: op.Name, role: op.Role,
			actor: model.Actor{Name: op.Name, ID: op.ID, KeyFingerprint: fp}.String()}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			wish.Fatalln(sess, "keyward: the server is shutting down")
			return
		}
		s.live[sess] = ls
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.live, sess)
			s.mu.Unlock()
		}()
		// The watch sees every operator change from now on; one made
		// since sessionOperator looked is caught here.
		s.check(ls)
		sess.Context().SetValue(sessionKey, ls)
		s.log.Printf("ssh session start user=%s role=%s key=%s from=%s", op.Name, op.Role, fp, sess.RemoteAddr())
		next(sess)
		s.mu.Lock()
		ended := ls.ended
		s.mu.Unlock()
		switch {
		case ended != "":
			wish.Fatalln(sess, "keyward: "+ended+"; the session was closed")
		case s.closing.Load():
			wish.Errorf(sess, "keyward: the server is shutting down\r\n")
		}
	}
}

// watchOperators ends sessions whose authority changed: it re-checks every
// live session on each operator change in the store's feed (or a Resync).
func (s *sshSide) watchOperators(sub *store.Subscription) {
	for range sub.Ready() {
		recheck := false
		for _, ch := range sub.Next() {
			if ch.Kind == store.OperatorsChanged || ch.Kind == store.Resync {
				recheck = true
			}
		}
		if recheck {
			s.recheck()
		}
	}
}

// recheck checks every live session against the store.
func (s *sshSide) recheck() {
	s.mu.Lock()
	all := make([]*liveSession, 0, len(s.live))
	for _, ls := range s.live {
		all = append(all, ls)
	}
	s.mu.Unlock()
	for _, ls := range all {
		s.check(ls)
	}
}

// check ends ls if its operator account is gone (deleted, or replaced by
// a new account of the same name), disabled, no longer holds the key the
// session logged in with, or was an ADMIN and is one no more.
func (s *sshSide) check(ls *liveSession) {
	op, err := s.st.SessionOperator(ls.actor)
	switch {
	case err != nil:
		s.end(ls, "your operator access was withdrawn ("+model.Sanitize(strings.TrimPrefix(err.Error(), store.ErrForbidden.Error()+": "))+")")
	case ls.role == model.OperatorAdmin && op.Role != model.OperatorAdmin:
		s.end(ls, fmt.Sprintf("operator %q is now %s", ls.name, op.Role))
	}
}

// end ends a session for a reason shown to its operator: the program is
// asked to quit (and killed if it has not within a second); a program not
// built yet is never started (see program).
func (s *sshSide) end(ls *liveSession, why string) {
	s.mu.Lock()
	if ls.ended != "" {
		s.mu.Unlock()
		return
	}
	ls.ended = why
	p := ls.p
	s.mu.Unlock()
	s.log.Printf("ssh session ended user=%s from=%s reason=%s", ls.name, ls.sess.RemoteAddr(), why)
	if p == nil {
		return
	}
	go func() {
		done := make(chan struct{})
		go func() { p.Quit(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		select {
		case <-ls.sess.Context().Done():
		case <-time.After(time.Second):
			p.Kill()
		}
	}()
}

// commandRefused answers a session that asks to run a command ("ssh host
// keys list"): the server runs only the TUI, and running it instead would
// answer a script with a full-screen program. The command is neither
// echoed nor logged (it may hold a token).
const commandRefused = "keyward: this server runs only the TUI; commands are not supported over SSH.\r\n" +
	"Connect without a command (ssh -p PORT NAME@HOST), or run the keyward CLI on the server."

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
	ls, ok := sess.Context().Value(sessionKey).(*liveSession)
	if !ok {
		wish.Fatalln(sess, "keyward: access denied")
		return nil
	}
	sio := &sessionIO{Session: sess}
	sio.lastInput.Store(time.Now().UnixNano())
	renderer := bubbletea.MakeRenderer(sess)
	m, err := newTUI(tui.Options{Store: s.st, Actor: ls.actor, Renderer: renderer, Clipboard: tui.OSC52Clipboard(sio)})
	if err != nil {
		s.log.Printf("ssh tui failed user=%s err=%s", ls.name, err)
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
	// WithoutSignalHandler: the server process's signals belong to serve,
	// which ends every session through shutdown. A program's own SIGTERM
	// handler would race shutdown's Quit for the program's unbuffered
	// message channel; when Quit won, the handler blocked on its send
	// forever, the program's exit waited for it, and the session never
	// ended (TestSSHShutdownEndsEverySession).
	p := tea.NewProgram(m, tea.WithInput(sio), tea.WithOutput(sio), tea.WithAltScreen(), tea.WithoutSignalHandler())
	s.mu.Lock()
	if s.live[sess] != ls || s.closing.Load() || ls.ended != "" {
		s.mu.Unlock()
		if c, ok := m.(tui.Model); ok {
			c.Close()
		}
		return nil // authorize says why
	}
	ls.p = p
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
