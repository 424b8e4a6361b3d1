package store

import (
	"bytes"
	"context"

	"github.com/keyward/keyward/model"
	bolt "go.etcd.io/bbolt"
)

// Key reads key id with its last use.
func (b *boltBackend) Key(_ context.Context, id string) (*model.Key, Rev, error) {
	var k *model.Key
	var rev Rev
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		rev = Rev(tx.ID())
		k, err = readKey(tx, id)
		return err
	})
	return k, rev, err
}

// Shared is false: one process owns the file (its flock), so commits
// update memory directly.
func (b *boltBackend) Shared() bool { return false }

// Keys decodes every key in id order (see readAllKeys).
func (b *boltBackend) Keys(_ context.Context, fn func(k *model.Key)) (Rev, error) {
	var rev Rev
	err := b.db.View(func(tx *bolt.Tx) error {
		rev = Rev(tx.ID())
		return readAllKeys(tx, fn)
	})
	return rev, err
}

// Similar reads the id and name indexes from prefix on: a few page reads
// whatever the key count.
func (b *boltBackend) Similar(_ context.Context, prefix string, n int) ([]*model.Key, error) {
	var out []*model.Key
	seen := map[string]bool{}
	err := b.db.View(func(tx *bolt.Tx) error {
		add := func(id []byte) {
			if len(out) >= n || seen[string(id)] {
				return
			}
			seen[string(id)] = true
			if k, err := readKey(tx, string(id)); err == nil {
				out = append(out, k)
			}
		}
		p := []byte(prefix)
		c := tx.Bucket(bKeys).Cursor()
		for id, _ := c.Seek(p); id != nil && bytes.HasPrefix(id, p) && len(out) < n; id, _ = c.Next() {
			add(id)
		}
		if nb := tx.Bucket(bNames); b.indexed && nb != nil {
			p = []byte(foldName(prefix))
			c = nb.Cursor()
			for name, id := c.Seek(p); name != nil && bytes.HasPrefix(name, p) && len(out) < n; name, id = c.Next() {
				add(id)
			}
		}
		return nil
	})
	return out, err
}

// NameOwner reads the names bucket. A read-only schema 1 file has none
// (it could not be migrated): every key is read instead; that file
// refuses every save anyway.
func (b *boltBackend) NameOwner(_ context.Context, name string) (string, bool, error) {
	var id string
	var ok bool
	err := b.db.View(func(tx *bolt.Tx) error {
		if b.indexed {
			id, ok = nameOwner(tx, name)
			return nil
		}
		f := foldName(name)
		return readAllKeys(tx, func(k *model.Key) {
			if id == "" && foldName(k.Name) == f {
				id, ok = k.ID, true
			}
		})
	})
	return id, ok, err
}

// Meta reads a metadata record (nil if there is none).
func (b *boltBackend) Meta(_ context.Context, name MetaName) ([]byte, error) {
	var v []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bMeta).Get(metaKeys[name]))
		return nil
	})
	return v, err
}
