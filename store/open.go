// Package store owns keyward's bbolt file: every transaction, the hash
// index, verification, batched last-used writes, the audit log, operators,
// the shared secret, the catalog, backups and the change feed.
//
// One process owns the file at a time (bbolt's flock). Because that process
// is the only writer, the store keeps an in-memory index that every commit
// updates before the call returns: verification reads memory, never waits
// on disk, and a disabled or deleted key is refused on the very next call.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// Options tune Open. The zero value is usable.
type Options struct {
	// Timeout bounds the wait for the file lock (default 1s).
	Timeout time.Duration
	// FlushInterval is how often buffered last-used data is written
	// (default 5s). Close always flushes.
	FlushInterval time.Duration
	// Now replaces the clock, for tests.
	Now func() time.Time
	// TokenPrefix replaces model.DefaultPrefix.
	TokenPrefix string
	// Bootstrap names the first ADMIN operator of a new database (default:
	// the local OS user).
	Bootstrap string
	// DefaultCatalog is loaded into a new database (JSON, see
	// testdata/catalog.json). Empty means an empty catalog.
	DefaultCatalog []byte
	// Lock describes this process in the lock file.
	Lock LockInfo
	// NoLastUsed turns off last-used tracking (to measure its cost).
	NoLastUsed bool
	// Lean keeps in memory only what verification needs, for a serving
	// process (see slots.go): Key and Keys decode the file, and keep
	// snapshots only while a subscriber (a TUI session) is watching.
	// Otherwise every key's snapshot is kept from the load on.
	Lean bool
	// NoCreateDir refuses a path whose directory does not exist, rather
	// than creating it (0700): a mistyped --db must not become a new,
	// empty database somewhere else.
	NoCreateDir bool
	// Warn receives warnings about files and modes (a database or its
	// directory that other users may read). Nil prints them to stderr.
	Warn func(string)
	// NoSync skips fsync on commit. Only for benchmarks and seeding
	// throwaway databases.
	NoSync bool

	// collideHashes indexes every hash under one prefix, so that tests
	// exercise the hash index's overflow (see hashIndex).
	collideHashes bool
}

// Store is an open keyward database.
type Store struct {
	db       *bolt.DB
	path     string
	readOnly bool // opened with bbolt's ReadOnly: the file is not writable
	opts     Options
	now      func() time.Time
	prefix   string
	// indexed is false only for a read-only schema 1 file, which has no
	// names bucket (it cannot be migrated): KeyIDByName then reads every key.
	indexed bool

	wmu sync.Mutex // serialises writers together with their memory updates

	mu        sync.RWMutex // guards the maps below
	slots     slotTable
	hashes    hashIndex
	grantTab  []*grant // entry.grant indexes it; appended to, never shrunk
	ops       map[string]*model.Operator
	catalog   model.Catalog
	secretSum [32]byte // SHA-256 of the current shared secret, zero if none
	prevSum   [32]byte
	prevUntil time.Time
	graces    map[string]time.Time // key id -> end of grace for its previous secret

	dirtyMu sync.Mutex
	dirty   []uint32 // slots whose last-used is buffered
	// announced is how much of dirty the live last-used feed has
	// published (dirtyMu; see announceLastUsed).
	announced int
	sources   sourceIntern // last-used sources, shared between entries
	grants    grantIntern  // grants of keys written after the load

	subsMu sync.Mutex
	subs   map[*Subscription]struct{}

	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
	closed    atomic.Bool
}

// DefaultPath is where the database lives when --db and $KEYWARD_DB are
// unset: the OS data dir + keyward/keyward.db.
func DefaultPath() (string, error) {
	if p := os.Getenv("KEYWARD_DB"); p != "" {
		return p, nil
	}
	dir := os.Getenv("XDG_DATA_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find a data directory: %w", err)
		}
		dir = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(dir, "keyward", "keyward.db"), nil
}

// Open opens or creates the database at path. The parent directory is
// created 0700 and the file 0600. If another process holds the file, Open
// returns a *LockedError within opts.Timeout.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("no database path given")
	}
	opts.fill()
	db, readOnly, err := openFile(path, &opts)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db: db, path: path, readOnly: readOnly, opts: opts, now: opts.Now, prefix: opts.TokenPrefix,
		slots: newSlotTable(0), hashes: newHashIndex(0, opts.collideHashes),
		ops: map[string]*model.Operator{}, graces: map[string]time.Time{},
		subs: map[*Subscription]struct{}{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	if !opts.Lean {
		s.slots.snaps = [][]*model.Key{}
	}
	if err := s.init(); err != nil {
		return s.failOpen(err)
	}
	if err := s.load(); err != nil {
		return s.failOpen(err)
	}
	if opts.Lean {
		// The load decoded every key and kept none of it: hand that
		// memory back now (a few ms: the lean heap is cheap to collect)
		// rather than carry it as RSS until the scavenger gets to it.
		debug.FreeOSMemory()
	}
	go s.flushLoop()
	return s, nil
}

// fill sets the defaults of every unset option.
func (o *Options) fill() {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TokenPrefix == "" {
		o.TokenPrefix = model.DefaultPrefix
	}
	if o.Lock.Started.IsZero() {
		o.Lock.Started = time.Now().UTC()
	}
	if o.Warn == nil {
		o.Warn = func(msg string) { fmt.Fprintln(os.Stderr, "keyward: warning: "+model.Sanitize(msg)) }
	}
}

// failOpen undoes what Open did before err: the lock file and the handle.
func (s *Store) failOpen(err error) (*Store, error) {
	if !s.readOnly {
		_ = os.Remove(lockPath(s.path))
	}
	s.db.Close()
	return nil, err
}

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

// NoDirError is returned by Open with Options.NoCreateDir when the
// database's directory does not exist.
type NoDirError struct{ Dir string }

func (e *NoDirError) Error() string {
	return fmt.Sprintf("directory %s does not exist", e.Dir)
}

func (e *NoDirError) Unwrap() error { return fs.ErrNotExist }

// ReadOnly reports whether the file was opened read-only because it is not
// writable: every change returns ErrReadOnly.
func (s *Store) ReadOnly() bool { return s.readOnly }

func (s *Store) readOnlyError() error {
	return fmt.Errorf("database %s: %w (the file or its file system is not writable)", s.path, ErrReadOnly)
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// Now returns the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Prefix returns the token prefix this store issues and accepts.
func (s *Store) Prefix() string { return s.prefix }

// Close flushes buffered last-used data, stops background work and closes
// the file. It is safe to call twice.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		err = s.FlushLastUsed()
		s.closed.Store(true)
		s.subsMu.Lock()
		for sub := range s.subs {
			sub.close()
		}
		s.subs = nil
		s.subsMu.Unlock()
		if !s.readOnly {
			_ = os.Remove(lockPath(s.path))
		}
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

func (s *Store) flushLoop() {
	defer close(s.done)
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	live := time.NewTicker(liveLastUsedInterval)
	defer live.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_ = s.FlushLastUsed()
			s.expireGraces()
		case <-live.C:
			s.announceLastUsed()
		}
	}
}

// Check runs bbolt's consistency check and returns every problem found.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}
