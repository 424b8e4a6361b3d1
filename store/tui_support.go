package store

import bolt "go.etcd.io/bbolt"

// KeyIDByName returns the id of the live key using name (compared the way
// names are kept unique: trimmed, case-insensitive). The TUI form uses it
// to flag a taken name inline, before the admin reaches the save button.
//
// It reads the names bucket. A read-only schema 1 file has none (it could
// not be migrated): the loaded keys are scanned instead; that file refuses
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

// scanName finds the key whose name folds like name among the loaded keys.
func (s *Store) scanName(name string) (string, bool) {
	f := foldName(name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for id, e := range s.keys {
		if foldName(e.key.Load().Name) == f {
			return id, true
		}
	}
	return "", false
}
