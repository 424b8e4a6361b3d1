package store_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// child starts the test binary in a child mode on path.
func child(t *testing.T, mode, path string) (*exec.Cmd, io.WriteCloser, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envDB+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, stdin, bufio.NewScanner(stdout)
}

func TestLockedBySecondProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyward.db")
	cmd, stdin, out := child(t, "hold", path)
	if !out.Scan() || out.Text() != "ready" {
		t.Fatalf("child did not get ready: %q %v", out.Text(), out.Err())
	}
	start := time.Now()
	s, err := store.Open(path, store.Options{Bootstrap: "admin"})
	elapsed := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatal("opened a database another process holds")
	}
	if elapsed > 2*time.Second {
		t.Fatalf("Open took %v; the limit is 2s", elapsed)
	}
	var le *store.LockedError
	if !errors.As(err, &le) || !errors.Is(err, store.ErrLocked) {
		t.Fatalf("error %T %v is not a *LockedError wrapping ErrLocked", err, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprint(cmd.Process.Pid)) || !strings.Contains(msg, "keyward test holder") {
		t.Fatalf("message %q does not name the file, the holder's pid %d and command", msg, cmd.Process.Pid)
	}
	if le.Holder == nil || le.Holder.PID != cmd.Process.Pid {
		t.Fatalf("holder %+v", le.Holder)
	}
	// Once the holder exits, the file opens.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	s, err = store.Open(path, store.Options{Bootstrap: "admin"})
	if err != nil {
		t.Fatalf("open after the holder left: %v", err)
	}
	s.Close()
}

func TestLockedInProcessMessage(t *testing.T) {
	// The same promise within one process (and with a custom timeout).
	e := newBoltEnv(t)
	start := time.Now()
	_, err := store.Open(e.path, store.Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) || time.Since(start) > time.Second {
		t.Fatalf("second open: %v after %v", err, time.Since(start))
	}
	le := &store.LockedError{Path: "/x/k.db", Holder: &store.LockInfo{PID: 42, Command: "keyward serve", SSHAddr: "0.0.0.0:2222"}}
	if msg := le.Error(); !strings.Contains(msg, "pid 42") || !strings.Contains(msg, "ssh -p 2222 OPERATOR@localhost") {
		t.Fatalf("message %q", msg)
	}
}

func TestCrashDuringCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyward.db")
	committed := map[string]string{} // id -> token
	for round := 0; round < 3; round++ {
		cmd, _, out := child(t, "create", path)
		want := 15 + round*10
		n := 0
		for n < want && out.Scan() {
			line := out.Text()
			id, tok, ok := strings.Cut(line, " ")
			if !ok || !keyIDRE.MatchString(id) {
				t.Fatalf("child said %q", line)
			}
			committed[id] = tok
			n++
		}
		if n < want {
			t.Fatalf("child stopped after %d creates: %v", n, out.Err())
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		// The child was killed mid-loop, very likely inside a transaction.
		s, err := store.Open(path, store.Options{Bootstrap: "admin"})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d: Tx.Check: %v", round, err)
		}
		for id, tok := range committed {
			if _, err := s.Key(id); err != nil {
				t.Fatalf("round %d: committed key %s lost: %v", round, id, err)
			}
			if r := s.Verify(tok, "coupons:read", "", "t"); r.Code != model.CodeValid || r.KeyID != id {
				t.Fatalf("round %d: committed token of %s: %s", round, id, r.Code)
			}
		}
		if s.KeyCount() < len(committed) {
			t.Fatalf("round %d: %d keys, %d committed", round, s.KeyCount(), len(committed))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// refusedFile is a file at --db that Open (and Peek) must refuse with want.
type refusedFile struct {
	path string
	want error
}

// refusedFiles writes, in dir, files that are not keyward databases
// keyward may open: a newer schema, another program's bbolt file, a bbolt
// file with only a meta bucket, random bytes large and small, and text.
func refusedFiles(t *testing.T, dir string) []refusedFile {
	t.Helper()
	// A database from a newer keyward.
	newer := filepath.Join(dir, "newer.db")
	s, err := store.Open(newer, store.Options{Bootstrap: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(newer, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte(fmt.Sprint(store.SchemaVersion+1)))
	})
	db.Close()

	// A bbolt file of some other program.
	foreign := filepath.Join(dir, "foreign.db")
	db, err = bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("widgets"))
		if err != nil {
			return err
		}
		return b.Put([]byte("a"), []byte("b"))
	})
	db.Close()

	// A bbolt file with a meta bucket but nothing else keyward needs. It
	// claims schema 1: the migration to schema 2 must refuse it untouched.
	half := filepath.Join(dir, "half.db")
	db, err = bolt.Open(half, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema"), []byte("1"))
	})
	db.Close()

	// Random bytes, large and small, and a text file.
	random := filepath.Join(dir, "random.db")
	buf := make([]byte, 64<<10)
	_, _ = rand.Read(buf)
	writeFile(t, random, buf)
	small := filepath.Join(dir, "small.db")
	writeFile(t, small, buf[:100])
	text := filepath.Join(dir, "notes.db")
	writeFile(t, text, bytes.Repeat([]byte("not a database\n"), 1000))

	return []refusedFile{
		{newer, store.ErrNewerSchema},
		{foreign, store.ErrForeign},
		{half, store.ErrForeign},
		{random, store.ErrForeign},
		{small, store.ErrForeign},
		{text, store.ErrForeign},
	}
}

func TestRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	cases := refusedFiles(t, dir)
	for _, c := range cases {
		before := readFile(t, c.path)
		s, err := store.Open(c.path, store.Options{Bootstrap: "admin", Timeout: 200 * time.Millisecond})
		if err == nil {
			s.Close()
			t.Fatalf("%s: opened", filepath.Base(c.path))
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", filepath.Base(c.path), err, c.want)
		}
		if !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: message %q does not name the file", filepath.Base(c.path), err)
		}
		if !bytes.Equal(before, readFile(t, c.path)) {
			t.Errorf("%s: the file was modified", filepath.Base(c.path))
		}
		if _, err := os.Stat(c.path + ".lock"); err == nil {
			t.Errorf("%s: left a lock file", filepath.Base(c.path))
		}
	}
	// A directory is not a database.
	sub := filepath.Join(dir, "adir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if s, err := store.Open(sub, store.Options{Bootstrap: "admin"}); err == nil {
		s.Close()
		t.Fatal("opened a directory")
	}
	if entries, _ := os.ReadDir(sub); len(entries) != 0 {
		t.Fatal("opening a directory wrote into it")
	}
}
