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
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// SchemaVersion is written to the meta bucket of every database. A newer
// database is refused rather than misread.
const SchemaVersion = 1

var (
	bMeta      = []byte("meta")
	bKeys      = []byte("keys")
	bHashes    = []byte("hashes")
	bLastUsed  = []byte("lastused")
	bOperators = []byte("operators")
	bAudit     = []byte("audit")
	bAuditKey  = []byte("audit_by_target")

	allBuckets = [][]byte{bMeta, bKeys, bHashes, bLastUsed, bOperators, bAudit, bAuditKey}

	kSchema  = []byte("schema")
	kCatalog = []byte("catalog")
	kSecret  = []byte("shared_secret")
	kCreated = []byte("created_at")
)

// Errors callers can test with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("the key was changed by someone else since you loaded it")
	ErrForbidden   = errors.New("permission denied")
	ErrNameTaken   = errors.New("name is already used by another key")
	ErrLocked      = errors.New("database is in use by another keyward process")
	ErrNewerSchema = errors.New("database was written by a newer keyward")
	ErrForeign     = errors.New("file is not a keyward database")
	ErrLastAdmin   = errors.New("that would leave no active ADMIN operator")
	ErrClosed      = errors.New("store is closed")
	// ErrReadOnly: the file (or its file system) is read-only. Open still
	// succeeds, so reads work; every change is refused with this error.
	ErrReadOnly = errors.New("database is read-only: changes are refused")
	// ErrDamaged: the file is a bbolt file but cannot be complete (for
	// example it was truncated). Open refuses it without writing.
	ErrDamaged = errors.New("database file is damaged")
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
		if h.SSHAddr != "" {
			host, port := splitHostPort(h.SSHAddr)
			msg += fmt.Sprintf("; connect to it with: ssh -p %s %s, or stop that server", port, host)
			return msg
		}
	}
	return msg + "; wait for it to finish or stop it"
}

func (e *LockedError) Unwrap() error { return ErrLocked }

func splitHostPort(addr string) (string, string) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return addr, "22"
	}
	host := addr[:i]
	if host == "" || host == "0.0.0.0" || host == "::" || host == "[::]" {
		host = "localhost"
	}
	return host, addr[i+1:]
}

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
	// NoSync skips fsync on commit. Only for benchmarks and seeding
	// throwaway databases.
	NoSync bool
}

// entry is the in-memory state of one key. key is an immutable snapshot;
// it is replaced, never mutated. Last-used is buffered in atomics by
// Verify and folded into a new snapshot when flushed.
type entry struct {
	key      atomic.Pointer[model.Key]
	lastAt   atomic.Int64
	lastFrom atomic.Pointer[string]
	dirty    atomic.Bool
	// Guarded by Store.mu: this key's current secret hash, and the
	// previous one while a regeneration grace period runs.
	cur     [32]byte
	prev    [32]byte
	hasPrev bool
}

// hashSlot is the in-memory value of the hash index. It points straight at
// the key's entry, so a verification costs one map lookup and no second
// lookup by id (on a large DB each lookup is a few cache misses).
type hashSlot struct {
	e        *entry
	previous bool
}

