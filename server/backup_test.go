//go:build linux

package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// slowFile writes to a file, pausing on every write, so that a backup
// stream lasts long enough for writes to commit during it.
type slowFile struct {
	f      *os.File
	writes atomic.Int64
	// overlap, if set, is called before the first write returns: the
	// transfer then waits for a concurrent write to have happened, so the
	// test does not depend on the scheduler giving the writer a turn.
	overlap func()
}

func (s *slowFile) Write(p []byte) (int, error) {
	if s.writes.Add(1) == 1 && s.overlap != nil {
		s.overlap()
	}
	time.Sleep(3 * time.Millisecond)
	return s.f.Write(p)
}

// TestOnlineBackupConcurrentWrites (issue 11.7): keys created while the
// server streams a backup through its socket do not corrupt the copy: it
// passes bbolt's consistency check, opens as a keyward database, and holds
// every key committed before the backup began.
func TestOnlineBackupConcurrentWrites(t *testing.T) {
	env := newEnv(t)
	var seed []store.SeedKey
	for i := range 4000 {
		seed = append(seed, store.SeedKey{Spec: model.KeySpec{Name: fmt.Sprintf("seed-%05d", i), Role: model.RoleAdmin, Active: true}})
	}
	if _, err := env.st.SeedKeys(rootOp, seed); err != nil {
		t.Fatal(err)
	}
	before, _ := env.createKey(model.KeySpec{Name: "before-backup"})
	sock := store.BackupSocketPath(env.path)
	env.serve(Config{SSHAddr: "-", BackupSocket: sock})
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup socket: %v %v, want a 0600 socket", fi, err)
	}

	stop := make(chan struct{})
	var created atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := env.st.CreateKey(rootOp, model.KeySpec{Name: fmt.Sprintf("during-%d", i), Role: model.RoleAdmin, Active: true}); err != nil {
				t.Error(err)
				return
			}
			created.Add(1)
		}
	}()
	dest := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	createdBefore := created.Load()
	sf := &slowFile{f: f, overlap: func() {
		// The server is mid-transfer (its read transaction is open):
		// wait, bounded, until a key has been created meanwhile.
		for deadline := time.Now().Add(10 * time.Second); created.Load() == createdBefore && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}}
	n, err := FetchBackup(env.path, sf)
	createdDuring := created.Load() - createdBefore
	close(stop)
	wg.Wait()
	f.Close()
	if err != nil {
		t.Fatalf("FetchBackup: %v", err)
	}
	if fi, _ := os.Stat(dest); fi.Size() != n {
		t.Fatalf("wrote %d bytes, file has %d", n, fi.Size())
	}
	if createdDuring == 0 {
		t.Fatalf("no key was created during the %d-write transfer; the test proves nothing", sf.writes.Load())
	}
	t.Logf("%d bytes in %d writes, %d keys created meanwhile", n, sf.writes.Load(), createdDuring)

	db, err := bolt.Open(dest, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatalf("bbolt check of the backup: %v", err)
	}
	bs, err := store.Open(dest, store.Options{Bootstrap: rootOp})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer bs.Close()
	if _, err := bs.Key(before.ID); err != nil {
		t.Fatalf("the key created before the backup is missing: %v", err)
	}
	if got := bs.KeyCount(); got < 4001 || got > 4001+int(createdDuring)+1 {
		t.Fatalf("backup holds %d keys; want 4001 plus at most the %d created meanwhile", got, createdDuring)
	}
}

// asUID runs fn on a locked OS thread whose user id is uid (Linux
// credentials are per thread; the process stays root), then restores root.
func asUID(t *testing.T, uid int, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), 0); e != 0 {
			t.Errorf("setresuid(%d): %v", uid, e)
			return
		}
		defer func() {
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, 0, 0, 0); e != 0 {
				panic(fmt.Sprintf("cannot return to root: %v", e))
			}
		}()
		fn()
	}()
	<-done
}

// needRoot: these tests act as another user, which needs root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user (uid 65534)")
	}
}

// openUp lets another user reach dir: every directory from the test's
// temporary root down gets the search bit.
func openUp(t *testing.T, dir string) {
	t.Helper()
	for d := dir; strings.HasPrefix(d, os.TempDir()) && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBackupSocketRefusesOtherUsers: even with the socket opened up to
// everyone (chmod 666), a process of another user gets "ERR permission
// denied" and not one byte of the database: the server checks the peer's
// uid (SO_PEERCRED) on every connection.
func TestBackupSocketRefusesOtherUsers(t *testing.T) {
	needRoot(t)
	env := newEnv(t)
	sock := store.BackupSocketPath(env.path)
	srv := env.serve(Config{SSHAddr: "-", BackupSocket: sock})
	openUp(t, env.dir)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	var got []byte
	var dialErr error
	asUID(t, 65534, func() {
		c, err := net.Dial("unix", sock)
		if err != nil {
			dialErr = err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, backupRequest)
		got, dialErr = io.ReadAll(c)
	})
	if dialErr != nil {
		t.Fatalf("connecting as uid 65534: %v", dialErr)
	}
	if string(got) != "ERR permission denied\n" {
		t.Fatalf("uid 65534 got %q", got)
	}
	testkit.WaitFor(t, 2*time.Second, "the refusal logged", func() bool {
		return strings.Contains(srv.logs.String(), "backup socket: refused a connection from uid 65534")
	})
	// The owner still gets a backup.
	if _, err := FetchBackup(env.path, io.Discard); err != nil {
		t.Fatalf("owner's backup: %v", err)
	}
}

// TestFetchBackupRefusesForeignServer: a socket planted at <db>.sock by
// another user is not trusted: the client checks the server's uid before
// it sends or takes anything.
func TestFetchBackupRefusesForeignServer(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	openUp(t, filepath.Dir(dir))
	db := filepath.Join(dir, "keyward.db")
	var ln *net.UnixListener
	var lerr error
	asUID(t, 65534, func() {
		ln, lerr = net.ListenUnix("unix", &net.UnixAddr{Name: store.BackupSocketPath(db), Net: "unix"})
	})
	if lerr != nil {
		t.Fatal(lerr)
	}
	defer ln.Close()
	var asked atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				var b [1]byte
				if n, _ := c.Read(b[:]); n > 0 {
					asked.Store(true)
				}
				io.WriteString(c, "OK 5\nevil!")
			}()
		}
	}()
	var buf strings.Builder
	_, err := FetchBackup(db, &buf)
	if err == nil || !strings.Contains(err.Error(), "served by uid 65534") || errors.Is(err, ErrNoBackupServer) {
		t.Fatalf("FetchBackup from a foreign server: %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("took %q from a foreign server", buf.String())
	}
	time.Sleep(50 * time.Millisecond)
	if asked.Load() {
		t.Fatal("the client sent its request to a foreign server")
	}
}

// TestBackupSocketBounds: a request longer than a line, or not the
// request, is answered "ERR bad request"; a silent client is dropped
// after the hello timeout's worth of waiting (not tested for its full
// length here: the answer to garbage is immediate).
func TestBackupSocketBounds(t *testing.T) {
	env := newEnv(t)
	sock := store.BackupSocketPath(env.path)
	env.serve(Config{SSHAddr: "-", BackupSocket: sock})
	for _, req := range []string{strings.Repeat("x", 4096) + "\n", "keyward-backup 2\n", "\x1b]52;c;evil\x07\n"} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		go io.WriteString(c, req)
		got, _ := io.ReadAll(io.LimitReader(c, 1<<20))
		c.Close()
		if string(got) != "ERR bad request\n" {
			t.Errorf("request %.20q: got %.40q", req, got)
		}
	}
}
