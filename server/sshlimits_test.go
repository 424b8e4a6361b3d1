package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"
	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// widestLine is the widest line, in cells, once escape sequences are
// stripped: what the TUI believed the terminal's width to be.
func widestLine(s string) int {
	w := 0
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r", "\n"), "\n") {
		w = max(w, ansi.StringWidth(l))
	}
	return w
}

// TestSSHHugeTerminalSizes: sizes in pty-req and window-change come from
// the network. Absurd ones (2^30, 16,777,216 cells a side) are clamped
// to the terminal size bound before the TUI sees them, so one session's
// frames (and output) stay small and serve keeps answering. Before, a
// width of 2^24 cost 418 MB and 50 MB of output, and 2^30 killed serve
// with "fatal error: out of memory".
func TestSSHHugeTerminalSizes(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("reader", model.OperatorReadonly)
	env.createKey(model.KeySpec{Name: "checkout-service"})
	srv := env.serve(Config{})
	// The whole TUI at the largest allowed size, for the output bound.
	const maxW, maxH = DefaultMaxTermWidth, DefaultMaxTermHeight
	outBound := 4 * maxW * maxH // a few full frames with styling
	cases := []struct {
		name             string
		rows, cols       int // pty-req
		winRows, winCols int // then a window-change, if non-zero
	}{
		{name: "pty width 2^24", rows: 30, cols: 16_777_216},
		{name: "pty width 2^30", rows: 30, cols: 1 << 30},
		{name: "pty height 2^30", rows: 1 << 30, cols: 100},
		{name: "pty height 2^24", rows: 16_777_216, cols: 100},
		{name: "window-change width 2^30", rows: 30, cols: 100, winRows: 100, winCols: 1 << 30},
		{name: "window-change height 2^30", rows: 30, cols: 100, winRows: 1 << 30, winCols: 100},
		{name: "window-change 2^24 both", rows: 30, cols: 100, winRows: 16_777_216, winCols: 16_777_216},
	}
	for _, tc := range cases {
		c := mustDial(t, env, srv, "reader", k)
		v := testkit.OpenTermSize(t, c, tc.rows, tc.cols)
		v.WaitText(10*time.Second, 0, "checkout-service")
		if tc.winRows != 0 {
			if err := v.Session().WindowChange(tc.winRows, tc.winCols); err != nil {
				t.Fatalf("%s: window-change: %v", tc.name, err)
			}
		}
		time.Sleep(400 * time.Millisecond) // frames after the resize
		n := len(v.Raw())
		t.Logf("%s: %d bytes of output", tc.name, n)
		if n > outBound {
			t.Errorf("%s: %d bytes of output, want at most %d", tc.name, n, outBound)
		}
		if w := widestLine(v.Text()); w > maxW {
			t.Errorf("%s: a line %d cells wide reached the terminal, want at most %d", tc.name, w, maxW)
		}
		v.Send("\x03")
		if err := v.WaitExit(10 * time.Second); err != nil {
			t.Fatalf("%s: session ended with %v", tc.name, err)
		}
		c.Close()
	}
	// serve still answers: HTTP and a new SSH session.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + srv.httpAddr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after the huge sizes: %v %v", resp, err)
	}
	resp.Body.Close()
	v := testkit.OpenTerm(t, mustDial(t, env, srv, "reader", k))
	v.WaitText(10*time.Second, 0, "checkout-service")
	testkit.WaitFor(t, 2*time.Second, "the clamp logged", func() bool {
		return strings.Contains(srv.logs.String(), fmt.Sprintf("terminal size clamped to at most %dx%d", maxW, maxH))
	})
}

// bounded runs one channel open on c, giving up after d: when serve
// closes a connection at the moment the client opens a channel,
// x/crypto/ssh can wait for the reply forever (its read loop has ended
// and dropped its channel list before the new channel joined it; the
// write of the open request still succeeds on the half-closed socket).
// A timeout is then the connection's end, as the test expects.
func bounded[T any](c *gossh.Client, d time.Duration, open func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() { v, err := open(); done <- result{v, err} }()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(d):
		c.Close()
		var zero T
		return zero, errors.New("no answer to a channel open in time: the connection is gone")
	}
}

