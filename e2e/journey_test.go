package e2e

import (
	"encoding/json"
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

// User journeys through the built binary in tmux, at 120×36 and 80×24:
// what an admin does, key by key, and what the screen shows. They are the
// proof for issue 12 items 1, 2 and 9, and run in CI (tmux is required:
// without it they fail).

// term is one tmux server with one pane of a fixed size, and the keyward
// database the journey works on.
type term struct {
	t    *testing.T
	sock string
	bin  string
	db   string
	env  []string
	w, h int
}

func newTerm(t *testing.T, w, h int) *term {
	t.Helper()
	requireTools(t, "tmux")
	bin := testkit.Binary(t)
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "data", "keyward.db")
	x := &term{t: t, bin: bin, db: db, w: w, h: h,
		sock: fmt.Sprintf("kw-journey-%d-%d", os.Getpid(), time.Now().UnixNano()),
		env: []string{"HOME=" + home, "KEYWARD_DB=" + db, "PATH=" + os.Getenv("PATH"), "TERM=xterm-256color",
			"USER=journey", "LOGNAME=journey", "LANG=C.UTF-8", "NO_COLOR=1"}}
	x.tmux("new-session", "-d", "-x", fmt.Sprint(w), "-y", fmt.Sprint(h), "-e", "KEYWARD_DB="+db, "-e", "HOME="+home)
	t.Cleanup(func() { killTmuxServer(x.sock) })
	x.tmux("set-environment", "-g", "-u", "DISPLAY")
	return x
}

