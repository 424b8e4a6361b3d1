package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// TestE2ETmux builds the real binary and drives the TUI in tmux: create a
// key through the form, copy the token from the reveal screen (OSC 52 into
// tmux's buffer: no DISPLAY, so atotto has no tool), verify it with the
// CLI, disable it in the TUI, delete it in the TUI.
func TestE2ETmux(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	requireTools(t, "tmux")
	dir := t.TempDir()
	bin := testkit.Binary(t)
	home := filepath.Join(dir, "home")
	os.MkdirAll(home, 0o700)
	db := filepath.Join(dir, "data", "keyward.db")
	env := []string{"HOME=" + home, "KEYWARD_DB=" + db, "PATH=" + os.Getenv("PATH"), "TERM=xterm-256color", "USER=e2e", "LANG=C.UTF-8"}

	sock := fmt.Sprintf("kw-e2e-%d", time.Now().UnixNano())
	tmux := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("tmux", append([]string{"-L", sock, "-f", "/dev/null"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-x", "120", "-y", "40", "-e", "KEYWARD_DB="+db, "-e", "HOME="+home)
	t.Cleanup(func() { killTmuxServer(sock) })
	tmux("set", "-g", "set-clipboard", "on")
	tmux("set-environment", "-g", "-u", "DISPLAY")
	screen := func() string { return tmux("capture-pane", "-p") }
	waitFor := func(what string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if s := screen(); strings.Contains(s, what) {
				return s
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %q; screen:\n%s", what, screen())
		return ""
	}
	send := func(keys ...string) {
		for _, k := range keys {
			tmux("send-keys", k)
			time.Sleep(120 * time.Millisecond) // esc must not merge with the next key
		}
	}
	// startTUI waits for the full table: on a database with keys the
	// first frame is the peeked first page (" n keys · loading…"), where
	// only moves work.
	full := regexp.MustCompile(` \d+ keys?  | No keys yet`)
	startTUI := func() {
		tmux("send-keys", "unset DISPLAY WAYLAND_DISPLAY SSH_TTY SSH_CONNECTION; "+bin, "Enter")
		deadline := time.Now().Add(10 * time.Second)
		for !full.MatchString(screen()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for the keys table; screen:\n%s", screen())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cli := func(stdin string, args ...string) string {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}

	// Create a key through the form.
	startTUI()
	waitFor("Press n")
	send("n")
	waitFor("Description")
	tmux("send-keys", "-l", "e2e-key")
	send("Enter", "Enter") // name, description
	send("Enter")          // role EDITOR
	waitFor("Resources")
	send("Enter") // no resources: all
	send("x", "Enter")
	waitFor("Expires")
	send("Enter") // 1 year
	waitFor("Active?")
	send("Enter")
	s := waitFor("Your new API key")
	token := regexp.MustCompile(`kw_[A-Za-z0-9]{30,}`).FindString(s)
	if token == "" {
		t.Fatalf("no token on the reveal screen:\n%s", s)
	}
	send("c")
	waitFor("Sent by OSC 52")
	if buf := strings.TrimSpace(tmux("show-buffer")); buf != token {
		t.Fatalf("tmux buffer = %q, want the token %q", buf, token)
	}
	send("Enter")
	waitFor("Stored it?")
	send("y")
	waitFor(" 1 key ")
	if strings.Contains(screen(), token) {
		t.Fatal("the token is still on screen after leaving the reveal")
	}
	send("q")
	time.Sleep(300 * time.Millisecond)

	if out := cli(token+"\n", "verify"); !strings.Contains(out, "VALID") || strings.Contains(out, "INVALID") {
		t.Fatalf("verify after create: %s", out)
	}

	// Disable it in the TUI.
	startTUI()
	waitFor("e2e-key")
	send("t")
	waitFor("Disable key")
	send("y")
	waitFor("1 disabled")
	send("q")
	time.Sleep(300 * time.Millisecond)
	if out := cli(token+"\n", "verify"); !strings.Contains(out, "DISABLED") {
		t.Fatalf("verify after disable: %s", out)
	}

	// Delete it in the TUI.
	startTUI()
	waitFor("e2e-key")
	send("d")
	waitFor("lose access at once")
	send("y")
	waitFor("Press n")
	send("q")
	time.Sleep(300 * time.Millisecond)
	if out := cli(token+"\n", "verify"); !strings.Contains(out, "NOT_FOUND") {
		t.Fatalf("verify after delete: %s", out)
	}
}
