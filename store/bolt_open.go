package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// openFile checks path and opens it with bbolt (read-only if the file is
// not writable, which turns opts.NoLastUsed on), writes the lock file and
// gives the warnings about modes and the master key.
func openFile(path string, opts *Options) (*bolt.DB, bool, error) {
	fi, err := statDB(path, opts)
	if err != nil {
		return nil, false, err
	}
	// No InitialMmapSize: it would save a bulk import's remaps, but bbolt
	// then grows the file in 16 MiB steps, so every tiny DB is 16 MiB.
	bopts := &bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType, OpenFile: dbOpenFile}
	db, err := bolt.Open(path, 0o600, bopts)
	readOnly := false
	if err != nil && fi != nil && fi.Size() > 0 && (errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)) {
		// A file we may read but not write (chmod 0400, chattr +i, a
		// read-only mount): open it read-only so listing still works, and
		// refuse changes with ErrReadOnly.
		ro := *bopts
		ro.ReadOnly = true
		if rdb, rerr := bolt.Open(path, 0o600, &ro); rerr == nil {
			db, err, readOnly = rdb, nil, true
			opts.NoLastUsed = true // nothing could be flushed
		}
	}
	if err != nil {
		return nil, false, openError(path, err)
	}
	if !readOnly {
		// The lock file is written before the (possibly long) load, so a
		// planted file beside the database is refused at once.
		// Only a refusal is fatal: a lock file that cannot be written
		// for lack of space costs nothing but the holder's name in
		// another process's message (reads must work on a full disk).
		if err := writeLockInfo(path, opts.Lock); errors.Is(err, ErrUnsafeFile) {
			db.Close()
			return nil, false, fmt.Errorf("lock file: %w", err)
		}
	}
	openWarnings(path, opts.Warn)
	return db, readOnly, nil
}

// statDB makes the database's directory (or, with opts.NoCreateDir,
// refuses a missing one) and checks what is at path: nil if nothing is,
// a refusal if it cannot be a database. An empty file gets a new
// database's mode.
func statDB(path string, opts *Options) (fs.FileInfo, error) {
	dir := filepath.Dir(path)
	if opts.NoCreateDir {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil, &NoDirError{Dir: dir}
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating database directory: %w", err)
	}
	fi, err := lstatDB(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		if errors.Is(err, ErrUnsafeFile) {
			return nil, err
		}
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	if err := checkFile(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() == 0 && fi.Mode().Perm()&0o077 != 0 {
		// An empty file (touch, mktemp) has nothing to lose and becomes a
		// new database; it gets a new database's mode too.
		_ = os.Chmod(path, 0o600)
	}
	return fi, nil
}

// openWarnings warns about a database file or directory others may read,
// and about a master key that cannot be used.
func openWarnings(path string, warn func(string)) {
	if fi, err := os.Lstat(path); err == nil {
		if w := dbFileWarning(path, fi); w != "" {
			warn(w)
		}
	}
	if w := DirWarning(filepath.Dir(path)); w != "" {
		warn(w)
	}
	if _, err := ReadSecretFile(MasterKeyPath(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Verification never needs it; revealing or rotating the shared
		// secret refuses it (see masterKey). Say so now, not then.
		warn(fmt.Sprintf("master key: %v; revealing or rotating the shared secret is refused until this is fixed", err))
	}
}

// checkFile refuses, before bbolt touches it, an existing path that cannot
// be a keyward database: a directory, a device, or a truncated bbolt file.
func checkFile(path string, fi fs.FileInfo) error {
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory, not a keyward database", path)
	}
	if !fi.Mode().IsRegular() {
		// A device, FIFO or socket (--db /dev/null): never write to it.
		return fmt.Errorf("%s: %w (it is not a regular file); refusing to touch it", path, ErrForeign)
	}
	if fi.Size() > 0 {
		return checkLength(path, fi.Size())
	}
	return nil
}

// openError turns a bolt.Open error into the store's: a lock held by a
// writer becomes a *LockedError naming the holder, a file that is not
// bbolt's ErrForeign.
func openError(path string, err error) error {
	if errors.Is(err, bolt.ErrTimeout) {
		return &LockedError{Path: path, Holder: readLockInfo(path)}
	}
	if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, bolt.ErrChecksum) {
		return fmt.Errorf("%s: %w (bbolt says: %v); refusing to touch it", path, ErrForeign, err)
	}
	return fmt.Errorf("opening database %s: %w", path, err)
}
