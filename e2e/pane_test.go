package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// pane is one tmux session on a private server, driven as a person would:
// keys with a pause between them, the screen read back. The tests that
// drive the TUI locally or over OpenSSH share it.
type pane struct {
	t     *testing.T
	sock  string
	conf  string
	name  string
	trail func() string // more to show when a wait times out (a serve log)
}

var paneSeq atomic.Int64

// newPane starts cmd in a w×h tmux session with the given tmux.conf
// lines and environment ("K=V"). The server is killed when the test ends.
// A missing tmux fails the test: .ci/run installs it.
func newPane(t *testing.T, w, h int, conf []string, env []string, cmd string) *pane {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is not installed (.ci/run installs it): %v", err)
	}
	p := &pane{t: t, name: "p", sock: fmt.Sprintf("kw-e2e-%d-%d", os.Getpid(), paneSeq.Add(1)), conf: "/dev/null"}
	if len(conf) > 0 {
		p.conf = filepath.Join(t.TempDir(), "tmux.conf")
		if err := os.WriteFile(p.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"new-session", "-d", "-s", p.name, "-x", fmt.Sprint(w), "-y", fmt.Sprint(h)}
	for _, kv := range env {
		args = append(args, "-e", kv)
	}
	if out, err := p.tmux(append(args, cmd)...); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(p.close)
	return p
}

// close ends the pane's server and what runs in it (a TUI holding the
// database's lock, say). Safe to call again.
func (p *pane) close() { killTmuxServer(p.sock) }

// killTmuxServer ends the tmux server on socket sock and waits (5 s at
// most) until the programs in its panes have exited: the test's temporary
// directory is removed next, and a keyward still writing there (its lock
// file, a last flush) made that fail with "directory not empty".
func killTmuxServer(sock string) {
	out, _ := exec.Command("tmux", "-L", sock, "list-panes", "-a", "-F", "#{pane_pid}").Output()
	_ = exec.Command("tmux", "-L", sock, "kill-server").Run()
	deadline := time.Now().Add(5 * time.Second)
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// tmux runs a tmux command on the pane's server (10 s at most).
func (p *pane) tmux(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tmux", append([]string{"-L", p.sock, "-f", p.conf}, args...)...).CombinedOutput()
	return string(out), err
}

// screen is what the pane shows now, wrapped lines joined.
func (p *pane) screen() string { s, _ := p.tmux("capture-pane", "-p", "-J", "-t", p.name); return s }

// wait returns the screen once cond holds, failing the test after d.
func (p *pane) wait(what string, d time.Duration, cond func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := p.screen()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			more := ""
			if p.trail != nil {
				more = "\n" + p.trail()
			}
			p.t.Fatalf("timed out waiting for %s; screen:\n%s%s", what, s, more)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keys sends keys 150 ms apart; a "lit:" prefix sends text as typed.
func (p *pane) keys(ks ...string) {
	p.t.Helper()
	for _, k := range ks {
		time.Sleep(150 * time.Millisecond)
		args := []string{"send-keys", "-t", p.name}
		if lit, ok := strings.CutPrefix(k, "lit:"); ok {
			args = append(args, "-l", lit)
		} else {
			args = append(args, k)
		}
		if out, err := p.tmux(args...); err != nil {
			p.t.Fatalf("tmux send-keys %q: %v %s", k, err, out)
		}
	}
}