// Store is an open keyward database.
type Store struct {
	db       *bolt.DB
	path     string
	readOnly bool // opened with bbolt's ReadOnly: the file is not writable
	opts     Options
	now      func() time.Time
	prefix   string

	wmu sync.Mutex // serialises writers together with their memory updates

	mu        sync.RWMutex // guards the maps below
	keys      map[string]*entry
	hashes    map[[32]byte]hashSlot
	names     map[string]string // folded name -> id
	ops       map[string]*model.Operator
	catalog   model.Catalog
	secretSum [32]byte // SHA-256 of the current shared secret, zero if none
	prevSum   [32]byte
	prevUntil time.Time
	graces    map[string]time.Time // key id -> end of grace for its previous secret

	dirtyMu sync.Mutex
	dirty   []*entry

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
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenPrefix == "" {
		opts.TokenPrefix = model.DefaultPrefix
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating database directory: %w", err)
	}
	fi, statErr := os.Stat(path)
	if statErr == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory, not a keyward database", path)
	}
	if statErr == nil && !fi.Mode().IsRegular() {
		// A device, FIFO or socket (--db /dev/null): never write to it.
		return nil, fmt.Errorf("%s: %w (it is not a regular file); refusing to touch it", path, ErrForeign)
	}
	if statErr == nil && fi.Size() > 0 {
		if err := checkLength(path, fi.Size()); err != nil {
			return nil, err
		}
	}
	if statErr == nil && fi.Size() == 0 && fi.Mode().Perm()&0o077 != 0 {
		// An empty file (touch, mktemp) has nothing to lose and becomes a
		// new database; it gets a new database's mode too.
		_ = os.Chmod(path, 0o600)
	}
	// No InitialMmapSize: it would save a bulk import's remaps, but bbolt
	// then grows the file in 16 MiB steps, so every tiny DB is 16 MiB.
	bopts := &bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType}
	db, err := bolt.Open(path, 0o600, bopts)
	readOnly := false
	if err != nil && statErr == nil && fi.Size() > 0 && (errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)) {
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
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, &LockedError{Path: path, Holder: readLockInfo(path)}
		}
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, bolt.ErrChecksum) {
			return nil, fmt.Errorf("%s: %w (bbolt says: %v); refusing to touch it", path, ErrForeign, err)
		}
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	s := &Store{
		db: db, path: path, readOnly: readOnly, opts: opts, now: opts.Now, prefix: opts.TokenPrefix,
		keys: map[string]*entry{}, hashes: map[[32]byte]hashSlot{}, names: map[string]string{},
		ops: map[string]*model.Operator{}, graces: map[string]time.Time{},
		subs: map[*Subscription]struct{}{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	if !readOnly { // a reader shares the file: the lock file is the writer's
		writeLockInfo(path, opts.Lock)
	}
	go s.flushLoop()
	return s, nil
}

func lockPath(dbPath string) string { return dbPath + ".lock" }

func writeLockInfo(path string, li LockInfo) {
	li.PID = os.Getpid()
	if li.Command == "" {
		li.Command = "keyward"
	}
	li.Started = time.Now().UTC()
	b, _ := json.Marshal(li)
	_ = os.WriteFile(lockPath(path), b, 0o600)
}

func readLockInfo(path string) *LockInfo {
	b, err := os.ReadFile(lockPath(path))
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

// init creates the buckets of a new database, or checks an existing one's
// schema version and refuses foreign files.
func (s *Store) init() error {
	var fresh bool
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta == nil {
			n := 0
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { n++; return nil })
			if n > 0 {
				return fmt.Errorf("%s: %w (it is a bbolt file with other data); refusing to touch it", s.path, ErrForeign)
			}
			fresh = true
			return nil
		}
		v, err := strconv.Atoi(string(meta.Get(kSchema)))
		if err != nil {
			return fmt.Errorf("%s: %w (no schema version)", s.path, ErrForeign)
		}
		if v > SchemaVersion {
			return fmt.Errorf("%s: %w (schema %d; this build reads up to %d); upgrade keyward", s.path, ErrNewerSchema, v, SchemaVersion)
		}
		return nil
	})
	if err != nil || !fresh {
		return err
	}
	if s.readOnly {
		return s.readOnlyError()
	}
	var cat model.Catalog
	if len(s.opts.DefaultCatalog) > 0 {
		if cat, err = model.ParseCatalog(s.opts.DefaultCatalog); err != nil {
			return fmt.Errorf("default catalog: %w", err)
		}
	}
	boot := s.opts.Bootstrap
	if boot == "" {
		boot = LocalOperatorName()
	}
	if err := model.ValidateOperatorName(boot); err != nil {
		return fmt.Errorf("bootstrap operator: %w", err)
	}
	now := s.now().UTC()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		_ = meta.Put(kSchema, []byte(strconv.Itoa(SchemaVersion)))
		_ = meta.Put(kCreated, []byte(now.Format(time.RFC3339Nano)))
		cb, _ := json.Marshal(cat)
		_ = meta.Put(kCatalog, cb)
		op := &model.Operator{Name: boot, Role: model.OperatorAdmin, CreatedAt: now, CreatedBy: "bootstrap"}
		ob, _ := json.Marshal(op)
		if err := tx.Bucket(bOperators).Put([]byte(boot), ob); err != nil {
			return err
		}
		return appendAudit(tx, model.AuditEvent{Time: now, Actor: "bootstrap", Action: model.ActOperatorAdd, Target: boot, Detail: "first ADMIN operator of a new database (local OS user)"})
	})
}

