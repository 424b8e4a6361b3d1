package store

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// TestMigrateNamesThatFoldAlike: schema 1 kept names unique only in memory,
// so a file may hold two keys whose names fold alike. The migration indexes
// the one with the greater id (as the old loader's map did), and deleting
// the other leaves that entry in place.
func TestMigrateNamesThatFoldAlike(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	s, err := Open(path, Options{Bootstrap: "admin", FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	first, second, other := testKey(1, base), testKey(2, base), testKey(4, base)
	first.Name, second.Name = "Dup", " dup"
	err = s.boltDB().Update(func(tx *bolt.Tx) error {
		for _, k := range []*model.Key{first, second, other} {
			if err := tx.Bucket(bKeys).Put([]byte(k.ID), encodeKey(k)); err != nil {
				return err
			}
		}
		if err := tx.DeleteBucket(bNames); err != nil {
			return err
		}
		meta := tx.Bucket(bMeta)
		if err := meta.Delete(kKeyCount); err != nil {
			return err
		}
		return meta.Put(kSchema, []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, Options{FlushInterval: time.Hour}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if id, ok := s.KeyIDByName("DUP"); !ok || id != second.ID {
		t.Fatalf("after the migration, dup names %q %v; want %s (the greater id)", id, ok, second.ID)
	}
	if err := s.DeleteKey("admin", first.ID); err != nil {
		t.Fatal(err)
	}
	if id, ok := s.KeyIDByName("dup"); !ok || id != second.ID {
		t.Fatalf("after deleting %s, dup names %q %v; want %s", first.ID, id, ok, second.ID)
	}
	err = s.boltDB().View(func(tx *bolt.Tx) error {
		n, err := readKeyCount(tx.Bucket(bMeta))
		if err == nil && n != 2 {
			t.Errorf("key count %d, want 2", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
