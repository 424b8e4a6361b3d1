package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Files beside the database.
//
// Everything keyward reads or writes beside the database (the database
// itself, its lock file, the master key, the SSH host key and the backup
// socket) goes through the functions in this file, so one mechanism
// decides what is safe:
//
//   - a symbolic link at the file's own name is never followed (the open
//     uses O_NOFOLLOW), so a link planted in a shared directory cannot
//     redirect a write to another file;
//   - the file must be a regular file (O_NONBLOCK on the open, so a planted
//     FIFO cannot hang it) owned by this user;
//   - a file keyward writes in place (the lock file) must have one link, so
//     a planted hard link to someone else's file is not overwritten;
//   - secret-bearing files (the master key, the SSH host key) must be
//     readable by their owner only, as sshd demands of its host keys;
//   - the database, and the directory holding it, get a warning when other
//     users may read them.
//
// Directories above the file are followed: a data directory that is a
// symbolic link is fine, it is the user's own choice.

// ErrUnsafeFile wraps every refusal of a file beside the database.
var ErrUnsafeFile = errors.New("unsafe file")

// maxSideFile bounds what is read from a small file beside the database
// (the lock file, the master key, the host key).
const maxSideFile = 64 << 10

func unsafeFile(path, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", path, ErrUnsafeFile, fmt.Sprintf(format, args...))
}

// openNoFollow opens path without following a symbolic link at its last
// component and without blocking on a FIFO, and checks that what it opened
// is a regular file. A symbolic link is refused with a clear error.
func openNoFollow(path string, flag int, perm fs.FileMode) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, flag|oNoFollow, perm)
	if err != nil {
		if isSymlinkErr(path, err) {
			return nil, nil, unsafeFile(path, "it is a symbolic link, and keyward does not follow symbolic links beside the database; remove it (or point --db at the real file)")
		}
		if errors.Is(err, syscall.ENXIO) { // O_WRONLY|O_NONBLOCK on a FIFO
			return nil, nil, unsafeFile(path, "it is not a regular file; remove it")
		}
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, unsafeFile(path, "it is not a regular file (%s); remove it", fi.Mode().Type())
	}
	return f, fi, nil
}

// isSymlinkErr reports whether err from an O_NOFOLLOW open means path is a
// symbolic link (ELOOP on Linux, EMLINK on FreeBSD, EFTYPE elsewhere):
// confirmed with Lstat so that a real ELOOP in a parent is not misnamed.
func isSymlinkErr(path string, err error) bool {
	if !errors.Is(err, syscall.ELOOP) && !errors.Is(err, syscall.EMLINK) {
		return false
	}
	fi, lerr := os.Lstat(path)
	return lerr == nil && fi.Mode()&fs.ModeSymlink != 0
}

// checkOwner refuses a file this user does not own, and with single set,
// one that has other hard links.
func checkOwner(path string, fi fs.FileInfo, single bool) error {
	uid, nlink, ok := ownerOf(fi)
	if !ok {
		return nil
	}
	if uid != euid() {
		return unsafeFile(path, "it is owned by uid %d, not by this user (uid %d); remove it or run keyward as its owner", uid, euid())
	}
	if single && nlink > 1 {
		return unsafeFile(path, "it has %d hard links; remove it", nlink)
	}
	return nil
}

// checkSecretMode refuses a secret-bearing file that group or others may
// read or write.
func checkSecretMode(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return unsafeFile(path, "it has mode %04o; it must be readable only by its owner (chmod 600 %s)", perm, path)
	}
	return nil
}

// ReadSecretFile reads a secret-bearing file (the master key, an SSH host
// key): not through a symbolic link, a regular file of at most 64 KiB,
// owned by this user and readable by nobody else. A missing file gives an
// error wrapping fs.ErrNotExist.
func ReadSecretFile(path string) ([]byte, error) {
	f, fi, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkOwner(path, fi, false); err != nil {
		return nil, err
	}
	if err := checkSecretMode(path, fi); err != nil {
		return nil, err
	}
	return readBounded(path, f)
}

func readBounded(path string, r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSideFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSideFile {
		return nil, unsafeFile(path, "it is larger than %d bytes", maxSideFile)
	}
	return data, nil
}

// CreateSecretFile creates path holding data, mode 0600, atomically: the
// data goes to a temporary file in the same directory, is synced, and is
// hard-linked into place. A link never follows a symbolic link at path
// and never replaces an existing file: if anything exists at path (a
// racing keyward that got there first, or something planted), the error
// wraps fs.ErrExist and nothing is written there.
func CreateSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // O_EXCL, mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil { // whatever the umask
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a new directory entry durable; failures are ignored (some
// file systems refuse fsync on a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// writeInPlace replaces the content of the small file at path (the lock
// file), creating it 0600 if needed, without following a symbolic link,
// and only if it is a regular file this user owns with no other link.
func writeInPlace(path string, data []byte) error {
	f, fi, err := openNoFollow(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := checkOwner(path, fi, true); err != nil {
		return err
	}
	if fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			return err
		}
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	return nil
}

// readSideFile reads a small, non-secret file beside the database (the
// lock file): not through a symbolic link, regular, at most 64 KiB.
func readSideFile(path string) ([]byte, error) {
	f, _, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(path, f)
}

// DirWarning returns a warning if dir, the directory holding the database
// or a secret-bearing file, lets other users in (any group or other
// permission bit) or is owned by someone else; "" if it is private.
func DirWarning(dir string) string {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return ""
	}
	if uid, _, ok := ownerOf(fi); ok && uid != euid() && uid != 0 {
		return fmt.Sprintf("directory %s is owned by uid %d, not by this user: its owner can replace the files in it", dir, uid)
	}
	perm := fi.Mode().Perm()
	switch {
	case perm&0o022 != 0:
		return fmt.Sprintf("directory %s has mode %04o: other users can create files in it; keep the database in a directory only you can open (chmod 700)", dir, fi.Mode().Perm()|stickyBits(fi))
	case perm&0o077 != 0:
		return fmt.Sprintf("directory %s has mode %04o: other users can list it; keep the database in a directory only you can open (chmod 700 %s)", dir, perm, dir)
	}
	return ""
}

func stickyBits(fi fs.FileInfo) fs.FileMode {
	if fi.Mode()&fs.ModeSticky != 0 {
		return 0o1000
	}
	return 0
}

// dbFileWarning returns a warning for a database file that other users may
// read (it holds every key's hash, the audit log and the encrypted shared
// secret) or that someone else owns; "" otherwise.
func dbFileWarning(path string, fi fs.FileInfo) string {
	if uid, _, ok := ownerOf(fi); ok && uid != euid() {
		return fmt.Sprintf("database %s is owned by uid %d, not by this user", path, uid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Sprintf("database %s has mode %04o: other users can read it; chmod 600 %s", path, perm, path)
	}
	return ""
}

// dbOpenFile is bbolt's OpenFile for the database: no symbolic link at the
// database's own name, and only a regular file.
func dbOpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, _, err := openNoFollow(path, flag, perm)
	return f, err
}

// lstatDB looks at the database path without following a symbolic link:
// a symbolic link is refused (keyward opens the database by its real path
// only, see README "Files and modes"). A missing file gives the Lstat
// error.
func lstatDB(path string) (fs.FileInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := filepath.EvalSymlinks(path)
		if target == "" {
			target = "its target"
		}
		return nil, unsafeFile(path, "the database path is a symbolic link; keyward opens a database only by its real path: use --db %s", target)
	}
	return fi, nil
}
