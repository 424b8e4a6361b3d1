package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/keyward/keyward/model"
	bolt "go.etcd.io/bbolt"
)

// PeekResult is the first page of keys in name order and the key count.
type PeekResult struct {
	Keys  []*model.Key
	Total int
	// Operators are every operator: a key's displayed status depends on
	// its creator's account (model.StatusOf).
	Operators []model.Operator
}

// Peek reads the first n keys in name order (the order of foldName, which
// is the TUI's for ASCII names) and the key count, without opening the
// store: it costs O(n), not O(keys), so the TUI can paint its first page
// while Open loads everything in the background.
//
// The file is opened read-only with a shared lock, waiting at most
// opts.Timeout (default 1s) for a writer to let go; a writer that keeps it
// gives the *LockedError Open gives. Peek writes nothing: no file is
// created, no lock file written, nothing migrated. It refuses what Open
// refuses (a directory, a device, a damaged, foreign or newer file); a
// schema 1 or empty file gives ErrNoIndex.
//
// Each key is decoded as Open loads it, last-used time and source included.
// Only opts.Timeout is used.
func Peek(path string, n int, opts Options) (PeekResult, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	fi, err := lstatDB(path)
	if errors.Is(err, ErrUnsafeFile) {
		return PeekResult{}, err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return PeekResult{}, fmt.Errorf("no keyward database at %s: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return PeekResult{}, fmt.Errorf("opening database %s: %w", path, err)
	}
	if err := checkFile(path, fi); err != nil {
		return PeekResult{}, err
	}
	if fi.Size() == 0 {
		// bbolt would try to initialise it: leave that to Open.
		return PeekResult{}, fmt.Errorf("%s: %w (the file is empty)", path, ErrNoIndex)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: opts.Timeout, OpenFile: dbOpenFile})
	if err != nil {
		return PeekResult{}, openError(path, err)
	}
	defer db.Close()
	var res PeekResult
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		res, err = peekTx(tx, path, n)
		return err
	})
	if err != nil {
		return PeekResult{}, err
	}
	return res, nil
}

// peekTx is Peek's read, in tx.
func peekTx(tx *bolt.Tx, path string, n int) (PeekResult, error) {
	var res PeekResult
	version, fresh, err := readSchema(tx, path)
	if err != nil {
		return res, err
	}
	if fresh {
		return res, fmt.Errorf("%s: %w", path, ErrNoIndex)
	}
	// The buckets first: a file that is not a keyward database must be
	// refused as one, not told to open it once to add an index.
	required := allBuckets
	if version < schemaNamesIndex {
		required = v1Buckets
	}
	if err := checkBuckets(tx, path, required); err != nil {
		return res, err
	}
	if version < schemaNamesIndex {
		return res, fmt.Errorf("%s: %w", path, ErrNoIndex)
	}
	if res.Total, err = readKeyCount(tx.Bucket(bMeta)); err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	if res.Keys, err = peekKeys(tx, path, n, min(n, res.Total)); err != nil {
		return res, err
	}
	err = tx.Bucket(bOperators).ForEach(func(k, v []byte) error {
		var op model.Operator
		if err := json.Unmarshal(v, &op); err != nil {
			return fmt.Errorf("%s: operator %q: %w", path, model.Sanitize(string(k)), err)
		}
		res.Operators = append(res.Operators, op)
		return nil
	})
	return res, err
}

// peekKeys decodes the first n keys in name order, with their last use;
// room is how many it expects.
func peekKeys(tx *bolt.Tx, path string, n, room int) ([]*model.Key, error) {
	kb, lb := tx.Bucket(bKeys), tx.Bucket(bLastUsed)
	intern := map[string]string{}
	keys := make([]*model.Key, 0, max(0, room))
	c := tx.Bucket(bNames).Cursor()
	for k, id := c.First(); k != nil && len(keys) < n; k, id = c.Next() {
		rec := kb.Get(id)
		if rec == nil {
			return nil, fmt.Errorf("%s: %w (the name index names key %q, which does not exist)", path, ErrDamaged, model.Sanitize(string(id)))
		}
		key, err := decodeKey(rec, intern)
		if err != nil {
			return nil, fmt.Errorf("%s: key %q: %w", path, model.Sanitize(string(id)), err)
		}
		// As the loader: a record too short to decode is ignored.
		if lv := lb.Get(id); lv != nil {
			if at, from, err := decodeLastUsed(lv); err == nil {
				t := time.Unix(0, at).UTC()
				key.LastUsedAt, key.LastUsedFrom = &t, from
			}
		}
		keys = append(keys, key)
	}
	return keys, nil
}