func (x *term) tmux(args ...string) string {
	x.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-L", x.sock, "-f", "/dev/null"}, args...)...)
	cmd.Env = x.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (x *term) screen() string { return x.tmux("capture-pane", "-p") }

// waitFor polls the pane until it shows what, and returns the screen.
func (x *term) waitFor(what string) string {
	x.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := x.screen()
		if strings.Contains(s, what) {
			return s
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("%dx%d: timed out waiting for %q; screen:\n%s", x.w, x.h, what, s)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// keys sends tmux key names one at a time (esc must not merge with the
// next key into an alt- sequence).
func (x *term) keys(keys ...string) {
	for _, k := range keys {
		x.tmux("send-keys", k)
		time.Sleep(60 * time.Millisecond)
	}
}

// press sends keys, then waits for what.
func (x *term) press(what string, keys ...string) string {
	x.t.Helper()
	x.keys(keys...)
	return x.waitFor(what)
}

func (x *term) text(s string) {
	x.tmux("send-keys", "-l", s)
	time.Sleep(60 * time.Millisecond)
}

var journeyTable = regexp.MustCompile(` \d+ keys?  | No keys yet`)

// start runs keyward in the pane and waits for the full keys table.
func (x *term) start() {
	x.t.Helper()
	x.tmux("send-keys", "unset DISPLAY WAYLAND_DISPLAY SSH_TTY SSH_CONNECTION; clear; "+x.bin, "Enter")
	deadline := time.Now().Add(10 * time.Second)
	for !journeyTable.MatchString(x.screen()) {
		if time.Now().After(deadline) {
			x.t.Fatalf("timed out waiting for the keys table; screen:\n%s", x.screen())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quit leaves keyward from the keys table and waits until the database
// is free again.
func (x *term) quit() {
	x.t.Helper()
	x.keys("Escape", "Escape", "q")
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(x.tmux("list-panes", "-F", "#{pane_current_command}"), "keyward") {
		if time.Now().After(deadline) {
			x.t.Fatalf("keyward did not quit; screen:\n%s", x.screen())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// cli runs the binary with the journey's environment.
func (x *term) cli(args ...string) string {
	x.t.Helper()
	cmd := exec.Command(x.bin, args...)
	cmd.Env = x.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		x.t.Fatalf("keyward %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// createKey walks the create form: EDITOR, all resources, the first
// scope, the expiry option at index exp (0 = 30 days … 4 = never), with
// date typed for "Custom date…".
func (x *term) createKey(name string, exp int, date string) {
	x.t.Helper()
	x.press("┃ Name", "n")
	x.text(name)
	x.press("┃ Description", "Enter")
	x.press("┃ Role", "Enter")
	x.press("┃ Resources", "Enter")
	x.press("┃ Scopes", "Enter")
	x.press("┃ Expires", "x", "Enter")
	x.keys("Home")
	for i := 0; i < exp; i++ {
		x.keys("Down")
	}
	if date != "" {
		x.waitFor("> Custom date")
		x.press("Expiry date (UTC)", "Enter")
		x.keys("C-u")
		x.text(date)
		x.press("┃ Active?", "Enter")
	} else {
		x.press("┃ Active?", "Enter")
	}
	s := x.press("Your new API key", "Enter")
	if strings.Contains(s, "Conflict") || strings.Contains(s, "⚠ Error") {
		x.t.Fatalf("create %s:\n%s", name, s)
	}
	x.press("Stored it?", "Enter")
	x.keys("y")
	x.waitFor(name)
}

// openKey filters the table to name and opens its detail.
func (x *term) openKey(name string) string {
	x.t.Helper()
	x.keys("/")
	x.text(name)
	x.keys("Enter")
	return x.press("History", "Enter")
}

func journeySizes(t *testing.T, run func(t *testing.T, x *term)) {
	for _, sz := range [][2]int{{120, 36}, {80, 24}} {
		t.Run(fmt.Sprintf("%dx%d", sz[0], sz[1]), func(t *testing.T) {
			t.Parallel()
			run(t, newTerm(t, sz[0], sz[1]))
		})
	}
}

// Create with every expiry choice, including a custom date typed into
// the field that follows the select.
func TestJourneyCreateEveryExpiry(t *testing.T) {
	journeySizes(t, func(t *testing.T, x *term) {
		x.start()
		custom := time.Now().UTC().AddDate(0, 7, 0).Format(time.DateOnly)
		names := []string{"exp-30d", "exp-90d", "exp-1y", "exp-custom", "exp-never"}
		for i, n := range names {
			date := ""
			if n == "exp-custom" {
				date = custom
			}
			x.createKey(n, i, date)
		}
		x.quit()
		var list []struct {
			Name      string     `json:"name"`
			ExpiresAt *time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal([]byte(x.cli("keys", "list", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		want := map[string]*time.Time{}
		for n, d := range map[string]time.Duration{"exp-30d": 30 * 24 * time.Hour, "exp-90d": 90 * 24 * time.Hour, "exp-1y": 365 * 24 * time.Hour} {
			w := now.Add(d)
			want[n] = &w
		}
		c, _ := time.Parse(time.DateOnly, custom)
		want["exp-custom"], want["exp-never"] = &c, nil
		if len(list) != len(names) {
			t.Fatalf("%d keys, want %d: %+v", len(list), len(names), list)
		}
		for _, k := range list {
			w := want[k.Name]
			switch {
			case w == nil && k.ExpiresAt != nil, w != nil && k.ExpiresAt == nil:
				t.Errorf("%s expires %v, want %v", k.Name, k.ExpiresAt, w)
			case w != nil && (k.ExpiresAt.Sub(*w) > time.Hour || w.Sub(*k.ExpiresAt) > time.Hour):
				t.Errorf("%s expires %v, want about %v", k.Name, k.ExpiresAt, w)
			}
		}
	})
}

// Regenerate from the key detail: the detail shows the new secret's hint
// and version and the regenerate in its history; the next edit saves
// without a conflict with oneself.
func TestJourneyEditAfterRegenerate(t *testing.T) {
	journeySizes(t, func(t *testing.T, x *term) {
		x.cli("keys", "create", "--name", "regen-me", "--scope", "coupons:read")
		x.start()
		before := x.openKey("regen-me")
		if !strings.Contains(before, "(version 1)") {
			t.Fatalf("detail before:\n%s", before)
		}
		x.press("Regenerate the secret", "r")
		x.press("Your new API key", "y")
		x.press("Stored it?", "Enter")
		after := x.press("(version 2)", "y")
		hint := regexp.MustCompile(`kw_[A-Za-z0-9]{4}…`)
		if hint.FindString(after) == hint.FindString(before) {
			t.Fatalf("the hint did not change:\n%s", after)
		}
		if !strings.Contains(after, "key.regenerate") {
			t.Fatalf("history lacks the regenerate:\n%s", after)
		}
		x.press("Edit regen-me", "e")
		x.keys("End")
		x.text("x2") // rename to regen-mex2
		x.press("┃ Description", "Enter")
		x.press("┃ Role", "Enter")
		x.press("┃ Resources", "Enter")
		x.press("┃ Scopes", "Enter")
		x.press("┃ Expires", "Enter")
		x.press("┃ Active?", "Enter")
		s := x.press("Saved key", "Enter")
		if strings.Contains(s, "Conflict") {
			t.Fatalf("a conflict with oneself:\n%s", s)
		}
		x.waitFor("(version 3)")
		x.waitFor("regen-mex2")
		x.quit()
	})
}

// Reveal (which generates the first secret) and rotate the shared secret,
// and see the secret screen change each time.
func TestJourneySecretRevealRotate(t *testing.T) {
	journeySizes(t, func(t *testing.T, x *term) {
		x.start()
		x.press("No shared secret yet", "s")
		x.press("Reveal the shared secret?", "v")
		x.press("Services send it as", "y")
		x.press("Stored it?", "Enter")
		s := x.press("Hint", "y")
		if strings.Contains(s, "No shared secret yet") {
			t.Fatalf("still no secret after the reveal:\n%s", s)
		}
		hintRe := regexp.MustCompile(`Hint\s+(\S+)`)
		first := hintRe.FindStringSubmatch(s)
		x.press("Rotate the shared secret?", "r")
		x.press("New shared secret", "y")
		x.press("Stored it?", "Enter")
		x.keys("y")
		deadline := time.Now().Add(10 * time.Second)
		for {
			s = x.screen()
			now := hintRe.FindStringSubmatch(s)
			if now != nil && first != nil && now[1] != first[1] && !regexp.MustCompile(`Rotated\s+never`).MatchString(s) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the secret screen did not change after the rotate (hint was %v):\n%s", first, s)
			}
			time.Sleep(30 * time.Millisecond)
		}
		x.quit()
	})
}

// Disable the operator who created a key: the table shows the key as
// CREATOR_DISABLED.
func TestJourneyDisableCreator(t *testing.T) {
	journeySizes(t, func(t *testing.T, x *term) {
		x.cli("keys", "list") // a new database: the OS user is its ADMIN
		x.cli("operators", "add", "carol", "--role", "admin")
		x.cli("--as", "carol", "keys", "create", "--name", "carols-key", "--scope", "coupons:read")
		x.start()
		x.press("Key fingerprints", "o")
		for i := 0; i < 5 && !strings.Contains(x.screen(), "› carol"); i++ {
			x.keys("j")
		}
		x.press("Disable operator", "t")
		x.press("disabled", "y")
		x.keys("Escape")
		x.waitFor("carols-key")
		x.waitFor("CREATOR_DISABLED")
		x.quit()
	})
}

// A database file that cannot be written: nothing that writes is
// offered, and a write key says why.
func TestJourneyReadOnlyFile(t *testing.T) {
	journeySizes(t, func(t *testing.T, x *term) {
		x.cli("keys", "create", "--name", "frozen", "--scope", "coupons:read")
		if err := os.Chmod(x.db, 0o400); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 { // root writes through 0400
			if out, err := exec.Command("chattr", "+i", x.db).CombinedOutput(); err != nil {
				t.Fatalf("chattr +i (as root, 0400 does not stop writes): %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("chattr", "-i", x.db).Run() })
		}
		x.start()
		s := x.waitFor("(read-only)")
		for _, offered := range []string{"new key", "edit", "delete"} {
			if strings.Contains(s, offered) {
				t.Errorf("a read-only file offers %q:\n%s", offered, s)
			}
		}
		x.press("n: not available", "n")
		if strings.Contains(x.screen(), "┃ Name") {
			t.Fatalf("n opened the form:\n%s", x.screen())
		}
		x.press("(version 1)", "Enter")
		x.press("r: not available", "r")
		x.quit()
	})
}
