package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// TestFirstFrameTmux measures the real binary: from starting keyward in a
// 120×40 tmux pane to the first paint of a full keys table, polling
// capture-pane every 10 ms, and the process's peak RSS (VmHWM) at that
// moment and 3 s later, once the background sorts are done.
//
// It runs only when KEYWARD_FIRSTFRAME lists key counts, e.g.
//
//	KEYWARD_FIRSTFRAME=100000,1000000 go test -run TestFirstFrameTmux -v ./e2e
//
// Databases are seeded with `keyward dev seed` into KEYWARD_FIRSTFRAME_DIR
// (default a temporary directory) and reused from there when present:
// seeding 1M keys takes about a minute, the measurement a few seconds.
func TestFirstFrameTmux(t *testing.T) {
	spec := os.Getenv("KEYWARD_FIRSTFRAME")
	if spec == "" {
		t.Skip("set KEYWARD_FIRSTFRAME=100000,1000000 to measure start-up in tmux")
	}
	requireTools(t, "tmux")
	dir := os.Getenv("KEYWARD_FIRSTFRAME_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	bin := testkit.Binary(t)
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("KEYWARD_FIRSTFRAME: bad count %q", f)
		}
		db := filepath.Join(dir, fmt.Sprintf("firstframe-%d.db", n))
		if _, err := os.Stat(db); err != nil {
			tmp := db + ".seeding"
			os.Remove(tmp)
			out, err := exec.Command(bin, "--db", tmp, "dev", "seed", "--keys", strconv.Itoa(n)).CombinedOutput()
			if err != nil {
				t.Fatalf("seeding %d keys: %v\n%s", n, err, out)
			}
			if err := os.Rename(tmp, db); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		}
		for run := range 3 {
			r := firstFrame(t, bin, db, n)
			t.Logf("%d keys, run %d: first table paint %.0f ms, full table (every key, the counts) %.0f ms; VmHWM %d MiB at first paint, %d MiB 3 s after the full table",
				n, run+1, r.firstMS, r.fullMS, r.hwm>>10, r.hwmLater>>10)
		}

	}
}

// frameTimes is one start-up: milliseconds to the first table paint and
// to the full table, and VmHWM (KiB) at the first paint and 3 s after the
// full table.
type frameTimes struct {
	firstMS, fullMS float64
	hwm, hwmLater   int
}

// firstFrame starts bin on db in a fresh tmux server and waits for the
// status line that counts n keys: the first paint may be the peeked first
// page (" n keys · loading…"), the full table adds the counts per status
// (" n keys  m active").
func firstFrame(t *testing.T, bin, db string, n int) frameTimes {
	t.Helper()
	sock := fmt.Sprintf("kw-ff-%d", time.Now().UnixNano())
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// The session starts with a shell that waits; the clock starts when
	// keyward is exec'd in its place.
	tmux("new-session", "-d", "-x", "120", "-y", "40", "sh")
	defer killTmuxServer(sock)
	time.Sleep(200 * time.Millisecond)
	first := fmt.Sprintf(" %d keys ", n)
	full := regexp.MustCompile(fmt.Sprintf(` %d keys  \d+ active`, n))
	var r frameTimes
	start := time.Now()
	tmux("send-keys", fmt.Sprintf("exec %s --db %s", bin, db), "Enter")
	pid := 0
	for time.Since(start) < 60*time.Second {
		if pid == 0 {
			pid, _ = strconv.Atoi(strings.TrimSpace(tmux("display", "-p", "#{pane_pid}")))
		}
		pane := tmux("capture-pane", "-p")
		ms := float64(time.Since(start).Microseconds()) / 1000
		if r.firstMS == 0 && strings.Contains(pane, first) {
			r.firstMS, r.hwm = ms, vmHWM(pid)
		}
		if r.firstMS > 0 && full.MatchString(pane) {
			r.fullMS = ms
			time.Sleep(3 * time.Second)
			r.hwmLater = vmHWM(pid)
			tmux("send-keys", "q")
			time.Sleep(300 * time.Millisecond)
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no full table with %q after 60 s:\n%s", full, tmux("capture-pane", "-p"))
	return r
}

func vmHWM(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return -1
}
