package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/ssh"
	"github.com/charmbracelet/wish"
	"github.com/charmbracelet/wish/bubbletea"

	"github.com/keyward/keyward/tui"
)

var sessionKey = &ctxKey{"keyward-session"}

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
// idle timeout. The connection-level timeout (wish.WithIdleTimeout, a
// little later, see newSSHSide) also
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
