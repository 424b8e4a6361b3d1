package testkit

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"
	gossh "golang.org/x/crypto/ssh"
)

// Keys as a terminal sends them.
const (
	KeyEnter = "\r"
	KeyUp    = "\x1b[A"
	KeyEsc   = "\x1b"
)

// TokenRE matches a keyward API token.
var TokenRE = regexp.MustCompile(`kw_[0-9A-Za-z]{49}`)

// Term is a minimal terminal on an SSH PTY session: it collects output
// and answers the background-colour and device-attribute queries that
// bubbletea.MakeRenderer sends, as a real terminal would.
type Term struct {
	t      testing.TB
	sess   *gossh.Session
	stdin  io.WriteCloser
	mu     sync.Mutex
	out    bytes.Buffer
	stderr bytes.Buffer
	done   chan struct{}
	exit   error
}

// OpenTerm opens a 140×40 PTY session with a shell on c.
func OpenTerm(t testing.TB, c *gossh.Client) *Term {
	t.Helper()
	return OpenTermSize(t, c, 40, 140)
}

// OpenTermSize opens a PTY session of rows×cols with a shell on c.
func OpenTermSize(t testing.TB, c *gossh.Client, rows, cols int) *Term {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	v := &Term{t: t, sess: sess, done: make(chan struct{})}
	if v.stdin, err = sess.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sess.Stderr = &LockedWriter{Mu: &v.mu, W: &v.stderr}
	if err := sess.RequestPty("xterm-256color", rows, cols, gossh.TerminalModes{gossh.ECHO: 0}); err != nil {
		t.Fatalf("pty %dx%d: %v", cols, rows, err)
	}
	if err := sess.Shell(); err != nil {
		t.Fatalf("shell: %v", err)
	}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := stdout.Read(buf)
			if n > 0 {
				v.mu.Lock()
				v.out.Write(buf[:n])
				v.mu.Unlock()
				if bytes.Contains(buf[:n], []byte("\x1b[c")) {
					_, _ = io.WriteString(v.stdin, "\x1b]11;rgb:0000/0000/0000\x07\x1b[?62;22c")
				}
			}
			if err != nil {
				break
			}
		}
		err := sess.Wait()
		v.mu.Lock()
		v.exit = err
		v.mu.Unlock()
		close(v.done)
	}()
	t.Cleanup(func() { sess.Close() })
	return v
}

// LockedWriter serialises writes to W under Mu.
type LockedWriter struct {
	Mu *sync.Mutex
	W  io.Writer
}

func (l *LockedWriter) Write(p []byte) (int, error) {
	l.Mu.Lock()
	defer l.Mu.Unlock()
	return l.W.Write(p)
}

// Session is the SSH session under the terminal (for window changes).
func (v *Term) Session() *gossh.Session { return v.sess }

// Done is closed when the session has ended.
func (v *Term) Done() <-chan struct{} { return v.done }

// Exit is how the session ended (nil while it runs or after a clean exit).
func (v *Term) Exit() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exit
}

// Raw returns everything received so far, escape sequences included.
func (v *Term) Raw() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

// Text returns the output with escape sequences removed.
func (v *Term) Text() string { return ansi.Strip(v.Raw()) }

// ErrText is what the session wrote to stderr.
func (v *Term) ErrText() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stderr.String()
}

// Mark returns the current output length, to look only at later output.
func (v *Term) Mark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.Len()
}

// Since is the output after mark m, escape sequences removed.
func (v *Term) Since(m int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return ansi.Strip(v.out.String()[m:])
}

// Send writes keys to the session at once.
func (v *Term) Send(keys string) {
	v.t.Helper()
	if _, err := io.WriteString(v.stdin, keys); err != nil {
		v.t.Fatalf("send %q: %v", keys, err)
	}
}

// Keys sends each key after a short pause.
func (v *Term) Keys(keys ...string) {
	v.t.Helper()
	for _, k := range keys {
		time.Sleep(120 * time.Millisecond)
		v.Send(k)
	}
}

// TypeKeys sends keys paced as a person types (huh moves between fields
// through commands); false if the session is gone. It never fails the
// test, for use from other goroutines.
func (v *Term) TypeKeys(keys ...string) bool {
	for _, k := range keys {
		time.Sleep(90 * time.Millisecond)
		if _, err := io.WriteString(v.stdin, k); err != nil {
			return false
		}
	}
	return true
}

// WaitText waits until the output after mark from holds every want.
func (v *Term) WaitText(d time.Duration, from int, want ...string) {
	v.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := v.Since(from)
		ok := true
		for _, w := range want {
			if !strings.Contains(got, w) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("timed out after %s waiting for %q; screen text:\n%s\nstderr: %s", d, want, Tail(got, 3000), v.ErrText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitOut polls the output since mark from for want, until d passes,
// stop closes or the session ends; it reports instead of failing.
func (v *Term) WaitOut(from int, d time.Duration, stop <-chan struct{}, want func(string) bool) (string, bool) {
	deadline := time.Now().Add(d)
	for {
		s := v.Since(from)
		if want(s) {
			return s, true
		}
		select {
		case <-stop:
			return s, false
		case <-v.done:
			return s, false
		default:
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// WaitExit waits up to d for the session to end and returns how it ended.
func (v *Term) WaitExit(d time.Duration) error {
	v.t.Helper()
	select {
	case <-v.done:
		return v.Exit()
	case <-time.After(d):
		v.t.Fatalf("session did not end within %s; output:\n%s", d, Tail(v.Text(), 2000))
		return nil
	}
}

// CreateViaForm drives the TUI's create form: an ADMIN key named name
// with the default expiry, active. It returns the revealed token.
func (v *Term) CreateViaForm(name string) string {
	v.t.Helper()
	m := v.Mark()
	v.Send("n")
	v.WaitText(5*time.Second, m, "New key", "Name")
	// huh moves between fields through commands, so keys are paced as a
	// person would type them rather than sent in one burst.
	v.Keys(name,
		KeyEnter, // -> description
		KeyEnter, // -> role (EDITOR preselected)
		KeyUp,    // ADMIN
		KeyEnter, // -> the ADMIN access note
		KeyEnter, // -> lifetime (1 year)
		KeyEnter, // -> status (Active? Yes)
		KeyEnter) // submit
	var tok string
	deadline := time.Now().Add(5 * time.Second)
	for tok == "" {
		tok = TokenRE.FindString(v.Since(m))
		if time.Now().After(deadline) {
			v.t.Fatalf("no token revealed after the create form; screen:\n%s\nraw tail: %q", Tail(v.Since(m), 2500), Tail(v.Raw(), 1500))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tok
}

// Tail is the last n bytes of s, marked when cut.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ReadHostKey is the public half of the host key file at path.
func ReadHostKey(t testing.TB, path string) gossh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return s.PublicKey()
}

// DialSSH connects to addr as user with the given auth methods, pinning
// the host key in the file hostKeyPath; it gives up after 5 s.
func DialSSH(t testing.TB, addr, hostKeyPath, user string, auth ...gossh.AuthMethod) (*gossh.Client, error) {
	t.Helper()
	return gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User:            user,
		Auth:            auth,
		HostKeyCallback: gossh.FixedHostKey(ReadHostKey(t, hostKeyPath)),
		Timeout:         5 * time.Second,
	})
}

// WaitFor polls cond until it holds, and fails the test when d passes
// first.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
