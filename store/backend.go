package store

import (
	"context"
	"io"
	"time"

	"github.com/keyward/keyward/model"
)

// The seam between the engine and persistence.
//
// The engine (everything in this package outside the backend's files)
// holds the in-memory index, decides verifications, authorises and
// audits every write, and publishes the change feed. A Backend only keeps
// records. Its shape comes from what both backends need, the bbolt file
// today and an etcd cluster next (see the etcd design brief), not from
// what bbolt happens to offer:
//
//   - Writes are not interactive transactions. The engine reads (from
//     memory or the backend), decides, and hands over one Write: a list
//     of puts and deletes plus the conditions it decided on (compare and
//     swap). A condition that no longer holds is ErrConflict, and nothing
//     is written. On etcd a Write is one Txn(If(conds).Then(ops)).
//   - Every commit has a revision. Reads and the load happen at one
//     revision; a change stream continues from it, so another process's
//     writes reach this one's memory.
//   - Last-used times are written in batches with a max-merge, never
//     read back on the hot path.
//   - Bulk import may be cut into batches and is then not atomic.
//
// The verify path never calls the Backend: it reads memory only.

// Rev is a backend revision: every commit gets a greater one. On etcd it
// is the cluster revision; on bbolt the file's transaction id.
type Rev uint64

// Backend keeps keyward's records. Methods are safe for concurrent use;
// the engine serialises its writes (Store.wmu), so a backend need not
// order concurrent Commits beyond making each atomic.
type Backend interface {
	// Load reads every record the engine keeps in memory at one revision,
	// page by page, into sink, and returns that revision. Paged so a
	// million keys never sit in one response (etcd: Range with a limit,
	// every page WithRev of the first); a page's bytes are valid until
	// its Done is called, so the bbolt file can hand out mapped memory.
	Load(ctx context.Context, sink LoadSink) (Rev, error)

	// Commit applies w atomically if every condition in w holds, and
	// returns the new revision. A condition that fails is ErrConflict
	// (a taken name is ErrNameTaken) and nothing is written. The audit
	// events of w are appended in the same commit, so a change and its
	// audit record are never apart. Why: every write of the engine is
	// one Commit; this is the compare-and-swap etcd offers.
	Commit(ctx context.Context, w *Write) (Rev, error)

	// Import writes new keys and their audit events in batches of at
	// most batch keys (0: the backend's own limit), each batch one
	// Commit. Why: a bulk import can exceed what one etcd transaction
	// may hold (128 ops, 1.5 MiB), so it is not atomic there; bbolt
	// writes it all in one transaction, sorted for its B+tree. done
	// reports how many keys were written, so a failed import can be
	// resumed.
	Import(ctx context.Context, keys []KeyPut, audit []model.AuditEvent, batch int) (done int, err error)

	// Watch streams the commits after from, for this process to apply
	// other writers' changes (and, on etcd, its own: memory follows the
	// stream only). Why: with more than one node, memory follows the
	// store through it. Events arrive in revision order and carry the
	// new values; Progress events say the stream is alive up to a
	// revision even when nothing changed; Relist says events were lost
	// (etcd compaction, a slow consumer): reload everything. The channel
	// closes when ctx ends.
	Watch(ctx context.Context, from Rev) <-chan WatchEvent

	// Shared reports whether other processes write to the same records
	// (etcd): the engine then applies every change, its own included,
	// from Watch, and a write returns once its revision is applied.
	// bbolt (one owner) returns false: commits update memory directly.
	Shared() bool

	// Export calls x with every record at one revision (keys with their
	// hashes and last use, operators, metadata, then audit events oldest
	// first), for a backup or a move to another backend. Restore writes
	// an export into an empty backend (batched on etcd).
	Export(ctx context.Context, x ExportSink) (Rev, error)
	Restore(ctx context.Context, src Backend) error

	// Key reads one key with its last use, and the revision it was read
	// at. Why: a lean store keeps no snapshot of keys in memory, and a
	// read-modify-write needs the record the conditions compare against
	// (KeyPut.OldRev: etcd refuses the write if the key was modified
	// after that revision; bbolt, with one writer, may return 0).
	Key(ctx context.Context, id string) (*model.Key, Rev, error)

	// Keys calls fn with every key (last use included) in id order, at
	// the revision it returns. Why:
	// lean stores list keys from the backend, and a catalog import checks
	// every key against the new catalog. The key passed to fn may share
	// memory with the next; fn must not keep it past its call unless it
	// is a snapshot the engine owns.
	Keys(ctx context.Context, fn func(k *model.Key)) (Rev, error)

	// Similar returns up to n keys whose id or folded name starts with
	// prefix. Why: "not found" answers suggest near misses, reading a
	// few index entries (etcd: a limited Range on keys/ and names/)
	// rather than every key.
	Similar(ctx context.Context, prefix string, n int) ([]*model.Key, error)

	// NameOwner returns the id of the key using name (compared as
	// foldName does). Why: names are unique across the store, and the
	// index that keeps them so is the backend's (bbolt: a bucket; etcd:
	// names/ keys), not the engine's memory.
	NameOwner(ctx context.Context, name string) (id string, ok bool, err error)

	// Meta reads a metadata record (catalog, shared secret). Why: they
	// are small single records read outside the load (the secret is
	// decrypted on demand, never kept in memory).
	Meta(ctx context.Context, name MetaName) ([]byte, error)

	// MergeLastUsed writes last-used times, keeping for each key the
	// later of the stored and the given time, and never creating the
	// record of a key that no longer exists. Why: verifications are
	// counted in memory and written in batches off the hot path; with
	// several nodes each writes its own, so the write is a max-merge.
	MergeLastUsed(ctx context.Context, recs []LastUsedRec) error

	// Audit returns audit events newest first, as f asks. Why: the log
	// grows without bound and is never loaded; events are appended by
	// Commit and Import, with a cluster-wide order.
	Audit(ctx context.Context, f AuditFilter) ([]model.AuditEvent, error)

	// Backup writes a consistent copy of everything to w; announce (if
	// not nil) gets its size first. Why: `keyward backup` and the online
	// backup socket; the format is the backend's own.
	Backup(w io.Writer, announce func(size int64) error) (int64, error)

	// Check runs the backend's own consistency check.
	Check() error

	// Close releases the backend. The engine flushes before calling it.
	Close() error
}

