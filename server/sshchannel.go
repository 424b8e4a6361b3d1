package server

import (
	"encoding/binary"
	"fmt"

	"github.com/charmbracelet/ssh"
	gossh "golang.org/x/crypto/ssh"
)

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
