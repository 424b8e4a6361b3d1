package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// refEntry is what the sequential load knows of one key.
type refEntry struct {
	key     *model.Key
	lastAt  int64
	cur     [32]byte
	prev    [32]byte
	hasPrev bool
}

// loadKeysReference is the sequential load that loadKeys replaced: one
// walk of the keys bucket (with the last-used bucket beside it) and one of
// the hash bucket. loadKeys must give the same state; the hash index is
// returned as a plain map of every hash to its key.
func loadKeysReference(tx *bolt.Tx) (map[string]*refEntry, map[string]time.Time, map[[32]byte]hashRef, error) {
	intern := map[string]string{}
	keys, graces := map[string]*refEntry{}, map[string]time.Time{}
	lc := tx.Bucket(bLastUsed).Cursor()
	lk, lv := lc.First()
	err := tx.Bucket(bKeys).ForEach(func(k, v []byte) error {
		key, err := decodeKey(v, intern)
		if err != nil {
			return fmt.Errorf("key %q: %w", model.Sanitize(string(k)), err)
		}
		e := &refEntry{key: key}
		for lk != nil && bytes.Compare(lk, k) < 0 {
			lk, lv = lc.Next()
		}
		if lk != nil && bytes.Equal(lk, k) {
			at, from, err := decodeLastUsed(lv)
			if err == nil {
				t := time.Unix(0, at).UTC()
				key.LastUsedAt, key.LastUsedFrom = &t, from
				e.lastAt = at
			}
		}
		keys[key.ID] = e
		if key.GraceUntil != nil {
			graces[key.ID] = *key.GraceUntil
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	hashes := map[[32]byte]hashRef{}
	return keys, graces, hashes, tx.Bucket(bHashes).ForEach(func(k, v []byte) error {
		ref, err := decodeHashRef(v)
		if err != nil || len(k) != 32 {
			return fmt.Errorf("hash index: %w", errCorruptRecord)
		}
		h := [32]byte(k)
		if e := keys[ref.id]; e != nil {
			hashes[h] = ref
			if ref.previous {
				e.prev, e.hasPrev = h, true
			} else {
				e.cur = h
			}
		}
		return nil
	})
}

func testKey(i int, base time.Time) *model.Key {
	k := &model.Key{
		ID: fmt.Sprintf("k%07d", i), Name: fmt.Sprintf("Svc-%d ", i), Description: "d",
		Role: model.RoleEditor, Status: model.StatusActive, CreatedAt: base.Add(time.Duration(i) * time.Second),
		CreatedBy: "admin", UpdatedAt: base.Add(time.Duration(i) * time.Minute), Hint: "abcd", Version: uint64(i),
	}
	switch i % 5 {
	case 0:
		k.Description, k.Hint = "", "" // empty unshared strings
	case 1:
		k.Scopes, k.Resources = []string{"coupons:read", "coupons:write"}, []string{"web-shop"}
		exp := base.Add(time.Hour)
		k.ExpiresAt = &exp
	case 2:
		g := base.Add(time.Duration(i) * time.Millisecond)
		k.GraceUntil, k.Status = &g, model.StatusDisabled
	case 3:
		k.Name = fmt.Sprintf("svc-%d", i-1) // folds like key i-1's name (written raw: the store refuses that)
		k.Scopes = []string{"x"}
	}
	return k
}

// TestLoadKeysMatchesSequential compares loadKeys with the sequential
// load on a database of several batches with last-used records (some
// corrupt), grace periods, previous hashes and orphan hashes. The hashes
// share 8-byte prefixes by the hundred ("hash-123" begins hash-1230 to
// hash-12399 too), so most go to the hash index's overflow; hashes sharing
// a stored prefix but not stored are refused.
func TestLoadKeysMatchesSequential(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	s, err := Open(path, Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	const n = 3*loadBatchSize + 17
	err = s.boltDB().Update(func(tx *bolt.Tx) error {
		kb, hb, lb := tx.Bucket(bKeys), tx.Bucket(bHashes), tx.Bucket(bLastUsed)
		for i := range n {
			k := testKey(i, base)
			if err := kb.Put([]byte(k.ID), encodeKey(k)); err != nil {
				return err
			}
			var h [32]byte
			copy(h[:], fmt.Sprintf("hash-%d", i))
			_ = hb.Put(h[:], encodeHashRef(hashRef{id: k.ID}))
			if i%7 == 0 {
				copy(h[:], fmt.Sprintf("prev-%d", i))
				_ = hb.Put(h[:], encodeHashRef(hashRef{id: k.ID, previous: true}))
			}
			switch i % 3 {
			case 0:
				_ = lb.Put([]byte(k.ID), encodeLastUsed(base.Add(time.Duration(i)).UnixNano(), fmt.Sprintf("10.0.0.%d", i%50)))
			case 1:
				if i%11 == 0 {
					_ = lb.Put([]byte(k.ID), []byte("short")) // corrupt: ignored
				}
			}
		}
		var h [32]byte
		copy(h[:], "orphan")
		_ = hb.Put(h[:], encodeHashRef(hashRef{id: "gone"}))
		_ = lb.Put([]byte("a-orphan"), encodeLastUsed(1, "x"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, lean := range []bool{false, true} {
		got, err := Open(path, Options{FlushInterval: time.Hour, Lean: lean})
		if err != nil {
			t.Fatal(err)
		}
		compareWithReference(t, got, n)
		if err := got.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// compareWithReference checks got's memory against the sequential load
// of its file, which holds n keys.
func compareWithReference(t *testing.T, got *Store, n int) {
	t.Helper()
	var want map[string]*refEntry
	var wantGraces map[string]time.Time
	var wantHashes map[[32]byte]hashRef
	err := got.boltDB().View(func(tx *bolt.Tx) (err error) {
		want, wantGraces, wantHashes, err = loadKeysReference(tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.KeyCount() != n || len(want) != n || len(got.Keys()) != n {
		t.Fatalf("lean %v: %d keys loaded (Keys %d), reference %d, want %d", got.opts.Lean, got.KeyCount(), len(got.Keys()), len(want), n)
	}
	for id, we := range want {
		i, ok := got.slots.lookup(id)
		if !ok {
			t.Fatalf("%s missing", id)
		}
		if k, err := got.Key(id); err != nil || !reflect.DeepEqual(k, we.key) {
			t.Fatalf("%s: got %+v (%v), want %+v", id, k, err, we.key)
		}
		ge := got.slots.at(i)
		if ge.lastAt.Load() != we.lastAt || ge.cur != we.cur || ge.hasPrev != we.hasPrev || ge.prev != we.prev ||
			ge.dirty.Load() || got.slots.from(i).Load() != nil || got.slots.idOf(i) != id {
			t.Fatalf("%s: entry differs", id)
		}
		checkFacts(t, got, i, we.key)
	}
	if !reflect.DeepEqual(got.graces, wantGraces) || got.hashes.len() != len(wantHashes) {
		t.Fatalf("graces %d/%d, hashes %d/%d", len(got.graces), len(wantGraces), got.hashes.len(), len(wantHashes))
	}
	if len(got.hashes.overflow) < n/2 {
		t.Fatalf("%d hashes in the overflow: the test no longer collides prefixes", len(got.hashes.overflow))
	}
	for h, ref := range wantHashes {
		i, previous, ok := got.hashes.lookup(&h, &got.slots)
		if !ok || previous != ref.previous || got.slots.idOf(i) != ref.id {
			t.Fatalf("hash %q differs", h)
		}
	}
	for _, unknown := range []string{"hash-1230x", "hash-99999", "prev-7001", "orphan"} {
		var h [32]byte
		copy(h[:], unknown)
		if i, _, ok := got.hashes.lookup(&h, &got.slots); ok {
			t.Fatalf("unknown hash %q found key %s", unknown, got.slots.idOf(i))
		}
	}
}

// TestDecodeKeyIntoMatchesDecodeKey: same key, or the same error, for
// every record and every truncation of it.
func TestDecodeKeyIntoMatchesDecodeKey(t *testing.T) {
	base := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	var scratch []byte
	var a loadAlloc
	for i := range 10 {
		rec := encodeKey(testKey(i, base))
		for cut := 0; cut <= len(rec); cut++ {
			b := rec[:cut]
			want, werr := decodeKey(b, map[string]string{})
			var got model.Key
			gerr := decodeKeyInto(&got, b, map[string]string{}, &scratch, &a)
			if !errors.Is(gerr, werr) || (werr == nil) != (gerr == nil) {
				t.Fatalf("key %d cut %d: error %v, want %v", i, cut, gerr, werr)
			}
			if werr == nil && !reflect.DeepEqual(&got, want) {
				t.Fatalf("key %d cut %d: got %+v, want %+v", i, cut, got, *want)
			}
		}
	}
	// A failing record in a later batch is reported as a sequential load does.
	path := filepath.Join(t.TempDir(), "bad.db")
	s, err := Open(path, Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.boltDB().Update(func(tx *bolt.Tx) error {
		kb := tx.Bucket(bKeys)
		for i := range loadBatchSize + 10 {
			k := testKey(i, base)
			_ = kb.Put([]byte(k.ID), encodeKey(k))
		}
		_ = kb.Put([]byte("k0004200"), []byte{keyCodecV1, 200})
		return kb.Put([]byte("k0004201"), []byte{9})
	})
	_ = s.Close()
	_, err = Open(path, Options{FlushInterval: time.Hour})
	if err == nil || !errors.Is(err, errCorruptRecord) || !bytes.Contains([]byte(err.Error()), []byte(`key "k0004200"`)) {
		t.Fatalf("open: %v", err)
	}
}

// TestPauseGCRestores: overlapping pauses restore the percentage found by
// the first, and opening stores concurrently leaves it as it was.
func TestPauseGCRestores(t *testing.T) {
	orig := debug.SetGCPercent(137)
	defer debug.SetGCPercent(orig)
	r1 := pauseGC()
	r2 := pauseGC()
	r1()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("after the first of two resumes: GC percent %d, want -1 (still paused)", got)
	}
	r2()
	if got := debug.SetGCPercent(137); got != 137 {
		t.Fatalf("after both resumes: GC percent %d, want 137", got)
	}
	dir := t.TempDir()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			s, err := Open(filepath.Join(dir, fmt.Sprintf("%d.db", i)), Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true})
			if err != nil {
				t.Error(err)
				return
			}
			_ = s.Close()
		})
	}
	wg.Wait()
	if got := debug.SetGCPercent(137); got != 137 {
		t.Fatalf("after concurrent opens: GC percent %d, want 137", got)
	}
}
