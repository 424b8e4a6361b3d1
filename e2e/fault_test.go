package e2e

// Fault tests through the real binary: a read-only database file, a full
// disk, damaged or foreign files at --db, and the modes of every file
// keyward writes. Mounting and chattr need root; where the sandbox does
// not allow them the test says exactly why it skips.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/store"
)

// noCrash fails if a command's output looks like a Go panic or a runtime
// fault instead of an error message.
func noCrash(t *testing.T, what string, r result) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine ", "fatal error", "SIGSEGV", "SIGBUS"} {
		if strings.Contains(r.Stderr, s) || strings.Contains(r.Stdout, s) {
			t.Fatalf("%s crashed instead of reporting an error:\n%s", what, r)
		}
	}
}

// mountTmpfs mounts a small tmpfs at dir (unmounted at cleanup), or skips
// the test with the reason.
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs at %s (needs root and CAP_SYS_ADMIN): %v: %s", dir, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		for i := 0; i < 50; i++ { // a killed child may still hold a file for a moment
			if exec.Command("umount", dir).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("could not unmount %s", dir)
	})
}

// checkDB opens the database in this process and runs bbolt's Tx.Check.
func checkDB(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, store.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("open %s after the fault: %v", path, err)
	}
	if err := st.Check(); err != nil {
		st.Close()
		t.Fatalf("Tx.Check after the fault: %v", err)
	}
	return st
}

// tuiCreate runs the local TUI in tmux on e's database, creates an ADMIN
// key named name through the form and returns the screen afterwards.
func tuiCreate(t *testing.T, e *env, name string) string {
	t.Helper()
	return tuiKeys(t, e, []string{"n", "lit:" + name, "Enter", "Enter", "Up", "Enter", "Enter", "Enter", "Enter"},
		"the save's outcome", func(s string) bool {
			return strings.Contains(s, "⚠") || tokenRE.MatchString(s) || strings.Contains(s, "panic")
		})
}

// tuiKeys runs the TUI on e's database in tmux, sends keys (a "lit:"
// prefix sends text) and returns the screen once done holds.
func tuiKeys(t *testing.T, e *env, keys []string, what string, done func(string) bool) string {
	t.Helper()
	p := newPane(t, 120, 40, nil, e.Environ(), testkit.Binary(t)+"; sleep 30")
	defer p.close() // the TUI holds the database until it ends
	p.wait("the keys table", 15*time.Second, func(s string) bool { return strings.Contains(s, "Name") })
	p.keys(keys...)
	s := p.wait("TUI: "+what, 15*time.Second, done)
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "⚠") {
			t.Logf("TUI: %s", strings.TrimSpace(line))
		}
	}
	return s
}

// readOnlyChecks runs every promise about a database that cannot be
// written: reads work, each kind of write exits 1 with a message naming
// the file, serve refuses to start, the TUI shows the refusal, and the
// file's bytes never change.
func readOnlyChecks(t *testing.T, e *env, before []byte, ids []string) {
	t.Helper()
	ks := e.Keys()
	if len(ks) != len(ids) {
		t.Fatalf("keys list on a read-only database: %d keys, want %d", len(ks), len(ids))
	}
	for _, args := range [][]string{
		{"keys", "create", "--name", "refused", "--scope", "coupons:read"},
		{"keys", "disable", ids[0]},
		{"keys", "delete", ids[0], "--yes"},
		{"secret", "rotate"},
		{"operators", "add", "bob", "--role", "admin", "--key", testPublicKey(t)},
		{"serve", "--ssh", "", "--http", "127.0.0.1:0"},
	} {
		r := e.Run("", args...)
		noCrash(t, strings.Join(args, " "), r)
		if r.Code != 1 || !strings.Contains(r.Stderr, e.DB) || !strings.Contains(r.Stderr, "read-only") {
			t.Errorf("%s on a read-only database: want exit 1 naming %s as read-only, got %s", strings.Join(args, " "), e.DB, r)
		}
	}
	// verify reads; last-used cannot be kept, and that is not an error.
	r := e.Run("kw_not_a_token\n", "verify")
	noCrash(t, "verify", r)
	if r.Code != 1 || !strings.HasPrefix(r.Stdout, "MALFORMED") {
		t.Errorf("verify on a read-only database: %s", r)
	}
	// The TUI does not offer a create on a file it cannot write: n says
	// why, and no form opens.
	s := tuiKeys(t, e, []string{"n"}, "the refusal of n", func(s string) bool {
		return strings.Contains(s, "not available") || strings.Contains(s, "New key") || strings.Contains(s, "panic")
	})
	if !strings.Contains(s, "n: not available") || !strings.Contains(s, "read-only") || strings.Contains(s, "New key") {
		t.Errorf("TUI n on a read-only database: want the read-only refusal on screen and no form, got:\n%s", s)
	}
	after, err := os.ReadFile(e.DB)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("the read-only database file changed")
	}
}

