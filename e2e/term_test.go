package e2e

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"
	gossh "golang.org/x/crypto/ssh"
)

// Keys as a terminal sends them.
const (
	keyEnter = "\r"
	keyUp    = "\x1b[A"
	keyEsc   = "\x1b"
)

// vt is a minimal terminal on an SSH PTY session: it collects output and
// answers the background-colour and device-attribute queries that
// bubbletea.MakeRenderer sends, as a real terminal would.
type vt struct {
	t      *testing.T
	sess   *gossh.Session
	stdin  io.WriteCloser
	mu     sync.Mutex
	out    bytes.Buffer
	done   chan struct{}
	exit   error
	stderr bytes.Buffer
}

// openTerm opens a 140×40 PTY session with a shell on c.
func openTerm(t *testing.T, c *gossh.Client) *vt {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	v := &vt{t: t, sess: sess, done: make(chan struct{})}
	if v.stdin, err = sess.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sess.Stderr = &lockedWriter{mu: &v.mu, w: &v.stderr}
	if err := sess.RequestPty("xterm-256color", 40, 140, gossh.TerminalModes{gossh.ECHO: 0}); err != nil {
		t.Fatalf("pty: %v", err)
	}
	if err := sess.Shell(); err != nil {
		t.Fatalf("shell: %v", err)
	}
	go func() {
		buf := make([]byte, 32<<10)
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
		v.exit = sess.Wait()
		close(v.done)
	}()
	t.Cleanup(func() { sess.Close() })
	return v
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// raw returns everything received so far, escape sequences included.
func (v *vt) raw() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

func (v *vt) errText() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stderr.String()
}

// mark returns the current output length, to look only at later output.
func (v *vt) mark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.Len()
}

// since is the output after mark m, escape sequences removed.
func (v *vt) since(m int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return ansi.Strip(v.out.String()[m:])
}

func (v *vt) send(keys string) {
	v.t.Helper()
	if _, err := io.WriteString(v.stdin, keys); err != nil {
		v.t.Fatalf("send %q: %v", keys, err)
	}
}

// keys sends each key after a short pause.
func (v *vt) keys(keys ...string) {
	v.t.Helper()
	for _, k := range keys {
		time.Sleep(120 * time.Millisecond)
		v.send(k)
	}
}

// waitText waits until the output after mark from holds every want.
func (v *vt) waitText(d time.Duration, from int, want ...string) {
	v.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := v.since(from)
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
			v.t.Fatalf("timed out after %s waiting for %q; screen text:\n%s\nstderr: %s", d, want, tail(got, 3000), v.errText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitOut polls v's output since mark for want, until d passes or stop
// closes; it reports instead of failing.
func waitOut(v *vt, from int, d time.Duration, stop <-chan struct{}, want func(string) bool) (string, bool) {
	deadline := time.Now().Add(d)
	for {
		s := v.since(from)
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

// typeKeys sends keys paced as a person types (huh moves between fields
// through commands); false if the session is gone.
func typeKeys(v *vt, keys ...string) bool {
	for _, k := range keys {
		time.Sleep(90 * time.Millisecond)
		if _, err := io.WriteString(v.stdin, k); err != nil {
			return false
		}
	}
	return true
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// createViaForm drives the TUI's create form in v: an ADMIN key named
// name with the default expiry, active. It returns the revealed token.
func createViaForm(t *testing.T, v *vt, name string) string {
	t.Helper()
	m := v.mark()
	v.send("n")
	v.waitText(5*time.Second, m, "New key", "Name")
	// huh moves between fields through commands, so keys are paced as a
	// person would type them rather than sent in one burst.
	v.keys(name,
		keyEnter, // -> description
		keyEnter, // -> role (EDITOR preselected)
		keyUp,    // ADMIN
		keyEnter, // -> the ADMIN access note
		keyEnter, // -> lifetime (1 year)
		keyEnter, // -> status (Active? Yes)
		keyEnter) // submit
	var tok string
	deadline := time.Now().Add(5 * time.Second)
	for tok == "" {
		tok = tokenRE.FindString(v.since(m))
		if time.Now().After(deadline) {
			t.Fatalf("no token revealed after the create form; screen:\n%s\nraw tail: %q", tail(v.since(m), 2500), tail(v.raw(), 1500))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tok
}
