package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// Files beside the database, the database path and the lock message,
// through the built binary.

// TestDBPathRules (issue 12.13): --db "" is a usage error; a --db in a
// missing directory is refused and creates nothing, unless --create is
// given (then the directory is 0700). The default location is still
// created on first run.
func TestDBPathRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.Run("", "--db", "", "keys", "list")
	if r.Code != 2 || !strings.Contains(r.Stderr, "--db needs a path") {
		t.Errorf("--db \"\": %s", r)
	}
	typo := filepath.Join(e.Dir, "tpyo", "keyward.db")
	r = e.Run("", "--db", typo, "keys", "list")
	if r.Code != 1 || !strings.Contains(r.Stderr, filepath.Dir(typo)+" does not exist") || !strings.Contains(r.Stderr, "--create") {
		t.Errorf("--db in a missing directory: %s", r)
	}
	if _, err := os.Stat(filepath.Dir(typo)); !os.IsNotExist(err) {
		t.Fatalf("the missing directory was created: %v", err)
	}
	e.OK("--db", typo, "--create", "keys", "list")
	if fi, err := os.Stat(filepath.Dir(typo)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("--create made %v %v, want a 0700 directory", fi, err)
	}
	e.OK("--db", typo, "keys", "list") // it exists now

	// The default: no --db, no $KEYWARD_DB, a fresh HOME.
	home := t.TempDir()
	cmd := exec.Command(testkit.Binary(t), "keys", "list")
	cmd.Env = append(testkit.Without(e.Environ(), "KEYWARD_DB", "HOME"), "HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keys list with the default database on a fresh HOME: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(home, ".local", "share", "keyward", "keyward.db")); err != nil {
		t.Errorf("default database not created: %v", err)
	}
}

// TestLockMessageRealPort (issue 12.8): with serve --ssh 127.0.0.1:0, a
// refused command names the port the server is bound to and a login
// name: "ssh -p PORT OPERATOR@127.0.0.1", never "ssh -p 0".
func TestLockMessageRealPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.OK("keys", "list")
	srv := e.startServe("--ssh", "127.0.0.1:0")
	m := regexp.MustCompile(`ssh listening on 127\.0\.0\.1:(\d+)`).FindStringSubmatch(srv.logs())
	if m == nil {
		t.Fatalf("no SSH address in the log: %s", srv.logs())
	}
	r := e.Run("", "keys", "list")
	want := "ssh -p " + m[1] + " OPERATOR@127.0.0.1"
	if r.Code != 1 || !strings.Contains(r.Stderr, want) || strings.Contains(r.Stderr, "-p 0 ") {
		t.Errorf("lock message lacks %q: %s", want, r)
	}
	srv.stop()
}

