// Package store is keyward's state: the engine (in-memory index,
// verification, authorisation and audit of every write, batched last-used
// times, the change feed) over a Backend that keeps the records (see
// backend.go): one bbolt file (the bolt_*.go files, the only ones that
// import bbolt) or an etcd cluster (etcd_*.go).
//
// On the file, one process owns it at a time (bbolt's flock). Because that
// process is the only writer, the store keeps an in-memory index that every
// commit updates before the call returns: verification reads memory, never
// waits on disk, and a disabled or deleted key is refused on the very next
// call. On etcd several processes write; memory follows the cluster's watch
// and a write returns once it is applied there (etcd_sync.go), so the same
// holds on the node that wrote, and within milliseconds on the others.
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
	"time"

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

	// MasterKey is the path of the master key file that seals the shared
	// secret. Default: beside the database file (MasterKeyPath). On etcd
	// it is required (every node must hold the same file).
	MasterKey string
	// MaxStaleness (etcd) is how long the node may go without word from
	// the cluster before Stale reports it (default DefaultMaxStaleness).
	MaxStaleness time.Duration

	// collideHashes indexes every hash under one prefix, so that tests
	// exercise the hash index's overflow (see hashIndex).
	collideHashes bool
}

// Store is an open keyward database.
type Store struct {
	be       Backend // keeps the records; see backend.go
	path     string
	readOnly bool // the file is not writable: every change is refused
	opts     Options
	now      func() time.Time
	prefix   string

	wmu sync.Mutex // serialises writers together with their memory updates

	// shared: other processes write the same records (etcd). Memory then
	// follows the backend's watch only (etcd_sync.go), and applied is the
	// revision it reflects; appliedCh is closed and replaced whenever
	// applied advances. heard is when the backend last spoke (Unix ns).
	shared    bool
	applied   atomic.Uint64
	appliedMu sync.Mutex
	applyMu   sync.Mutex // held while the sync loop changes memory
	appliedCh chan struct{}
	heard     atomic.Int64
	syncDone  chan struct{}
	relists   atomic.Int64
	flushObs  flushObs // see ObserveFlushes (metrics.go)

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
	be, err := openBolt(path, &opts)
	if err != nil {
		return nil, err
	}
	return start(be, path, be.readOnly, be.fresh, opts)
}

// start makes the Store over an open backend: it bootstraps a new store
// if fresh, loads memory, and starts the background work (the last-used
// flush; on a shared backend, the sync loop too).
func start(be Backend, path string, readOnly, fresh bool, opts Options) (*Store, error) {
	s := &Store{
		be: be, path: path, readOnly: readOnly, opts: opts, now: opts.Now, prefix: opts.TokenPrefix,
		shared: be.Shared(),
		slots:  newSlotTable(0), hashes: newHashIndex(0, opts.collideHashes),
		ops: map[string]*model.Operator{}, graces: map[string]time.Time{},
		subs: map[*Subscription]struct{}{}, stop: make(chan struct{}), done: make(chan struct{}),
		appliedCh: make(chan struct{}),
	}
	if !opts.Lean {
		s.slots.snaps = [][]*model.Key{}
	}
	if fresh {
		if err := s.bootstrap(); err != nil && !(s.shared && errors.Is(err, ErrConflict)) {
			// (On etcd another node may have bootstrapped the same
			// prefix first: then load what it wrote.)
			return s.failOpen(err)
		}
	}
	rev, err := s.loadAt()
	if err != nil {
		return s.failOpen(err)
	}
	if opts.Lean {
		// The load decoded every key and kept none of it: hand that
		// memory back now (a few ms: the lean heap is cheap to collect)
		// rather than carry it as RSS until the scavenger gets to it.
		debug.FreeOSMemory()
	}
	go s.flushLoop()
	if s.shared {
		s.startSync(rev)
	}
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
	if o.MaxStaleness <= 0 {
		o.MaxStaleness = DefaultMaxStaleness
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

// failOpen undoes what Open did before err: the backend's Close removes
// the lock file and closes the file.
func (s *Store) failOpen(err error) (*Store, error) {
	_ = s.be.Close()
	return nil, err
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
		if s.syncDone != nil {
			<-s.syncDone
		}
		err = s.FlushLastUsed()
		s.closed.Store(true)
		s.subsMu.Lock()
		for sub := range s.subs {
			sub.close()
		}
		s.subs = nil
		s.subsMu.Unlock()
		if cerr := s.be.Close(); err == nil {
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
			_ = s.flushLastUsed(false)
			s.expireGraces()
		case <-live.C:
			s.announceLastUsed()
		}
	}
}

// Check runs the backend's consistency check (bbolt's) and returns every
// problem found.
func (s *Store) Check() error { return s.be.Check() }