// LocalOperatorName turns the local OS user into a valid operator name.
func LocalOperatorName() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	name = strings.ToLower(name)
	var b strings.Builder
	for i, c := range name {
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '.' || c == '_' || c == '-'))
		if ok {
			b.WriteRune(c)
		} else if b.Len() > 0 {
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > 32 {
		out = out[:32]
	}
	if out == "" {
		out = "admin"
	}
	return out
}

// load reads every key, hash, last-used record, operator and the catalog
// into memory.
func (s *Store) load() error {
	return s.db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("%s: %w (bucket %q is missing)", s.path, ErrForeign, b)
			}
		}
		intern := map[string]string{}
		if err := json.Unmarshal(tx.Bucket(bMeta).Get(kCatalog), &s.catalog); err != nil {
			return fmt.Errorf("reading catalog: %w", err)
		}
		// Size the maps once: growing them key by key costs a rehash of
		// every entry at each doubling (about a quarter of a 1M-key load).
		kb := tx.Bucket(bKeys)
		if n := kb.Stats().KeyN; n > len(s.keys) {
			s.keys = make(map[string]*entry, n)
			s.names = make(map[string]string, n)
			s.hashes = make(map[[32]byte]hashSlot, n)
		}
		// Both buckets are in id order: walk the last-used records beside
		// the keys instead of searching the tree once per key.
		lc := tx.Bucket(bLastUsed).Cursor()
		lk, lv := lc.First()
		err := kb.ForEach(func(k, v []byte) error {
			key, err := decodeKey(v, intern)
			if err != nil {
				return fmt.Errorf("key %q: %w", model.Sanitize(string(k)), err)
			}
			e := &entry{}
			for lk != nil && bytes.Compare(lk, k) < 0 {
				lk, lv = lc.Next()
			}
			if lk != nil && bytes.Equal(lk, k) {
				at, from, err := decodeLastUsed(lv)
				if err == nil {
					t := time.Unix(0, at).UTC()
					if shared, ok := intern[from]; ok {
						from = shared // sources repeat: share one string
					} else if len(intern) < 1<<16 {
						intern[from] = from
					}
					key.LastUsedAt, key.LastUsedFrom = &t, from
					e.lastAt.Store(at)
				}
			}
			e.key.Store(key)
			s.keys[key.ID] = e
			s.names[foldName(key.Name)] = key.ID
			if key.GraceUntil != nil {
				s.graces[key.ID] = *key.GraceUntil
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bHashes).ForEach(func(k, v []byte) error {
			ref, err := decodeHashRef(v)
			if err != nil || len(k) != 32 {
				return fmt.Errorf("hash index: %w", errCorruptRecord)
			}
			h := [32]byte(k)
			if e := s.keys[ref.id]; e != nil { // an orphan hash verifies as NOT_FOUND either way
				s.hashes[h] = hashSlot{e: e, previous: ref.previous}
				if ref.previous {
					e.prev, e.hasPrev = h, true
				} else {
					e.cur = h
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bOperators).ForEach(func(k, v []byte) error {
			var op model.Operator
			if err := json.Unmarshal(v, &op); err != nil {
				return fmt.Errorf("operator %q: %w", model.Sanitize(string(k)), err)
			}
			s.ops[op.Name] = &op
			return nil
		})
		if err != nil {
			return err
		}
		return s.loadSecretSums(tx)
	})
}

func foldName(name string) string { return strings.ToLower(strings.TrimSpace(name)) }

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
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_ = s.FlushLastUsed()
			s.expireGraces()
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