func seedForFault(t *testing.T, e *env) (ids []string) {
	t.Helper()
	for _, n := range []string{"alpha", "beta"} {
		ids = append(ids, e.Create("--name", n, "--scope", "coupons:read").ID)
	}
	e.OK("secret", "show")
	return ids
}

func TestFaultReadOnlyDatabase(t *testing.T) {
	t.Run("chattr-immutable", func(t *testing.T) {
		if _, err := exec.LookPath("chattr"); err != nil {
			t.Skipf("chattr is not installed: %v", err)
		}
		e := newEnv(t)
		ids := seedForFault(t, e)
		if out, err := exec.Command("chattr", "+i", e.DB).CombinedOutput(); err != nil {
			t.Skipf("chattr +i %s is not permitted here (needs root on ext4/xfs/btrfs; tmpfs lacks it): %v: %s", e.DB, err, bytes.TrimSpace(out))
		}
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", e.DB).Run() })
		before, _ := os.ReadFile(e.DB)
		readOnlyChecks(t, e, before, ids)
		if err := exec.Command("chattr", "-i", e.DB).Run(); err != nil {
			t.Fatal(err)
		}
		st := checkDB(t, e.DB)
		st.Close()
		e.OK("keys", "create", "--name", "writable-again", "--scope", "coupons:read")
	})
	t.Run("read-only-mount", func(t *testing.T) {
		e := newEnv(t)
		mnt := filepath.Dir(e.DB)
		if err := os.MkdirAll(mnt, 0o700); err != nil {
			t.Fatal(err)
		}
		mountTmpfs(t, mnt, "4m")
		ids := seedForFault(t, e)
		if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
			t.Skipf("cannot remount %s read-only: %v: %s", mnt, err, bytes.TrimSpace(out))
		}
		before, _ := os.ReadFile(e.DB)
		readOnlyChecks(t, e, before, ids)
		if out, err := exec.Command("mount", "-o", "remount,rw", mnt).CombinedOutput(); err != nil {
			t.Fatalf("remount rw: %v %s", err, out)
		}
		st := checkDB(t, e.DB)
		st.Close()
	})
}

// fillDisk writes zeros into dir until the file system is full.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