// TestSSHChannelFloodBoundedAudit: a READONLY operator looping session
// channels with Run("x") (refused: no PTY) writes no audit events and
// few log lines; the connection is closed after a few refusals, at most
// MaxChannelsPerConn channels are open at once, and one connection's
// accepted sessions record one login. An admin action stays visible.
// Before, every refused channel wrote an fsynced login event (20,070 in
// 10 s).
func TestSSHChannelFloodBoundedAudit(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("reader", model.OperatorReadonly)
	admin, _ := env.createKey(model.KeySpec{Name: "admin-made"})
	srv := env.serve(Config{HTTPAddr: "-"})
	before, err := env.st.Audit(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}

	// Sequential refused channels, reconnecting whenever serve closes the
	// connection: bounded by count and time.
	attempts, conns := 0, 0
	deadline := time.Now().Add(3 * time.Second)
	for attempts < 400 && time.Now().Before(deadline) {
		c := mustDial(t, env, srv, "reader", k)
		conns++
		for attempts < 400 && time.Now().Before(deadline) {
			sess, err := bounded(c, 5*time.Second, c.NewSession)
			if err != nil {
				break // closed by serve
			}
			attempts++
			_ = sess.Run("x")
			sess.Close()
		}
		c.Close()
	}
	if conns < 2 {
		t.Errorf("%d refused channels on one connection and it stayed open", attempts)
	}
	t.Logf("%d refused channels over %d connections", attempts, conns)

	// Channels open at once on one connection are capped.
	c := mustDial(t, env, srv, "reader", k)
	var open []*gossh.Session
	for i := 0; i < DefaultMaxChannelsPerConn; i++ {
		s, err := c.NewSession()
		if err != nil {
			t.Fatalf("channel %d of %d: %v", i+1, DefaultMaxChannelsPerConn, err)
		}
		open = append(open, s)
	}
	if s, err := c.NewSession(); err == nil {
		s.Close()
		t.Errorf("channel %d opened; want at most %d at once", DefaultMaxChannelsPerConn+1, DefaultMaxChannelsPerConn)
	} else if !strings.Contains(err.Error(), "too many channels") {
		t.Errorf("over the channel cap: %v", err)
	}
	for _, s := range open {
		s.Close()
	}

	// Two accepted sessions on one connection: one login.
	c2 := mustDial(t, env, srv, "reader", k)
	for i := 0; i < 2; i++ {
		v := testkit.OpenTermSize(t, c2, 30, 100)
		v.WaitText(10*time.Second, 0, "admin-made")
		v.Send("\x03")
		v.WaitExit(5 * time.Second)
	}

	after, err := env.st.Audit(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var logins int
	for _, ev := range after[:len(after)-len(before)] {
		if ev.Action == model.ActLogin {
			logins++
		}
	}
	if added := len(after) - len(before); added != 1 || logins != 1 {
		t.Errorf("the flood added %d audit events (%d logins), want exactly 1 login", added, logins)
	}
	view, _ := env.st.Audit(store.AuditFilter{Limit: 5000})
	seen := false
	for _, ev := range view {
		seen = seen || (ev.Action == model.ActKeyCreate && ev.Target == admin.ID)
	}
	if !seen {
		t.Errorf("the admin's key.create is no longer in the audit view")
	}
	testkit.WaitFor(t, 2*time.Second, "a refusal logged", func() bool { return strings.Contains(srv.logs.String(), "ssh session refused user=reader") })
	if n := strings.Count(srv.logs.String(), "user=reader"); n > 30 {
		t.Errorf("%d log lines about reader for %d refused channels; want them folded", n, attempts)
	}
}

// TestSSHAgentForwardingRefused: auth-agent-req is refused (no agent
// channel is ever opened; it used to be answered true).
func TestSSHAgentForwardingRefused(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ok, err := sess.SendRequest("auth-agent-req@openssh.com", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatal("auth-agent-req@openssh.com answered true")
	}
}

// TestSSHOperatorCaps: one operator's key allows MaxConnsPerOperator
// connections and MaxSessionsPerOperator sessions; an authenticated
// connection that opens no session is closed after LoginGrace.
func TestSSHOperatorCaps(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	bob := env.addOperator("bob", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-", SSHLimits: SSHLimits{LoginGrace: 1500 * time.Millisecond, MaxConnsPerOperator: 2, MaxSessionsPerOperator: 1}})
	c1 := mustDial(t, env, srv, "alice", k)
	v1 := testkit.OpenTerm(t, c1)
	v1.WaitText(10*time.Second, 0, "Name")
	c2 := mustDial(t, env, srv, "alice", k)
	var banner string
	_, err := gossh.Dial("tcp", srv.sshAddr, &gossh.ClientConfig{User: "alice", Auth: []gossh.AuthMethod{gossh.PublicKeys(k.Signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second, //nolint:gosec // our own server
		BannerCallback: func(m string) error { banner = m; return nil }})
	wantAuthRefused(t, err, "alice's third connection")
	if !strings.Contains(banner, "already has 2 connections") {
		t.Errorf("no banner explaining the refusal: %q", banner)
	}
	mustDial(t, env, srv, "bob", bob) // other operators are not affected

	v2 := testkit.OpenTerm(t, c2)
	err = v2.WaitExit(5 * time.Second)
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 || !strings.Contains(v2.ErrText(), "already has 1 sessions open") {
		t.Fatalf("alice's second session: %v %q", err, v2.ErrText())
	}
	// c2 now has no session: closed after the grace; c1 (with its
	// session) stays.
	done := make(chan error, 1)
	go func() { done <- c2.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection without a session stayed open past the login grace")
	}
	v1.Send("j")
	time.Sleep(200 * time.Millisecond)
	select {
	case <-v1.Done():
		t.Fatalf("the session's connection was closed too: %v", v1.Exit())
	default:
	}
	// With the first session ended, a new connection may open one.
	v1.Send("\x03")
	v1.WaitExit(5 * time.Second)
	v3 := testkit.OpenTerm(t, mustDial(t, env, srv, "alice", k))
	v3.WaitText(10*time.Second, 0, "Name")
}

// TestSSHLimitsFitFDs: pre-auth connections may hold at most a quarter of
// the open-file limit.
func TestSSHLimitsFitFDs(t *testing.T) {
	l, note := SSHLimits{}.withDefaults().fitFDs(128)
	if l.MaxStartups != 32 || l.MaxStartupsPerSource > 32 || note == "" {
		t.Errorf("at 128 fds: %+v %q", l, note)
	}
	l, note = SSHLimits{}.withDefaults().fitFDs(1 << 20)
	if l.MaxStartups != DefaultMaxStartups || note != "" {
		t.Errorf("at 1M fds: %+v %q", l, note)
	}
}

// TestSSHSourceOf: IPv4 addresses count one by one, IPv6 by /64.
func TestSSHSourceOf(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.2:4000":                "127.0.0.2",
		"[::ffff:10.0.0.1]:22":          "10.0.0.1",
		"[2001:db8:1:2:aaaa::1]:22":     "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff:1:2:3]:999": "2001:db8:1:2::/64",
	} {
		ta, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceOf(ta); got != want {
			t.Errorf("sourceOf(%s) = %q, want %q", addr, got, want)
		}
	}
}

// TestSSHFoldLog: a flood of one kind of line costs logFoldBurst lines per
// interval plus a count; other kinds are unaffected; flush reports the rest.
func TestSSHFoldLog(t *testing.T) {
	var buf testkit.SyncBuffer
	sink := newLogSink(&buf)
	f := newFoldLog(sink)
	for i := 0; i < 1000; i++ {
		f.Printf("refused", "ssh session refused n=%d", i)
	}
	f.Printf("other", "ssh other line")
	f.flush()
	sink.Close()
	out := buf.String()
	if n := strings.Count(out, "ssh session refused"); n != logFoldBurst {
		t.Errorf("%d refusal lines for 1000, want %d:\n%s", n, logFoldBurst, out)
	}
	if !strings.Contains(out, "ssh other line") || !strings.Contains(out, fmt.Sprintf("ssh %d more log lines of kind refused folded", 1000-logFoldBurst)) {
		t.Errorf("missing the other kind or the folded count:\n%s", out)
	}
}

// TestSSHAuthRefusalsFolded: a loop of logins with unknown keys logs a
// few lines and a count, not one line per attempt.
func TestSSHAuthRefusalsFolded(t *testing.T) {
	env := newEnv(t)
	env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	for i := 0; i < 30; i++ {
		_, err := dialSSH(t, env, srv, "alice", gossh.PublicKeys(testkit.NewSSHKey(t).Signer))
		wantAuthRefused(t, err, "unknown key")
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	logs := srv.logs.String()
	if n := strings.Count(logs, "ssh auth refused"); n > logFoldBurst {
		t.Errorf("%d auth refusal lines for 30 attempts, want at most %d", n, logFoldBurst)
	}
	if !strings.Contains(logs, fmt.Sprintf(`ssh %d more log lines of kind "auth:unknown key" folded`, 30-logFoldBurst)) {
		t.Errorf("the folded refusals are not counted:\n%s", logs)
	}
}

// TestSSHOtherChannelsEndConnection: channel types other than "session"
// (port forwarding, X11, anything) are refused, and a loop of them ends
// the connection like a loop of refused sessions.
func TestSSHOtherChannelsEndConnection(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	payload := gossh.Marshal(struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}{"127.0.0.1", 9, "127.0.0.1", 1234})
	opened, refused := 0, 0
	for i := 0; i < 50; i++ {
		typ := []string{"direct-tcpip", "x11", "keyward-anything"}[i%3]
		ch, err := bounded(c, 5*time.Second, func() (gossh.Channel, error) {
			ch, reqs, err := c.OpenChannel(typ, payload)
			if err == nil {
				go gossh.DiscardRequests(reqs)
			}
			return ch, err
		})
		if err == nil {
			opened++
			ch.Close()
			continue
		}
		var oce *gossh.OpenChannelError
		if !errors.As(err, &oce) {
			break // the connection is gone
		}
		refused++
	}
	if opened > 0 {
		t.Errorf("%d non-session channels opened", opened)
	}
	if refused >= 50 {
		t.Errorf("50 refused channels and the connection stayed open")
	}
}
