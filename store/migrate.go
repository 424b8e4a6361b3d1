package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/keyward/keyward/model"
)

// MigrateStats counts what Migrate moved.
type MigrateStats struct {
	Keys      int `json:"keys"`
	LastUsed  int `json:"last_used"` // keys that had a last use
	Operators int `json:"operators"`
	Meta      int `json:"meta"` // catalog, shared secret, ...
	Audit     int `json:"audit_events"`
	// Rev is the source file's revision that was copied (one snapshot).
	Rev Rev `json:"source_revision"`
}

// ErrNotEmpty is returned (wrapped) by Migrate when the etcd prefix
// already holds records: a move goes into an empty prefix only, so it
// never mixes two installations.
var ErrNotEmpty = errors.New("the etcd prefix is not empty")

// openEtcdTarget opens an etcd cluster as a bare Backend for Migrate to
// Restore into, without bootstrapping or loading it; it returns an error
// wrapping ErrNotEmpty if the prefix holds a store. (Restore itself
// refuses a prefix holding any record.)
func openEtcdTarget(cfg EtcdConfig, opts *Options) (Backend, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	b, err := openEtcdBackend(cfg, opts)
	if err != nil {
		return nil, err
	}
	if !b.fresh {
		_ = b.Close()
		return nil, fmt.Errorf("%w: %s already holds a keyward store; migrate writes only into an empty prefix (choose another --etcd-prefix)", ErrNotEmpty, EtcdLocation(cfg))
	}
	return b, nil
}

// Migrate copies everything in the bbolt database at src (keys with their
// hashes and last use, operators, catalog, the sealed shared secret, the
// audit log) into an empty etcd prefix, from one consistent snapshot of
// the file. The file is opened like any database, so one held by a
// running keyward serve (or a TUI) is refused as in use, and it is never
// created: a missing src is an error. The master key is not copied: it
// stays a file (MasterKeyPath(src), or opts.MasterKey), which every node
// must be given.
func Migrate(ctx context.Context, src string, dst EtcdConfig, opts Options) (MigrateStats, error) {
	var stats MigrateStats
	if _, err := lstatDB(src); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return stats, fmt.Errorf("no keyward database at %s", src)
		}
		return stats, err
	}
	opts.NoCreateDir = true
	opts.fill()
	from, err := openBolt(src, &opts)
	if err != nil {
		return stats, err
	}
	defer from.Close()
	if from.fresh {
		return stats, fmt.Errorf("%s is an empty database: nothing to move", src)
	}
	to, err := openEtcdTarget(dst, &opts)
	if err != nil {
		return stats, err
	}
	defer to.Close()
	counted := &countingExport{Backend: from, stats: &stats}
	if err := to.Restore(ctx, counted); err != nil {
		return stats, fmt.Errorf("writing into etcd: %w", err)
	}
	return stats, nil
}

// countingExport is a source Backend whose Export counts what it hands
// over, for Migrate's report.
type countingExport struct {
	Backend
	stats *MigrateStats
}

func (c *countingExport) Export(ctx context.Context, x ExportSink) (Rev, error) {
	*c.stats = MigrateStats{}
	s := c.stats
	wrapped := ExportSink{
		Key: func(k *model.Key, h KeyHashes, lu *LastUsedRec) error {
			s.Keys++
			if lu != nil {
				s.LastUsed++
			}
			return x.Key(k, h, lu)
		},
		Operator: func(op model.Operator) error { s.Operators++; return x.Operator(op) },
		Meta:     func(name MetaName, v []byte) error { s.Meta++; return x.Meta(name, v) },
		Audit:    func(ev model.AuditEvent) error { s.Audit++; return x.Audit(ev) },
		Created:  func(at time.Time) error { return x.Created(at) },
	}
	rev, err := c.Backend.Export(ctx, wrapped)
	s.Rev = rev
	return rev, err
}

// masterKeyFor is the master key file that goes with the database at
// path: opts.MasterKey if set, else the one beside it.
func masterKeyFor(path string, opts Options) string {
	if opts.MasterKey != "" {
		return opts.MasterKey
	}
	return MasterKeyPath(path)
}

// MigrateMasterKey is the master key file every etcd node needs after
// Migrate from src: it reports whether it exists (a database whose secret
// was never generated has none yet).
func MigrateMasterKey(src string, opts Options) (path string, exists bool) {
	path = masterKeyFor(src, opts)
	_, err := os.Lstat(path)
	return path, err == nil
}