func TestFaultDiskFull(t *testing.T) {
	e := newEnv(t)
	mnt := filepath.Dir(e.DB)
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, mnt, "2m")
	seedForFault(t, e)
	fillDisk(t, mnt)

	// Create until the disk refuses; every acknowledged key must survive,
	// the refused one must leave no trace.
	acked := map[string]string{}
	var refused result
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("full-%03d", i)
		r := e.Run("", "keys", "create", "--name", name, "--scope", "coupons:read", "--json")
		noCrash(t, "keys create on a full disk", r)
		if r.Code == 0 {
			acked[name] = testkit.Decode[cliKey](t, r).ID
			continue
		}
		refused = r
		if r.Code != 1 || !strings.Contains(r.Stderr, e.DB) || !strings.Contains(r.Stderr, "no space left") || !strings.Contains(r.Stderr, "nothing was changed") {
			t.Fatalf("keys create on a full disk: want exit 1 naming the file, the cause and that nothing changed; got %s", r)
		}
		for _, k := range e.Keys() {
			if k.Name == name {
				t.Fatalf("the refused create %s is in the database", name)
			}
		}
		break
	}
	if refused.Stderr == "" {
		t.Fatalf("200 creates on a full 2 MiB tmpfs all succeeded; the disk never filled")
	}
	t.Logf("disk full after %d acknowledged creates: %s", len(acked), strings.TrimSpace(refused.Stderr))

	// Reads still work on a full disk.
	if n := len(e.Keys()); n != 2+len(acked) {
		t.Fatalf("keys list on a full disk: %d keys, want %d", n, 2+len(acked))
	}
	// The TUI shows the failure and keeps running.
	s := tuiCreate(t, e, "tui-on-full-disk")
	if !strings.Contains(s, "no space left") || tokenRE.MatchString(s) {
		t.Errorf("TUI create on a full disk: want the error on screen, got:\n%s", s)
	}

	// serve on a full disk: starts (nothing to write yet), answers, and
	// when stopped either flushes or reports the failed flush; no crash.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := e.command(ctx, "serve", "--ssh", "", "--http", addr, "--flush-interval", "200ms")
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, "http://"+addr+"/healthz")
	time.Sleep(500 * time.Millisecond)
	_ = srv.Process.Signal(syscall.SIGTERM)
	err = srv.Wait()
	if out := logs.String(); strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Fatalf("serve on a full disk crashed: %v\n%s", err, out)
	}

	// Free the space: the file checks clean and holds exactly what was
	// acknowledged.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	st := checkDB(t, e.DB)
	for name, id := range acked {
		k, err := st.Key(id)
		if err != nil || k.Name != name {
			t.Errorf("acknowledged key %s (%s) after the disk filled: %v", name, id, err)
		}
	}
	if id, ok := st.KeyIDByName("tui-on-full-disk"); ok {
		t.Errorf("the TUI's refused create is in the database as %s", id)
	}
	st.Close()
	e.OK("keys", "create", "--name", "space-again", "--scope", "coupons:read")
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFaultFilesAtDB: what the store tests do not cover, through the CLI:
// truncated copies of a real database, a directory, a device, a FIFO, a
// newer schema and an empty file.
func TestFaultFilesAtDB(t *testing.T) {
	t.Parallel()
	src := newEnv(t)
	for i := 0; i < 30; i++ {
		src.OK("keys", "create", "--name", fmt.Sprintf("k%02d", i), "--description", strings.Repeat("d", 200), "--scope", "coupons:read")
	}
	real, err := os.ReadFile(src.DB)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	refuse := func(name, path, want string) {
		t.Helper()
		var before []byte
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
			before, _ = os.ReadFile(path)
		}
		e := newEnv(t)
		for _, args := range [][]string{{"keys", "list"}, {"keys", "create", "--name", "x", "--scope", "coupons:read"}} {
			r := e.Run("", append([]string{"--db", path}, args...)...)
			noCrash(t, name, r)
			if r.Code != 1 || !strings.Contains(r.Stderr, path) || !strings.Contains(r.Stderr, want) {
				t.Errorf("%s (%s): want exit 1 naming the file and %q; got %s", name, args[1], want, r)
			}
		}
		if before != nil {
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Errorf("%s: the file was modified", name)
			}
		}
		if _, err := os.Stat(path + ".lock"); err == nil {
			t.Errorf("%s: a lock file was left beside it", name)
		}
	}
	// Truncated copies: on a page boundary, mid-page, and just the meta
	// pages. bbolt maps the file, so before the fix a missing page was a
	// SIGBUS, not an error.
	for _, n := range []int{len(real) / 2, len(real)/2 + 1000, 16384, 8192} {
		p := filepath.Join(dir, fmt.Sprintf("trunc-%d.db", n))
		if err := os.WriteFile(p, real[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		refuse(fmt.Sprintf("truncated to %d of %d bytes", n, len(real)), p, "damaged")
	}
	// A newer schema, through the CLI.
	newer := filepath.Join(dir, "newer.db")
	if err := os.WriteFile(newer, real, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte(fmt.Sprint(store.SchemaVersion+1)))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	refuse("newer schema", newer, "newer keyward")
	// Not regular files.
	sub := filepath.Join(dir, "a-directory")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	refuse("a directory", sub, "directory")
	fifo := filepath.Join(dir, "a-fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err == nil {
		refuse("a FIFO", fifo, "not a regular file") // must not block opening it
	} else {
		t.Logf("mkfifo not permitted, FIFO case skipped: %v", err)
	}
	refuse("/dev/null", "/dev/null", "not a regular file")
	if fi, err := os.Stat("/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 || fi.Mode().Perm() != 0o666 {
		t.Fatalf("/dev/null was changed: %v %v", fi.Mode(), err)
	}

	// An empty file holds nothing to lose: it becomes a new database
	// (mktemp, touch), with a new database's mode.
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	r := e.Run("", "--db", empty, "keys", "create", "--name", "first", "--scope", "coupons:read")
	if r.Code != 0 {
		t.Fatalf("keys create on an empty file: %s", r)
	}
	if fi, _ := os.Stat(empty); fi.Mode().Perm() != 0o600 {
		t.Errorf("empty file made into a database has mode %04o, want 0600", fi.Mode().Perm())
	}
}

// TestFaultFileModes: every file keyward writes, through the real binary,
// run with umask 000 so that nothing leans on the umask.
func TestFaultFileModes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	run := func(args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", `umask 000; exec "$@"`, "sh", testkit.Binary(t)}, args...)...)
		cmd.Env = e.Environ()
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r := result{Stdout: out.String(), Stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.Code = ee.ExitCode()
		}
		if r.Code != 0 || (err != nil && r.Code == 0) {
			t.Fatalf("keyward %v: %v %s", args, err, r)
		}
		return r
	}
	want := func(path string, mode os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", filepath.Base(path), fi.Mode().Perm(), mode)
		}
	}
	run("keys", "create", "--name", "modes", "--scope", "coupons:read")
	run("secret", "show")
	dataDir := filepath.Dir(e.DB)
	want(dataDir, 0o700)
	want(e.DB, 0o600)
	want(store.MasterKeyPath(e.DB), 0o600)

	// serve: the host key beside the database, and the lock file while
	// it runs.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sshAddr := ln.Addr().String()
	ln.Close()
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	httpAddr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, "sh", "-c", `umask 000; exec "$@"`, "sh", testkit.Binary(t), "serve", "--ssh", sshAddr, "--http", httpAddr)
	srv.Env = e.Environ()
	srv.Stdout, srv.Stderr = io.Discard, io.Discard
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	waitHTTP(t, "http://"+httpAddr+"/healthz")
	want(e.DB+".lock", 0o600)
	hostKeys, _ := filepath.Glob(filepath.Join(dataDir, "ssh_host_*"))
	if len(hostKeys) == 0 {
		t.Fatalf("serve wrote no host key beside the database")
	}
	for _, p := range hostKeys {
		want(p, 0o600)
	}
	_ = srv.Process.Signal(os.Interrupt)
	if err := srv.Wait(); err != nil {
		t.Fatalf("serve: %v", err)
	}

	backup := filepath.Join(e.Dir, "backups", "kw.bak")
	if err := os.MkdirAll(filepath.Dir(backup), 0o755); err != nil {
		t.Fatal(err)
	}
	run("backup", backup)
	want(backup, 0o600)
	// The database created inside a nested, new directory (--create):
	// every new directory is 0700.
	nested := filepath.Join(e.Dir, "n1", "n2", "k.db")
	run("--db", nested, "--create", "keys", "list")
	want(filepath.Join(e.Dir, "n1", "n2"), 0o700)
	want(nested, 0o600)
}
