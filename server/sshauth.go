package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/ssh"
	"github.com/charmbracelet/wish"
	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// publicKeyAuth answers the handshake's public-key queries: a key is
// acceptable when it belongs to an active operator whose name is the login
// name. Accepting here does not authorise a session by itself; see
// authorize.
func (s *sshSide) publicKeyAuth(ctx ssh.Context, key ssh.PublicKey) bool {
	op, ok := s.st.OperatorByKey(key.Marshal())
	if ok && op.Name == ctx.User() {
		return true
	}
	reason, label := "unknown key", refusedUnknownKey
	if ok {
		reason, label = "key belongs to another operator", refusedOtherKey
	}
	s.m.sshRefused(label)
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
				s.m.sshRefused(refusedMaxConns)
				s.fold.Printf("conns:"+op.Name, "ssh login refused user=%s from=%s reason=%s (limit %d)", op.Name, meta.RemoteAddr(), err, s.lim.MaxConnsPerOperator)
				return nil, &gossh.BannerError{Err: err, Message: fmt.Sprintf("keyward: %s already has %d connections open (--max-conns-per-operator)\r\n", op.Name, s.lim.MaxConnsPerOperator)}
			}
			return perms, nil
		},
	}
}

// authorize is the middleware that gates every session: the operator is
// checked again now, a PTY is required, the per-operator session cap
// applies, and only then is the login recorded (once per connection) and
// the session tracked so shutdown can end it. Refusals are logged folded
// and counted: a connection refused maxRefusedPerConn times is closed.
func (s *sshSide) authorize(next ssh.Handler) ssh.Handler {
	return func(sess ssh.Session) {
		defer s.recoverSession(sess)
		tc := trackedFrom(sess.Context())
		op, ok := s.admitSession(sess, tc)
		if !ok {
			return
		}
		defer tc.endSession(op.Name)
		fp := gossh.FingerprintSHA256(sess.PublicKey())
		ls := &liveSession{sess: sess, name: op.Name, role: op.Role,
			actor: model.Actor{Name: op.Name, ID: op.ID, KeyFingerprint: fp}.String()}
		if !s.track(ls) {
			wish.Fatalln(sess, "keyward: the server is shutting down")
			return
		}
		defer s.untrack(ls)
		// The watch sees every operator change from now on; one made
		// since sessionOperator looked is caught here.
		s.check(ls)
		sess.Context().SetValue(sessionKey, ls)
		s.log.Printf("ssh session start user=%s role=%s key=%s from=%s", op.Name, op.Role, fp, sess.RemoteAddr())
		next(sess)
		s.farewell(ls)
	}
}

// recoverSession, deferred, turns a panic in a session into a closed
// session, so one broken session cannot take the server down.
func (s *sshSide) recoverSession(sess ssh.Session) {
	if r := recover(); r != nil {
		s.log.Printf("ssh session panic user=%s err=%s", sess.User(), fmt.Sprint(r))
		wish.Fatalln(sess, "keyward: internal error; the session was closed")
	}
}

// admitSession checks the session's operator (again, on the key that
// signed), its PTY, that it asks for no command and the per-operator
// session cap; it refuses the session (false) or counts it and records
// the connection's login (true).
func (s *sshSide) admitSession(sess ssh.Session, tc *trackedConn) (model.Operator, bool) {
	op, why := s.sessionOperator(sess)
	if why != "" {
		s.m.sshRefused(refusedAccess)
		s.refuse(sess, tc, model.Operator{}, why, "keyward: access denied")
		return op, false
	}
	if _, _, isPty := sess.Pty(); !isPty {
		s.m.sshRefused(refusedNoPTY)
		s.refuse(sess, tc, op, "no PTY", "Requires an active PTY (ssh -t)")
		return op, false
	}
	if len(sess.RawCommand()) > 0 {
		s.m.sshRefused(refusedCommand)
		s.refuse(sess, tc, op, "command", commandRefused)
		return op, false
	}
	if tc == nil {
		s.m.sshRefused(refusedInternal)
		s.refuse(sess, tc, op, "untracked connection", "keyward: internal error")
		return op, false
	}
	first, err := tc.startSession(op.Name)
	if err != nil {
		s.m.sshRefused(refusedMaxSessions)
		s.refuse(sess, tc, op, err.Error(), fmt.Sprintf("keyward: %s already has %d sessions open (--max-sessions-per-operator); close one first", op.Name, s.lim.MaxSessionsPerOperator))
		return op, false
	}
	if first {
		// One login per authenticated connection, however many
		// sessions it then opens.
		if err := s.st.RecordLogin(op.Name, sess.RemoteAddr().String()); err != nil {
			s.log.Printf("ssh login not recorded user=%s err=%s", op.Name, err)
		}
	}
	return op, true
}

// refuse ends a session for reason (logged, folded) with msg to the
// client, and counts the refusal against the connection (tc may be nil).
func (s *sshSide) refuse(sess ssh.Session, tc *trackedConn, op model.Operator, reason, msg string) {
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

// track adds ls to the live sessions, unless the server is shutting down
// (false).
func (s *sshSide) track(ls *liveSession) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.live[ls.sess] = ls
	return true
}

func (s *sshSide) untrack(ls *liveSession) {
	s.mu.Lock()
	delete(s.live, ls.sess)
	s.mu.Unlock()
}

// farewell tells the operator why a session ended, when it was not their
// own doing: their access was withdrawn, or the server is shutting down.
func (s *sshSide) farewell(ls *liveSession) {
	s.mu.Lock()
	ended := ls.ended
	s.mu.Unlock()
	switch {
	case ended != "":
		wish.Fatalln(ls.sess, "keyward: "+ended+"; the session was closed")
	case s.closing.Load():
		wish.Errorf(ls.sess, "keyward: the server is shutting down\r\n")
	}
}

// watchOperators ends sessions whose authority changed: it re-checks every
// live session on each operator change in the store's feed (or a Resync).
func (s *sshSide) watchOperators(sub *store.Subscription) {
	for range sub.Ready() {
		if store.Touches(sub.Next(), store.OperatorsChanged) {
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
