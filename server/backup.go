package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// Online backup: `keyward backup FILE` while `keyward serve` holds the
// database.
//
// serve listens on a unix socket beside the database
// (store.BackupSocketPath, mode 0600). It is no new way in: both ends check
// the kernel's peer credentials (SO_PEERCRED), so the server serves only
// processes of its own user, and the client takes a backup only from a
// server of its own user (a socket planted by someone else is refused).
// The exchange is one request and one answer, bounded in size and time:
//
//	client: "keyward-backup 1\n"
//	server: "OK <size>\n" and exactly size bytes of a consistent bbolt
//	        snapshot (one read transaction, Tx.WriteTo), or "ERR <why>\n"
//
// The client writes the bytes to a temporary file, syncs it and renames it
// into place, as an offline backup does (main.go, writeFileAtomic).

const (
	backupRequest  = "keyward-backup 1\n"
	backupLineMax  = 128              // request and answer lines
	backupHello    = 5 * time.Second  // for the request, once connected
	backupHeader   = 60 * time.Second // for the answer: the server flushes last-used first
	backupIdle     = 30 * time.Second // a transfer with no progress for this long ends
	backupMaxConns = 4                // connections served at once; one backup at a time
	// maxSocketPath is the longest path a unix socket can be bound to
	// (sun_path is 108 bytes on Linux, with its NUL).
	maxSocketPath = 107
)

// ErrNoBackupServer: nothing answers on the database's backup socket (no
// serve holds the database, or it offers no online backup).
var ErrNoBackupServer = errors.New("no keyward serve answers on the backup socket")

type backupSide struct {
	st    *store.Store
	ln    *net.UnixListener
	path  string
	log   *logSink
	busy  chan struct{} // one backup at a time
	slots chan struct{} // bounded connections
	wg    sync.WaitGroup

	mu    sync.Mutex
	conns map[*net.UnixConn]struct{}
}

// openBackup opens the online-backup socket cfg names, when this OS and
// the path's length allow one; otherwise it logs why there is none and
// returns nil.
func openBackup(cfg Config, log *logSink) (*backupSide, error) {
	switch {
	case cfg.BackupSocket == "":
		return nil, nil
	case !backupSupported:
		log.Printf("online backup: not offered on this OS (no peer credentials); stop the server to back up")
		return nil, nil
	case len(cfg.BackupSocket) > maxSocketPath:
		log.Printf("warning: online backup: not offered: the socket path %s is longer than the %d bytes a unix socket allows; use a shorter --db path, or stop the server to back up", cfg.BackupSocket, maxSocketPath)
		return nil, nil
	}
	bk, err := listenBackup(cfg.BackupSocket, cfg.Store, log)
	if err != nil {
		return nil, fmt.Errorf("server: backup socket: %w", err)
	}
	log.Printf("backup socket %s (keyward backup FILE works while serving)", cfg.BackupSocket)
	return bk, nil
}

