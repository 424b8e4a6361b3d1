package store

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/keyward/keyward/model"
)

// LockInfo is written beside the database while a process holds it, so a
// second process can say who has it.
type LockInfo struct {
	PID     int       `json:"pid"`
	Command string    `json:"command"`
	SSHAddr string    `json:"ssh_addr,omitempty"`
	Started time.Time `json:"started"`
}

// LockedError is returned by Open when another process holds the file.
type LockedError struct {
	Path   string
	Holder *LockInfo
}

func (e *LockedError) Error() string {
	msg := fmt.Sprintf("database %s is in use by another keyward process", e.Path)
	if h := e.Holder; h != nil {
		msg = fmt.Sprintf("database %s is in use by another keyward process (pid %d, %q)", e.Path, h.PID, h.Command)
		if hint := sshHint(h.SSHAddr); hint != "" {
			return msg + "; connect to it with: " + hint + ", or stop that server"
		}
	}
	return msg + "; wait for it to finish or stop it"
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// sshHint turns the SSH address a server advertises in its lock file into
// the command that reaches it: "ssh -p PORT OPERATOR@HOST", with the port
// the listener is bound to and OPERATOR standing for the operator's name
// (the login name must be one). A wildcard address is reached on
// localhost. "" if addr is not HOST:PORT with a port above 0.
func sshHint(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return fmt.Sprintf("ssh -p %s OPERATOR@%s", port, host)
}

func lockPath(dbPath string) string { return dbPath + ".lock" }

// removeLockInfo removes the lock file of the database at path.
func removeLockInfo(path string) { _ = os.Remove(lockPath(path)) }

// writeLockInfo writes the lock file beside the database (see files.go:
// never through a symbolic link, only a file of ours).
func writeLockInfo(path string, li LockInfo) error {
	li.PID = os.Getpid()
	if li.Command == "" {
		li.Command = "keyward"
	}
	if li.Started.IsZero() {
		li.Started = time.Now().UTC()
	}
	b, _ := json.Marshal(li)
	return writeInPlace(lockPath(path), b)
}

// AdvertiseSSH rewrites the lock file with the address the SSH listener
// is bound to (the real port, also with --ssh HOST:0), so that another
// keyward refused by the lock can say where to connect.
func (s *Store) AdvertiseSSH(addr string) error {
	if s.readOnly || s.shared { // (etcd has no lock file: nodes run side by side)
		return nil
	}
	s.opts.Lock.SSHAddr = addr
	return writeLockInfo(s.path, s.opts.Lock)
}

func readLockInfo(path string) *LockInfo {
	b, err := readSideFile(lockPath(path))
	if err != nil {
		return nil
	}
	var li LockInfo
	if json.Unmarshal(b, &li) != nil || li.PID == 0 {
		return nil
	}
	li.Command = model.Sanitize(li.Command)
	li.SSHAddr = model.Sanitize(li.SSHAddr)
	return &li
}
