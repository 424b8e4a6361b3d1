package store

import bolt "go.etcd.io/bbolt"

// boltDB is the bbolt file under s, for tests that read or damage it.
func (s *Store) boltDB() *bolt.DB { return s.be.(*boltBackend).db }
