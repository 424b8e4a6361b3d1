package store

import (
	"context"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// OpenForTest opens the stores of the internal tests on the run's backend.
// The external tests' backends_test.go sets it in the etcd run
// (KEYWARD_TEST_BACKEND=etcd): it returns an opener bound to a fresh
// prefix of the suite's etcd cluster, so a test that closes and opens
// again gets its own data back. Unset (the bbolt run), testOpener opens
// the bbolt file at path.
var OpenForTest func(t testing.TB, path string) func(Options) (*Store, error)

// testOpener is how an internal test opens (and reopens) its store: the
// file at path, or in the etcd run one etcd prefix of its own.
func testOpener(t testing.TB, path string) func(Options) (*Store, error) {
	if OpenForTest != nil {
		return OpenForTest(t, path)
	}
	return func(o Options) (*Store, error) { return Open(path, o) }
}

// lastUsedRecord is id's last-used record as stored, read from the
// backend itself (the bbolt bucket, or etcd's lu/ key): there even for a
// key that no longer exists, which Backend.Key would not show. nil: none.
func lastUsedRecord(t testing.TB, s *Store, id string) []byte {
	t.Helper()
	switch b := s.be.(type) {
	case *boltBackend:
		var v []byte
		if err := b.db.View(func(tx *bolt.Tx) error {
			v = append([]byte(nil), tx.Bucket(bLastUsed).Get([]byte(id))...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(v) == 0 {
			return nil
		}
		return v
	case *etcdBackend:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := b.cli.Get(ctx, b.luKey(id))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		// Every key on etcd has a record from its create on, time zero
		// until it is used (so that the max-merge never writes one for a
		// deleted key): zero is "none".
		if at, _, err := decodeLastUsed(resp.Kvs[0].Value); err == nil && at == 0 {
			return nil
		}
		return resp.Kvs[0].Value
	default:
		t.Fatalf("lastUsedRecord: backend %T", s.be)
		return nil
	}
}