// MetaName names a metadata record.
type MetaName string

// The metadata records.
const (
	MetaCatalog MetaName = "catalog"
	MetaSecret  MetaName = "shared_secret"
)

// KeyHashes are the secret hashes that verify as a key: the current
// secret's and, during a grace period, the previous one's.
type KeyHashes struct {
	Cur     [32]byte
	Prev    [32]byte
	HasPrev bool
}

// KeyPut replaces key Old with New: a create when Old is nil, a delete
// when New is nil. The condition is part of it: the stored key must be at
// Old's version (absent for a create), else ErrConflict. Hashes are New's
// secret hashes and Was Old's, so a backend that indexes hashes apart
// from records (bbolt) can drop the stale ones without a read.
type KeyPut struct {
	Old, New *model.Key
	Hashes   KeyHashes
	Was      KeyHashes
	// OldRev is the revision Old was read at (Backend.Key's): etcd
	// refuses the write if the key was modified after it.
	OldRev Rev
}

// OperatorPut replaces operator Name (New nil: delete it).
type OperatorPut struct {
	Name string
	New  *model.Operator
}

// Write is one atomic, conditional change: the unit of Commit.
type Write struct {
	Keys      []KeyPut
	Operators []OperatorPut
	Meta      map[MetaName][]byte
	// Expired are previous secrets whose grace has ended: their hashes
	// stop verifying. The key records do not change (a backend that keeps
	// hashes in the record may ignore this and let nodes expire them on
	// their own clocks).
	Expired []ExpiredHash
	// KeysAt, if not zero, conditions the write on no key having changed
	// after that revision (a catalog import checked every key at it).
	KeysAt Rev
	// Audit events, appended in order; the backend assigns their Seq.
	Audit []model.AuditEvent
	// Bulk says the write holds many keys: write them for throughput.
	Bulk bool
	// Seen is the revision the engine's memory reflected when it
	// authorised and decided this write: etcd refuses it (ErrConflict)
	// if the operators were modified after it, so a write is never
	// authorised by a deleted, disabled or demoted operator, and the
	// last active ADMIN stays. bbolt (one writer) ignores it.
	Seen Rev
	// InitAt, if not zero, creates the store (schema, meta records),
	// created at that time, in the same commit: the first operator of a
	// new database is never apart from it. ErrConflict if it exists.
	InitAt time.Time
}

// ExpiredHash is a key's previous secret hash, once its grace has ended.
type ExpiredHash struct {
	ID   string
	Hash [32]byte
}

// LastUsedRec is one key's last use, for MergeLastUsed.
type LastUsedRec struct {
	ID   string
	At   int64 // Unix ns
	From string
}

// LoadSink receives what Load reads. KeyPage is called with the key
// pages in id order, then HashPage with the hash pages; Operator and
// Meta in any order. A page's slices are valid until its Done is called.
type LoadSink interface {
	Meta(name MetaName, value []byte) error
	Operator(op model.Operator) error
	KeyPage(p *KeyPage) error
	HashPage(p *HashPage) error
	// Flush is called once after the last page. Load returns only once
	// every page's Done has been called.
	Flush() error
}

// KeyPage is a page of encoded key records (see codec.go) and, at the same
// index, each key's encoded last-used record (nil if none).
type KeyPage struct {
	IDs, Vals, LastUsed [][]byte
	Done                func()
}

// HashPage is a page of secret hashes and the id of the key each verifies
// as (encoded as hashRef).
type HashPage struct {
	Hashes, Refs [][]byte
	Done         func()
}

// WatchEvent is one item of a Watch stream: one commit (all of it: a
// revision is never split across events), a progress mark or a relist.
type WatchEvent struct {
	Rev Rev
	// Progress: nothing to apply, the stream is alive up to Rev.
	Progress bool
	// Relist: events were lost; reload everything at a new revision.
	Relist bool
	// Keys are the keys the commit put or deleted, with their new values.
	Keys []KeyEvent
	// Operators is the whole new set of operators, when OperatorsSet
	// (the commit changed any).
	Operators    []model.Operator
	OperatorsSet bool
	// Meta are the metadata records the commit wrote (nil: deleted).
	Meta map[MetaName][]byte
	// LastUsed are last-used times the commit stored (after the merge).
	LastUsed []LastUsedRec
	// Audit counts the audit events the commit appended.
	Audit int
}

// KeyEvent is one key's new state in a WatchEvent.
type KeyEvent struct {
	ID     string
	Key    *model.Key // nil: deleted
	Hashes KeyHashes  // the secrets that verify as it (GraceUntil on Key ends Prev)
}

// ExportSink receives Backend.Export's records. Every func must be set.
type ExportSink struct {
	// Key gets each key (in id order) with its hashes and last use
	// (nil if never used).
	Key      func(k *model.Key, h KeyHashes, lastUsed *LastUsedRec) error
	Operator func(op model.Operator) error
	Meta     func(name MetaName, v []byte) error
	// Audit gets every event, oldest first, Seq as stored.
	Audit func(ev model.AuditEvent) error
	// Created is when the store was created (its schema record).
	Created func(at time.Time) error
}