// TestOnlineBackupWhileServing (issue 11.7): with a real `keyward serve`
// holding the database and HTTP verifications writing last-used times
// meanwhile, `keyward backup FILE` succeeds; the copy is 0600, opens with
// `keyward --db FILE keys list` and holds every key. A serve killed with
// SIGKILL leaves its socket behind, and that stale socket does not stop
// the next serve (nor its online backup).
func TestOnlineBackupWhileServing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.OK("dev", "seed", "--keys", "3000")
	k := e.Create("--name", "online-backup", "--scope", "coupons:read")
	secret := testkit.Decode[map[string]any](t, e.OK("secret", "show", "--json"))["secret"].(string)
	srv := e.startServe("--ssh", "", "--flush-interval", "20ms")
	if !strings.Contains(srv.logs(), "backup socket "+e.DB+".sock") {
		t.Fatalf("serve did not announce its backup socket: %s", srv.logs())
	}

	// Writers: verifications, whose last-used times are flushed every 20 ms.
	stop := make(chan struct{})
	var verified atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"key": %q, "scope": "coupons:read"}`, k.Token)
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", "http://"+srv.httpAddr+"/v1/keys/verify", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				verified.Add(1)
			}
		}()
	}
	for i := range 2 {
		dest := filepath.Join(e.Dir, fmt.Sprintf("online-%d.db", i))
		before := verified.Load()
		r := e.Run("", "backup", dest)
		if r.Code != 0 || !strings.Contains(r.Stdout, "from the running keyward serve") {
			t.Fatalf("backup while serving: %s\nserve log:\n%s", r, srv.logs())
		}
		if verified.Load() == before {
			t.Logf("round %d: no verification overlapped the backup", i)
		}
		if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup file: %v %v, want mode 0600", fi, err)
		}
		if tmps, _ := filepath.Glob(filepath.Join(e.Dir, ".online-*")); len(tmps) != 0 {
			t.Fatalf("temporary files left behind: %v", tmps)
		}
		keys := testkit.Decode[[]cliKey](t, e.OK("--db", dest, "keys", "list", "--json"))
		found := false
		for _, bk := range keys {
			found = found || bk.ID == k.ID
		}
		if len(keys) != 3001 || !found {
			t.Fatalf("backup %d holds %d keys (want 3001, with %s: %v)", i, len(keys), k.ID, found)
		}
		if r := e.Run(k.Token+"\n", "--db", dest, "verify", "--scope", "coupons:read"); r.Code != 0 {
			t.Fatalf("the key does not verify against the backup: %s", r)
		}
	}
	close(stop)
	wg.Wait()
	if verified.Load() == 0 {
		t.Fatal("no verification ran during the backups")
	}
	// An existing FILE is still refused without --force, online too.
	if r := e.Run("", "backup", filepath.Join(e.Dir, "online-0.db")); r.Code != 2 || !strings.Contains(r.Stderr, "--force") {
		t.Errorf("backup over an existing file: %s", r)
	}
	if r := e.OK("backup", "--force", filepath.Join(e.Dir, "online-0.db")); !strings.Contains(r.Stdout, "from the running keyward serve") {
		t.Errorf("backup --force while serving: %s", r)
	}

	// SIGKILL leaves the socket; the next serve replaces it.
	if err := srv.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Wait()
	if fi, err := os.Lstat(e.DB + ".sock"); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("a killed serve should leave its socket: %v %v", fi, err)
	}
	if _, err := os.Lstat(e.DB + ".lock"); err != nil {
		t.Fatalf("a killed serve should leave its lock file: %v", err)
	}
	// With no server, the stale socket does not fool backup: it is an
	// offline backup again.
	if r := e.OK("backup", filepath.Join(e.Dir, "offline.db")); strings.Contains(r.Stdout, "running keyward serve") {
		t.Errorf("offline backup claimed a server: %s", r)
	}
	srv = e.startServe("--ssh", "", "--flush-interval", "20ms")
	if r := e.Run("", "backup", filepath.Join(e.Dir, "after-kill.db")); r.Code != 0 {
		t.Fatalf("backup after a restart over a stale socket: %s\n%s", r, srv.logs())
	}
	srv.stop()
	if _, err := os.Lstat(e.DB + ".sock"); !os.IsNotExist(err) {
		t.Errorf("a clean stop should remove the socket: %v", err)
	}
}

// TestBackupSocketPlanted: a file planted where serve's backup socket
// goes is neither removed nor used: serve refuses to start, naming it.
func TestBackupSocketPlanted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.OK("keys", "list")
	if err := os.WriteFile(e.DB+".sock", []byte("planted"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := e.command(ctx, "serve", "--ssh", "", "--http", testkit.FreeAddr(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), e.DB+".sock") || !strings.Contains(string(out), "not a socket") {
		t.Fatalf("serve over a planted socket path: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(e.DB + ".sock"); string(b) != "planted" {
		t.Fatalf("the planted file was changed")
	}
}

// TestTUIWarningsWaitForQuit: warnings about files and modes do not
// scribble over the TUI (whose database opens in the background while the
// first page is shown); they are printed once it has quit.
func TestTUIWarningsWaitForQuit(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is needed for this test: %v", err)
	}
	e := newEnv(t)
	e.Create("--name", "warned", "--scope", "coupons:read") // a key: the TUI peeks first
	if err := os.Chmod(e.DB, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := fmt.Sprintf("kw-files-%d-%d", os.Getpid(), time.Now().UnixNano())
	tmux := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "tmux", append([]string{"-L", sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
		return string(out), err
	}
	args := []string{"new-session", "-d", "-s", "w", "-x", "120", "-y", "40"}
	for _, kv := range e.Environ() {
		args = append(args, "-e", kv)
	}
	args = append(args, testkit.Binary(t)+"; echo EXITED; sleep 30")
	if out, err := tmux(args...); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	defer killTmuxServer(sock)
	wait := func(what string, cond func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s, _ := tmux("capture-pane", "-p", "-J", "-t", "w")
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; screen:\n%s", what, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait("the loaded keys table", func(s string) bool { return strings.Contains(s, "warned") && !strings.Contains(s, "loading") })
	time.Sleep(300 * time.Millisecond) // let anything stray reach the screen
	if s, _ := tmux("capture-pane", "-p", "-J", "-t", "w"); strings.Contains(s, "warning") {
		t.Fatalf("a warning reached the screen while the TUI runs:\n%s", s)
	}
	if out, err := tmux("send-keys", "-t", "w", "q"); err != nil {
		t.Fatalf("tmux send-keys: %v %s", err, out)
	}
	s := wait("the TUI to quit", func(s string) bool { return strings.Contains(s, "EXITED") })
	if !strings.Contains(s, "keyward: warning: database "+e.DB+" has mode 0644") {
		t.Fatalf("the warning was not printed after quitting:\n%s", s)
	}
}
