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
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
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
//
// Version 2 added the names bucket and the key count (see migrateV1): a
// writable version 1 file is migrated when it is opened.
const SchemaVersion = 2

var (
	bMeta      = []byte("meta")
	bKeys      = []byte("keys")
	bHashes    = []byte("hashes")
	bLastUsed  = []byte("lastused")
	bOperators = []byte("operators")
	bAudit     = []byte("audit")
	bAuditKey  = []byte("audit_by_target")
	// bNames maps foldName(name) to the key id: it keeps names unique
	// without an in-memory map, and lets Peek list keys in name order
	// without reading them all.
	bNames = []byte("names")

	// v1Buckets are the buckets of a schema 1 file; allBuckets those of the
	// current schema.
	v1Buckets  = [][]byte{bMeta, bKeys, bHashes, bLastUsed, bOperators, bAudit, bAuditKey}
	allBuckets = append(slices.Clip(v1Buckets), bNames)

	kSchema  = []byte("schema")
	kCatalog = []byte("catalog")
	kSecret  = []byte("shared_secret")
	kCreated = []byte("created_at")
	// kKeyCount is how many records the keys bucket holds (8 bytes, big
	// endian), kept by every transaction that adds or removes keys, so Peek
	// can report the total without counting them.
	kKeyCount = []byte("key_count")
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

// entry is the in-memory state of one key: what a verification needs,
// and its buffered last-used time. It holds no pointer (see slots.go): the
// key's full record is read from the file, or from a kept snapshot.
//
// The first 64 bytes are everything a verification reads (see facts.go):
// the secret hash the lookup compares and the key's facts, refreshed by
// setKey whenever the key changes. The entry is 128 bytes, so in a chunk
// each entry starts a cache line.
type entry struct {
	// Guarded by Store.mu: this key's current secret hash (the hash
	// index keeps only a prefix and compares this, see hashIndex) and
	// its facts.
	cur     [32]byte
	expires int64  // Unix ns, model.NeverExpires for none
	created int64  // Unix ns, for the creator check
	grant   uint32 // index into Store.grantTab
	dirty   atomic.Bool
	active  bool
	hasPrev bool // prev holds the previous secret's hash (a grace period runs)
	live    bool // the slot holds a key
	_       [5]byte

	id     [16]byte // the key id, zero if it is not 16 bytes (Store.mu)
	lastAt atomic.Int64
	prev   [32]byte // see hasPrev (Store.mu)
	_      [8]byte
}

// reset zeroes e, for a freed slot.
func (e *entry) reset() {
	e.cur, e.expires, e.created, e.grant = [32]byte{}, 0, 0, 0
	e.dirty.Store(false)
	e.active, e.hasPrev, e.live = false, false, false
	e.id, e.prev = [16]byte{}, [32]byte{}
	e.lastAt.Store(0)
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
	if opts.Lock.Started.IsZero() {
		opts.Lock.Started = time.Now().UTC()
	}
	if path == "" {
		return nil, errors.New("no database path given")
	}
	if opts.Warn == nil {
		opts.Warn = func(msg string) { fmt.Fprintln(os.Stderr, "keyward: warning: "+model.Sanitize(msg)) }
	}
	dir := filepath.Dir(path)
	if opts.NoCreateDir {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil, &NoDirError{Dir: dir}
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating database directory: %w", err)
	}
	fi, statErr := lstatDB(path)
	if statErr != nil && !errors.Is(statErr, fs.ErrNotExist) {
		if errors.Is(statErr, ErrUnsafeFile) {
			return nil, statErr
		}
		return nil, fmt.Errorf("opening database %s: %w", path, statErr)
	}
	if statErr == nil {
		if err := checkFile(path, fi); err != nil {
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
		FreelistType: bolt.FreelistMapType, OpenFile: dbOpenFile}
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
		return nil, openError(path, err)
	}
	if !readOnly {
		// The lock file is written before the (possibly long) load, so a
		// planted file beside the database is refused at once.
		// Only a refusal is fatal: a lock file that cannot be written
		// for lack of space costs nothing but the holder's name in
		// another process's message (reads must work on a full disk).
		if err := writeLockInfo(path, opts.Lock); errors.Is(err, ErrUnsafeFile) {
			db.Close()
			return nil, fmt.Errorf("lock file: %w", err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if w := dbFileWarning(path, fi); w != "" {
			opts.Warn(w)
		}
	}
	if w := DirWarning(dir); w != "" {
		opts.Warn(w)
	}
	if _, err := ReadSecretFile(MasterKeyPath(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Verification never needs it; revealing or rotating the shared
		// secret refuses it (see masterKey). Say so now, not then.
		opts.Warn(fmt.Sprintf("master key: %v; revealing or rotating the shared secret is refused until this is fixed", err))
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
	fail := func(err error) (*Store, error) {
		if !readOnly {
			_ = os.Remove(lockPath(path))
		}
		db.Close()
		return nil, err
	}
	if err := s.init(); err != nil {
		return fail(err)
	}
	if err := s.load(); err != nil {
		return fail(err)
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

func lockPath(dbPath string) string { return dbPath + ".lock" }

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
	if s.readOnly {
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
// schema version and refuses foreign files. A writable schema 1 file is
// migrated to the current schema.
func (s *Store) init() error {
	var version int
	var fresh bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if version, fresh, err = readSchema(tx, s.path); err != nil || fresh || version >= schemaNamesIndex {
			return err
		}
		// Before migrating: a file with a schema but not the buckets of
		// one is foreign, and must be left untouched.
		return checkBuckets(tx, s.path, v1Buckets)
	})
	if err != nil {
		return err
	}
	if !fresh {
		s.indexed = version >= schemaNamesIndex
		if s.indexed || s.readOnly {
			return nil // a read-only file stays as it is: writes are refused anyway
		}
		if err := s.db.Update(migrateV1); err != nil {
			return fmt.Errorf("%s: adding the name index (schema 1 -> 2): %w", s.path, err)
		}
		s.indexed = true
		return nil
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
	s.indexed = true
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		_ = meta.Put(kSchema, []byte(strconv.Itoa(SchemaVersion)))
		_ = meta.Put(kKeyCount, u64(0))
		_ = meta.Put(kCreated, []byte(now.Format(time.RFC3339Nano)))
		cb, _ := json.Marshal(cat)
		_ = meta.Put(kCatalog, cb)
		id, err := model.NewOperatorID()
		if err != nil {
			return err
		}
		op := &model.Operator{ID: id, Name: boot, Role: model.OperatorAdmin, CreatedAt: now, CreatedBy: "bootstrap"}
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
//
// The garbage collector is paused while loading (debug.SetGCPercent(-1),
// restored to its previous value on return). The setting is process-wide:
// for the duration of Open, no goroutine of the process triggers a
// collection (GOMEMLIMIT, if set, still does). Loading makes almost no
// garbage, so a collection during it would only trace the growing live
// heap again and again (about a sixth of a 1M-key load). Once restored, the
// first collection runs concurrently after Open returns. Concurrent Opens
// share one pause (see pauseGC), so the last one restores the setting
// found by the first.
//
// The file's mapped pages are released (see releasePages) before the load,
// since bolt.Open's free-page scan has just read every one; then as the
// load copies their records out, so they do not add to its peak; and all
// once more when it ends. The file then costs the process no RSS until
// something reads it again.
func (s *Store) load() error {
	defer pauseGC()()
	return s.db.View(func(tx *bolt.Tx) error {
		m := mappingOf(tx)
		m.releaseAll()
		defer m.releaseAll()
		required := allBuckets
		if !s.indexed {
			required = v1Buckets
		}
		if err := checkBuckets(tx, s.path, required); err != nil {
			return err
		}
		if err := json.Unmarshal(tx.Bucket(bMeta).Get(kCatalog), &s.catalog); err != nil {
			return fmt.Errorf("reading catalog: %w", err)
		}
		if err := s.loadKeys(tx, m); err != nil {
			return err
		}
		err := tx.Bucket(bOperators).ForEach(func(k, v []byte) error {
			var op model.Operator
			if err := json.Unmarshal(v, &op); err != nil {
				return fmt.Errorf("operator %q: %w", model.Sanitize(string(k)), err)
			}
			if op.ID == "" {
				// Written before operators had an identity: derive a
				// stable one; it is stored with the next write of the
				// record (see model.LegacyOperatorID).
				op.ID = model.LegacyOperatorID(op.Name, op.CreatedAt)
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

// gcPause counts the loads under way; the first pauses the garbage
// collector and the last restores the percentage the first found. (A plain
// defer debug.SetGCPercent(debug.SetGCPercent(-1)) per load would, with
// two overlapping loads, leave the collector off for good.)
var gcPause struct {
	sync.Mutex
	n    int
	prev int
}

// pauseGC turns the garbage collector off until the returned function is
// called. It is process-wide.
func pauseGC() (resume func()) {
	gcPause.Lock()
	if gcPause.n == 0 {
		gcPause.prev = debug.SetGCPercent(-1)
	}
	gcPause.n++
	gcPause.Unlock()
	return func() {
		gcPause.Lock()
		if gcPause.n--; gcPause.n == 0 {
			debug.SetGCPercent(gcPause.prev)
		}
		gcPause.Unlock()
	}
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

// loadBatchSize is how many key records one decode worker takes at a time.
// It is a slot chunk: a batch's entries become one chunk of the slot table.
const loadBatchSize = slotChunk

// loadBatch is a run of consecutive key records (in id order) and, once
// done is closed, their decoded form.
type loadBatch struct {
	recs  *loadRecs
	nUsed int // how many recs.lus are not nil

	keys    []model.Key // slab: &keys[i] is the initial snapshot of key i
	entries []entry     // a slot chunk: &entries[i] is key i's entry
	grants  []*grant    // grants[i] is key i's
	err     error
	done    chan struct{}
}

// loadRecs holds a batch's records until it is decoded. They point into
// the mmapped file and are valid only inside the read transaction. The
// slices are recycled: allocated per batch they would be 72 bytes of
// garbage per key (70 MiB at 1M keys), all of it resident at the end of
// the load because the garbage collector is paused.
type loadRecs struct {
	ids  [][]byte // bucket keys, for error messages
	vals [][]byte // key records
	lus  [][]byte // the matching last-used records, nil when there is none
}

// release releases the mapped pages r's records are on: those of the keys
// bucket, then those of the last-used bucket.
func (r *loadRecs) release(m fileMapping) {
	pages := pageRun{m: m}
	for i, k := range r.ids {
		pages.add(k)
		pages.add(r.vals[i])
	}
	pages.release()
	for _, lu := range r.lus {
		pages.add(lu)
	}
	pages.release()
}

// loadKeys reads the keys, last-used and hash buckets into s.slots,
// s.graces and s.hashes. It does what a plain walk of the three buckets
// would, faster on a large database:
//
//   - The calling goroutine walks the keys bucket and, beside it, the
//     last-used bucket (both in id order), cutting the records into batches;
//     GOMAXPROCS workers decode the batches meanwhile. The records are only
//     valid inside the transaction: every worker has finished before
//     loadKeys returns.
//   - A worker that has decoded a batch releases the mapped pages its
//     records were on and returns the record slices to a free list, so at
//     most the batches in flight hold one (see loadRecs).
//   - A batch's entries are one chunk of the slot table (see slots.go).
//     Keys and last-used times are allocated per batch in slabs (one
//     allocation per batch instead of one per key), and a key's own strings
//     (id, name, description, hint) share one allocation. Snapshots are
//     immutable and replaced, never mutated, so pointers into a slab stay
//     valid. A slab is freed once none of its keys is referenced; a key
//     replaced or deleted since the load keeps its slot in memory until
//     then, so at worst a batch's slab (about 1 MiB) outlives most of it.
//     A Lean store keeps no snapshot: the slabs are garbage once loaded.
//   - Batches are then inserted in id order by the calling goroutine, so
//     duplicates resolve as in a sequential walk. loadHashes then does the
//     same for the hash bucket.
//
// Names are not loaded: the names bucket keeps them unique on disk.
//
// TestLoadKeysMatchesSequential compares the result with the plain walk.
func (s *Store) loadKeys(tx *bolt.Tx, m fileMapping) error {
	workers := max(1, runtime.GOMAXPROCS(0))
	work := make(chan *loadBatch, 4*workers)
	// Every record set is in the work queue, with a worker or being
	// filled, so this capacity never blocks a worker returning one.
	free := make(chan *loadRecs, cap(work)+workers+1)
	var wg sync.WaitGroup
	defer wg.Wait() // the records must not be read after the tx ends
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			intern := map[string]string{}
			var scratch []byte
			var grants grantTable
			for b := range work {
				b.decode(intern, &scratch, &grants)
				r := b.recs
				b.recs = nil
				r.release(m)
				r.ids, r.vals, r.lus = r.ids[:0], r.vals[:0], r.lus[:0]
				free <- r
				close(b.done)
			}
		}()
	}
	var batches []*loadBatch
	var cur *loadBatch
	flush := func() {
		cur.done = make(chan struct{})
		batches = append(batches, cur)
		work <- cur
		cur = nil
	}
	n := 0
	lc := tx.Bucket(bLastUsed).Cursor()
	lk, lv := lc.First()
	kc := tx.Bucket(bKeys).Cursor()
	for k, v := kc.First(); k != nil; k, v = kc.Next() {
		if cur == nil {
			cur = &loadBatch{}
			select {
			case cur.recs = <-free:
			default:
				cur.recs = &loadRecs{ids: make([][]byte, 0, loadBatchSize),
					vals: make([][]byte, 0, loadBatchSize), lus: make([][]byte, 0, loadBatchSize)}
			}
		}
		for lk != nil && bytes.Compare(lk, k) < 0 {
			lk, lv = lc.Next()
		}
		var used []byte
		if lk != nil && bytes.Equal(lk, k) {
			used = lv
			if used == nil {
				used = []byte{} // a present but empty record: decodeLastUsed refuses it
			}
			cur.nUsed++
		}
		r := cur.recs
		r.ids = append(r.ids, k)
		r.vals = append(r.vals, v)
		r.lus = append(r.lus, used)
		n++
		if len(r.vals) == loadBatchSize {
			flush()
		}
	}
	if cur != nil {
		flush()
	}
	close(work)

	// Size the maps once: growing them key by key costs a rehash of every
	// entry at each doubling.
	if n > s.slots.live {
		snaps := s.slots.snaps
		s.slots = newSlotTable(n)
		if snaps != nil {
			s.slots.snaps = [][]*model.Key{}
		}
		s.hashes = newHashIndex(n, s.opts.collideHashes)
	}
	for _, b := range batches {
		<-b.done
		if b.err != nil {
			return b.err
		}
		// Every batch but the last is full, so batch c is chunk c.
		base := uint32(len(s.slots.ents)) << slotBits
		s.slots.grow(b.entries)
		s.slots.used = base + uint32(len(b.keys))
		for i := range b.keys {
			key, slot := &b.keys[i], base+uint32(i)
			if old, dup := s.slots.lookup(key.ID); dup {
				s.slots.release(old) // a damaged file: the later record wins, as in a walk
			}
			s.slots.index(slot, key.ID)
			s.slots.at(slot).grant = s.grantSlot(b.grants[i])
			s.slots.setSnap(slot, key)
			if key.GraceUntil != nil {
				s.graces[key.ID] = *key.GraceUntil
			}
		}
	}
	return s.loadHashes(tx, workers, m)
}

// decode decodes b's records into its slabs. intern, scratch and grants
// belong to the calling worker.
func (b *loadBatch) decode(intern map[string]string, scratch *[]byte, grants *grantTable) {
	r := b.recs
	n := len(r.vals)
	b.keys = make([]model.Key, n)
	b.entries = make([]entry, slotChunk)
	b.grants = make([]*grant, n)
	var times []time.Time
	if b.nUsed > 0 {
		times = make([]time.Time, b.nUsed)
	}
	var a loadAlloc
	for i, v := range r.vals {
		key, e := &b.keys[i], &b.entries[i]
		if err := decodeKeyInto(key, v, intern, scratch, &a); err != nil {
			b.err = fmt.Errorf("key %q: %w", model.Sanitize(string(r.ids[i])), err)
			return
		}
		if at, from, ok := loadLastUsed(r.lus[i], intern); ok {
			times[0] = time.Unix(0, at).UTC()
			key.LastUsedAt, key.LastUsedFrom = &times[0], from
			times = times[1:]
			e.lastAt.Store(at)
		}
		e.setFacts(key)
		b.grants[i] = grants.get(key)
	}
}

// loadLastUsed decodes a last-used record as a load does: a missing or
// damaged one is no record, and sources, which repeat, share one string
// through intern.
func loadLastUsed(lv []byte, intern map[string]string) (at int64, from string, ok bool) {
	if len(lv) < 8 { // decodeLastUsed's check
		return 0, "", false
	}
	from, ok = intern[string(lv[8:])]
	if !ok {
		from = string(lv[8:])
		if len(intern) < 1<<16 {
			intern[from] = from
		}
	}
	return int64(binary.BigEndian.Uint64(lv)), from, true
}

// loadAlloc hands out the small pieces of decoded keys from slabs: scope
// and resource lists (capped at their length, so an append copies) and
// expiry and grace times.
type loadAlloc struct {
	strs  []string
	times []time.Time
}

func (a *loadAlloc) strings(n int) []string {
	if a == nil {
		return make([]string, n)
	}
	if n > cap(a.strs)-len(a.strs) {
		a.strs = make([]string, 0, max(n, 1024))
	}
	i := len(a.strs)
	a.strs = a.strs[:i+n]
	return a.strs[i : i+n : i+n]
}

func (a *loadAlloc) time(t time.Time) *time.Time {
	if len(a.times) == cap(a.times) {
		a.times = make([]time.Time, 0, 256)
	}
	a.times = append(a.times, t)
	return &a.times[len(a.times)-1]
}

// decodeKeyInto is decodeKey writing into *k, with fewer allocations: the
// record's unshared strings (id, name, description, hint) are substrings
// of one string, and lists and times come from a's slabs. On error *k is
// left partly written.
func decodeKeyInto(k *model.Key, b []byte, intern map[string]string, scratch *[]byte, a *loadAlloc) error {
	if len(b) == 0 || b[0] != keyCodecV1 {
		return errCorruptRecord
	}
	d := decoder{b: b[1:], intern: intern}
	id := d.raw()
	name := d.raw()
	desc := d.raw()
	k.Role = model.Role(d.str(true))
	k.Scopes = d.strsFrom(a)
	k.Resources = d.strsFrom(a)
	k.Status = model.Status(d.str(true))
	if t, ok := d.timeVal(); ok {
		k.CreatedAt = t
	}
	k.CreatedBy = d.str(true)
	if t, ok := d.timeVal(); ok {
		k.UpdatedAt = t
	}
	if t, ok := d.timeVal(); ok {
		k.ExpiresAt = a.time(t)
	}
	hint := d.raw()
	k.Version = d.uvarint()
	if t, ok := d.timeVal(); ok {
		k.GraceUntil = a.time(t)
	}
	if d.err != nil {
		return d.err
	}
	buf := append(append(append(append((*scratch)[:0], id...), name...), desc...), hint...)
	*scratch = buf
	all := string(buf)
	i := 0
	next := func(n int) string { i += n; return all[i-n : i] }
	k.ID, k.Name, k.Description, k.Hint = next(len(id)), next(len(name)), next(len(desc)), next(len(hint))
	return nil
}

// raw is str(false) without the copy: the bytes point into the record.
func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return nil
	}
	r := d.b[:n]
	d.b = d.b[n:]
	return r
}

// strsFrom reads a string list, taking it from a's slab (a plain slice
// when a is nil).
func (d *decoder) strsFrom(a *loadAlloc) []string {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return nil
	}
	out := a.strings(int(n))
	for i := range out {
		out[i] = d.str(true)
	}
	return out
}

// timeVal is time without allocating: ok is false where time returns nil.
func (d *decoder) timeVal() (time.Time, bool) {
	if d.err != nil {
		return time.Time{}, false
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return time.Time{}, false
	}
	d.b = d.b[n:]
	if v == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, v).UTC(), true
}

// hashBatch is a run of hash index records and, once done is closed, the
// slot each names (noSlot for an orphan).
type hashBatch struct {
	hs   [][]byte
	vs   [][]byte
	es   []uint32
	done chan struct{}
}

// loadHashes fills s.hashes and the entries' hashes from the hash bucket.
// s.slots must be complete: workers look the ids up in it (reads only)
// while the calling goroutine walks the bucket. The calling goroutine
// applies the results in bucket order, as a sequential walk would, once
// a batch is the oldest of more than 4*workers in flight (or at the end),
// releases the mapped pages its records were on, and reuses it: the
// batches' slices are never garbage.
func (s *Store) loadHashes(tx *bolt.Tx, workers int, m fileMapping) error {
	work := make(chan *hashBatch, 4*workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				b.es = b.es[:len(b.vs)]
				for i, v := range b.vs {
					// decodeHashRef without allocating the id
					slot, ok := s.slots.lookup(string(v[1:]))
					if !ok {
						slot = noSlot
					}
					b.es[i] = slot
				}
				close(b.done)
			}
		}()
	}
	var inflight []*hashBatch // oldest first
	var cur *hashBatch
	pages := pageRun{m: m}
	apply := func() *hashBatch {
		b := inflight[0]
		inflight = inflight[1:]
		<-b.done
		for i, slot := range b.es {
			if slot == noSlot {
				continue // an orphan hash verifies as NOT_FOUND either way
			}
			h := [32]byte(b.hs[i])
			s.hashes.add(h, slot)
			if e := s.slots.at(slot); b.vs[i][0] == 1 { // previous
				e.prev, e.hasPrev = h, true
			} else {
				e.cur = h
			}
		}
		for i, h := range b.hs {
			pages.add(h)
			pages.add(b.vs[i])
		}
		pages.release()
		b.hs, b.vs, b.es = b.hs[:0], b.vs[:0], b.es[:0]
		return b
	}
	c := tx.Bucket(bHashes).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) < 2 || len(k) != 32 { // decodeHashRef's check
			close(work)
			return fmt.Errorf("hash index: %w", errCorruptRecord)
		}
		if cur == nil {
			if len(inflight) > cap(work) {
				cur = apply()
			} else {
				cur = &hashBatch{hs: make([][]byte, 0, loadBatchSize), vs: make([][]byte, 0, loadBatchSize),
					es: make([]uint32, 0, loadBatchSize)}
			}
			cur.done = make(chan struct{})
		}
		cur.hs = append(cur.hs, k)
		cur.vs = append(cur.vs, v)
		if len(cur.vs) == loadBatchSize {
			inflight = append(inflight, cur)
			work <- cur
			cur = nil
		}
	}
	if cur != nil {
		inflight = append(inflight, cur)
		work <- cur
	}
	close(work)
	for len(inflight) > 0 {
		apply()
	}
	return nil
}