// listenBackup binds the backup socket at path: a stale socket of ours is
// replaced, anything else there is refused (store.PrepareSocketPath).
func listenBackup(path string, st *store.Store, log *logSink) (*backupSide, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("the socket path %s is %d bytes; unix sockets allow %d", path, len(path), maxSocketPath)
	}
	if err := store.PrepareSocketPath(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Only the owner may connect at all (the peer check stands anyway:
	// it also covers the moment between bind and chmod).
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return &backupSide{st: st, ln: ln, path: path, log: log, busy: make(chan struct{}, 1),
		slots: make(chan struct{}, backupMaxConns), conns: map[*net.UnixConn]struct{}{}}, nil
}

func (b *backupSide) serve() {
	for {
		c, err := b.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			b.log.Printf("backup socket: accept: %s", err)
			time.Sleep(100 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		select {
		case b.slots <- struct{}{}:
		default:
			c.Close() // too many at once
			continue
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer func() {
				c.Close()
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				<-b.slots
				b.wg.Done()
			}()
			b.handle(c)
		}()
	}
}

func (b *backupSide) handle(c *net.UnixConn) {
	_ = c.SetDeadline(time.Now().Add(backupHello))
	uid, err := peerUID(c)
	if err != nil || uid != os.Geteuid() {
		b.log.Printf("backup socket: refused a connection from uid %d (%v): only uid %d may take backups", uid, err, os.Geteuid())
		refuseBackup(c, "permission denied")
		return
	}
	line, err := readLine(c)
	if err != nil || line != strings.TrimSuffix(backupRequest, "\n") {
		refuseBackup(c, "bad request")
		return
	}
	select {
	case b.busy <- struct{}{}:
		defer func() { <-b.busy }()
	default:
		refuseBackup(c, "another backup is running; try again when it has finished")
		return
	}
	_ = c.SetDeadline(time.Time{})
	w := &idleConn{c: c}
	announced := false
	start := time.Now()
	n, err := b.st.WriteBackup(w, func(size int64) error {
		announced = true
		_, err := fmt.Fprintf(w, "OK %d\n", size)
		return err
	})
	if err != nil {
		if !announced {
			fmt.Fprintf(w, "ERR %s\n", model.Sanitize(err.Error()))
		}
		b.log.Printf("backup: failed after %d bytes: %s", n, err)
		return
	}
	b.log.Printf("backup: sent a %d-byte snapshot in %s", n, time.Since(start).Round(time.Millisecond))
}

// refuseBackup answers "ERR msg" and ends the connection. What the peer sent
// and was not read is drained first (bounded by size and by the deadline
// already set), so that the close does not reset the connection before the
// peer has read the answer.
func refuseBackup(c *net.UnixConn, msg string) {
	fmt.Fprintf(c, "ERR %s\n", msg)
	_ = c.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// shutdown stops accepting, lets a running backup finish until ctx ends,
// then cuts it (the client then discards its temporary file).
func (b *backupSide) shutdown(ctx context.Context) error {
	b.ln.Close() // also removes the socket file
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	<-done
	return errors.New("a backup was cut off by the shutdown")
}

// idleConn refreshes the deadline before every read and write: a peer
// that stops reading or sending for backupIdle ends the transfer.
type idleConn struct{ c net.Conn }

func (i *idleConn) Write(p []byte) (int, error) {
	_ = i.c.SetWriteDeadline(time.Now().Add(backupIdle))
	return i.c.Write(p)
}

func (i *idleConn) Read(p []byte) (int, error) {
	_ = i.c.SetReadDeadline(time.Now().Add(backupIdle))
	return i.c.Read(p)
}

// readLine reads one line of at most backupLineMax bytes, a byte at a
// time (nothing after the newline is consumed), without the newline.
func readLine(r io.Reader) (string, error) {
	var buf []byte
	var one [1]byte
	for len(buf) <= backupLineMax {
		if _, err := io.ReadFull(r, one[:]); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(buf), nil
		}
		buf = append(buf, one[0])
	}
	return "", fmt.Errorf("line longer than %d bytes", backupLineMax)
}

// FetchBackup asks the `keyward serve` that holds the database at dbPath
// for a consistent copy of it, written to w, and returns its size. The
// server must run as this user. If nothing answers on the socket, the
// error wraps ErrNoBackupServer.
func FetchBackup(dbPath string, w io.Writer) (int64, error) {
	path := store.BackupSocketPath(dbPath)
	if !backupSupported {
		return 0, fmt.Errorf("%w: online backup is not supported on this OS", ErrNoBackupServer)
	}
	if len(path) > maxSocketPath {
		return 0, fmt.Errorf("%w: the socket path %s is too long for a unix socket", ErrNoBackupServer, path)
	}
	d := net.Dialer{Timeout: backupHello}
	nc, err := d.Dial("unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, fmt.Errorf("%w (%s)", ErrNoBackupServer, path)
		}
		return 0, fmt.Errorf("backup socket %s: %w", path, err)
	}
	c := nc.(*net.UnixConn)
	defer c.Close()
	uid, err := peerUID(c)
	if err != nil {
		return 0, fmt.Errorf("backup socket %s: %w", path, err)
	}
	if uid != os.Geteuid() {
		return 0, fmt.Errorf("backup socket %s is served by uid %d, not by this user (uid %d); refusing it", path, uid, os.Geteuid())
	}
	_ = c.SetDeadline(time.Now().Add(backupHello))
	if _, err := io.WriteString(c, backupRequest); err != nil {
		return 0, fmt.Errorf("backup socket %s: %w", path, err)
	}
	_ = c.SetDeadline(time.Now().Add(backupHeader))
	line, err := readLine(c)
	if err != nil {
		return 0, fmt.Errorf("backup socket %s: no answer: %w", path, err)
	}
	if msg, ok := strings.CutPrefix(line, "ERR "); ok {
		return 0, fmt.Errorf("the server refused the backup: %s", model.Sanitize(msg))
	}
	rest, ok := strings.CutPrefix(line, "OK ")
	size, err := strconv.ParseInt(rest, 10, 64)
	if !ok || err != nil || size <= 0 {
		return 0, fmt.Errorf("backup socket %s: unexpected answer %q", path, model.Sanitize(line))
	}
	_ = c.SetDeadline(time.Time{})
	n, err := io.CopyN(w, &idleConn{c: c}, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("backup socket %s: the copy ended after %d of %d bytes: %w", path, n, size, err)
	}
	return n, nil
}
