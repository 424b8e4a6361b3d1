package store

import (
	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// KeyIDByName returns the id of the live key using name (compared the way
// names are kept unique: trimmed, case-insensitive). The TUI form uses it
// to flag a taken name inline, before the admin reaches the save button.
//
// It reads the names bucket. A read-only schema 1 file has none (it could
// not be migrated): every key is read instead; that file refuses
// every save anyway.
func (s *Store) KeyIDByName(name string) (string, bool) {
	if !s.indexed {
		return s.scanName(name)
	}
	var id string
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		id, ok = nameOwner(tx, name)
		return nil
	})
	return id, ok
}

// scanName finds the key whose name folds like name, reading every key.
func (s *Store) scanName(name string) (string, bool) {
	f := foldName(name)
	var id string
	_ = s.db.View(func(tx *bolt.Tx) error {
		return readAllKeys(tx, func(k *model.Key) {
			if id == "" && foldName(k.Name) == f {
				id = k.ID
			}
		})
	})
	return id, id != ""
}
