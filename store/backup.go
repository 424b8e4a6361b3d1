package store

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// BackupSocketPath is the unix socket beside the database through which a
// running `keyward serve` hands out online backups (see server/backup.go).
func BackupSocketPath(dbPath string) string { return dbPath + ".sock" }

// WriteBackup writes a consistent copy of the database to w, as Backup
// does, for a stream that must announce the copy's length first: announce
// (if not nil) gets the snapshot's exact size in bytes before any of them
// is written. The copy is consistent (see Backend.Backup): writes that
// commit meanwhile are not in it and cannot tear it.
func (s *Store) WriteBackup(w io.Writer, announce func(size int64) error) (int64, error) {
	if err := s.FlushLastUsed(); err != nil {
		return 0, err
	}
	return s.be.Backup(w, announce)
}

// PrepareSocketPath makes path ready for a unix socket to be bound there
// by the process that holds the database's lock: nothing there is fine; a
// socket this user owns is a stale one (from a server that was killed, as
// no other process can hold the lock) and is removed; anything else (a
// symbolic link, a file, someone else's socket) is refused with
// ErrUnsafeFile and left alone.
func PrepareSocketPath(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return unsafeFile(path, "it is a symbolic link, and keyward does not follow symbolic links beside the database; remove it")
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return unsafeFile(path, "it is not a socket (%s); remove it", fi.Mode().Type())
	}
	if err := checkOwner(path, fi, false); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	return nil
}
