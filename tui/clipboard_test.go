package tui

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The 30-second clear over OSC 52 must really replace the secret in
// tmux, and must not claim more than it knows (issue 12.10). tmux (with
// set-clipboard on) ignores an empty OSC 52, which is what the clear used
// to send while the status bar said "Clipboard cleared". The bytes our
// clipboard writes are played into a real tmux pane, and tmux's buffer is
// read back with show-buffer.
func TestOSC52ClearReplacesSecretInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is required for this test (CI installs it)")
	}
	const secret = "kw_TestSecretThatMustNotStayOnTheClipboard0123"
	dir := t.TempDir()
	var copied, cleared bytes.Buffer
	if err := OSC52Clipboard(&copied).Copy(secret); err != nil {
		t.Fatal(err)
	}
	res, err := OSC52Clipboard(&cleared).(sumClearer).clearIfSum(sha256.Sum256([]byte(secret)))
	if err != nil {
		t.Fatal(err)
	}
	if res != clearSent || strings.Contains(strings.ToLower(res.message()), "cleared") {
		t.Errorf("an OSC 52 clear reports %q: it cannot know the clipboard was cleared", res.message())
	}
	for name, b := range map[string][]byte{"copy": copied.Bytes(), "clear": cleared.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	sock := fmt.Sprintf("kw-osc52-%d", time.Now().UnixNano())
	tmux := func(args ...string) (string, error) {
		out, err := exec.Command("tmux", append([]string{"-L", sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := tmux("new-session", "-d", "-s", "c", "-x", "80", "-y", "10", "sleep 60"); err != nil {
		t.Fatalf("tmux: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "-L", sock, "kill-server").Run() })
	if out, err := tmux("set", "-s", "set-clipboard", "on"); err != nil {
		t.Fatalf("tmux: %v\n%s", err, out)
	}
	play := func(name, want string) {
		t.Helper()
		if out, err := tmux("respawn-pane", "-k", "-t", "c", "cat "+filepath.Join(dir, name)+"; sleep 60"); err != nil {
			t.Fatalf("tmux: %v\n%s", err, out)
		}
		var buf string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if buf, _ = tmux("show-buffer"); buf == want {
				return
			}
		}
		t.Fatalf("after the %s, tmux's clipboard holds %q, want %q", name, buf, want)
	}
	play("copy", secret)
	play("clear", " ")
}
