package store_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// rawIndex is what the file holds besides the keys: the names bucket (nil
// when missing), the key count (-1 when missing) and the schema.
type rawIndex struct {
	names  map[string]string
	count  int
	schema string
}

// readRaw reads path's index with bbolt itself. The store must be closed.
func readRaw(t *testing.T, path string) rawIndex {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := rawIndex{count: -1}
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		r.schema = string(meta.Get([]byte("schema")))
		if v := meta.Get([]byte("key_count")); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("key_count is %d bytes", len(v))
			}
			r.count = int(binary.BigEndian.Uint64(v))
		}
		if nb := tx.Bucket([]byte("names")); nb != nil {
			r.names = map[string]string{}
			return nb.ForEach(func(k, v []byte) error { r.names[string(k)] = string(v); return nil })
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantNames is the names bucket the keys call for.
func wantNames(keys []*model.Key) map[string]string {
	m := map[string]string{}
	for _, k := range keys {
		m[strings.ToLower(strings.TrimSpace(k.Name))] = k.ID
	}
	return m
}

// checkIndex closes e's store, checks that the file's names bucket and key
// count match the keys the store had, and opens it again. On etcd, which
// keeps no count and whose name index is the backend's own layout, it
// checks what a fresh load of the prefix gives: the same keys, each name
// resolving to its key.
func (e *env) checkIndex(t *testing.T) {
	t.Helper()
	keys := e.s.Keys()
	if e.backend == "etcd" {
		e.reopen()
		got := map[string]string{}
		for _, k := range e.s.Keys() {
			if id, ok := e.s.KeyIDByName(k.Name); !ok || id != k.ID {
				t.Fatalf("after a reload, KeyIDByName(%q) = %q %v, want %s", k.Name, id, ok, k.ID)
			}
			got[strings.ToLower(strings.TrimSpace(k.Name))] = k.ID
		}
		if e.s.KeyCount() != len(keys) || !reflect.DeepEqual(got, wantNames(keys)) {
			t.Fatalf("after a reload: %d keys, names %v; before: %d keys, names %v", e.s.KeyCount(), got, len(keys), wantNames(keys))
		}
		return
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	r := readRaw(t, e.path)
	if r.schema != fmt.Sprint(store.SchemaVersion) || r.count != len(keys) || !reflect.DeepEqual(r.names, wantNames(keys)) {
		t.Fatalf("file: schema %q, key_count %d, names %v; want schema %d, %d keys, names %v",
			r.schema, r.count, r.names, store.SchemaVersion, len(keys), wantNames(keys))
	}
	e.open()
}

// downgrade turns a closed schema 2 file into the schema 1 file an older
// keyward wrote: no names bucket, no key count.
func downgrade(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("names")); err != nil {
			return err
		}
		meta := tx.Bucket([]byte("meta"))
		if err := meta.Delete([]byte("key_count")); err != nil {
			return err
		}
		return meta.Put([]byte("schema"), []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateV1(t *testing.T) {
	t.Parallel()
	e := newBoltEnv(t) // the file itself
	alpha, _ := e.create(spec("Alpha"))
	e.create(spec("beta"))
	gone, _ := e.create(spec("gone"))
	var specs []model.KeySpec
	for i := range 300 {
		specs = append(specs, spec(fmt.Sprintf("Imported-%03d", i)))
	}
	if _, _, err := e.s.ImportKeys("admin", specs); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.EditKey("admin", alpha.ID, alpha.Version, spec("Alpha Renamed")); err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteKey("admin", gone.ID); err != nil {
		t.Fatal(err)
	}
	keys := e.s.Keys()
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	downgrade(t, e.path)
	if r := readRaw(t, e.path); r.names != nil || r.count != -1 || r.schema != "1" {
		t.Fatalf("downgrade left %+v", r)
	}
	_, err := store.Peek(e.path, 10, store.Options{})
	isErr(t, err, store.ErrNoIndex)

	e.open() // migrates
	if err := e.s.Check(); err != nil {
		t.Fatalf("tx.Check after the migration: %v", err)
	}
	if len(e.s.Keys()) != len(keys) {
		t.Fatalf("%d keys after the migration, want %d", len(e.s.Keys()), len(keys))
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	r := readRaw(t, e.path)
	if r.schema != "2" || r.count != len(keys) || !reflect.DeepEqual(r.names, wantNames(keys)) {
		t.Fatalf("after the migration: schema %q, key_count %d (want %d), names match %v",
			r.schema, r.count, len(keys), reflect.DeepEqual(r.names, wantNames(keys)))
	}
	e.open()
	// Uniqueness holds for names from before the migration, and the freed
	// ones are free.
	for _, name := range []string{"alpha renamed", "BETA", " imported-007 "} {
		_, _, err := e.s.CreateKey("admin", spec(name))
		isErr(t, err, store.ErrNameTaken)
	}
	if id, ok := e.s.KeyIDByName("ALPHA RENAMED"); !ok || id != alpha.ID {
		t.Fatalf("KeyIDByName after the migration: %q %v", id, ok)
	}
	e.create(spec("alpha"))
	e.create(spec("gone"))
	e.checkIndex(t)
	if err := e.s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestReadOnlyV1 opens a schema 1 file that cannot be written: it is not
// migrated, lists its keys, and KeyIDByName still answers.
func TestReadOnlyV1(t *testing.T) {
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skipf("chattr is not installed: %v", err)
	}
	e := newBoltEnv(t) // the file itself
	k, _ := e.create(spec("Only-One"))
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	downgrade(t, e.path)
	if out, err := exec.Command("chattr", "+i", e.path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i is not permitted here: %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", e.path).Run() })
	before := readFile(t, e.path)
	e.open()
	if !e.s.ReadOnly() || e.s.KeyCount() != 1 {
		t.Fatalf("read-only %v, %d keys", e.s.ReadOnly(), e.s.KeyCount())
	}
	if id, ok := e.s.KeyIDByName("only-one"); !ok || id != k.ID {
		t.Fatalf("KeyIDByName on a read-only schema 1 file: %q %v", id, ok)
	}
	if _, ok := e.s.KeyIDByName("other"); ok {
		t.Fatal("KeyIDByName found a name no key has")
	}
	_, _, err := e.s.CreateKey("admin", spec("new"))
	isErr(t, err, store.ErrReadOnly)
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	if !bytes.Equal(before, readFile(t, e.path)) {
		t.Fatal("the read-only file changed")
	}
}

func TestNameIndexUniqueness(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	one, _ := e.create(spec("one"))
	// A rename frees the old name and takes the new one.
	if _, err := e.s.EditKey("admin", one.ID, one.Version, spec("Two")); err != nil {
		t.Fatal(err)
	}
	e.create(spec("ONE"))
	_, _, err := e.s.CreateKey("admin", spec(" two "))
	isErr(t, err, store.ErrNameTaken)
	// A rename onto a taken name is refused; a change of case is not.
	cur, _ := e.s.Key(one.ID)
	_, err = e.s.EditKey("admin", one.ID, cur.Version, spec("one"))
	isErr(t, err, store.ErrNameTaken)
	if cur, err = e.s.EditKey("admin", one.ID, cur.Version, spec("TWO")); err != nil {
		t.Fatalf("changing the case of a key's own name: %v", err)
	}
	if id, ok := e.s.KeyIDByName("two"); !ok || id != one.ID {
		t.Fatalf("KeyIDByName(two) = %q %v, want %s", id, ok, one.ID)
	}
	e.checkIndex(t)
	// Delete, then reuse.
	if err := e.s.DeleteKey("admin", one.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.s.KeyIDByName("two"); ok {
		t.Fatal("a deleted key's name is still taken")
	}
	e.create(spec("two"))
	// An import with a taken name writes nothing.
	n := e.s.KeyCount()
	_, _, err = e.s.ImportKeys("admin", []model.KeySpec{spec("fresh-1"), spec("Two"), spec("fresh-2")})
	isErr(t, err, store.ErrNameTaken)
	// (bbolt says its position; etcd, which checks names in each
	// batch's commit rather than one read per key, the name.)
	if !strings.Contains(err.Error(), "key 2") && !strings.Contains(err.Error(), `name "Two"`) {
		t.Fatalf("import error %q does not say which key", err)
	}
	// So does one naming a key twice.
	if _, _, err = e.s.ImportKeys("admin", []model.KeySpec{spec("fresh-1"), spec("FRESH-1")}); err == nil {
		t.Fatal("an import repeating a name succeeded")
	}
	_, err = e.s.SeedKeys("admin", []store.SeedKey{{Spec: spec("fresh-3")}, {Spec: spec("one")}})
	isErr(t, err, store.ErrNameTaken)
	if e.s.KeyCount() != n {
		t.Fatalf("%d keys after refused imports, want %d", e.s.KeyCount(), n)
	}
	if _, ok := e.s.KeyIDByName("fresh-1"); ok {
		t.Fatal("a refused import left a name behind")
	}
	e.checkIndex(t)
}

func TestKeyCountFollowsWrites(t *testing.T) {
	t.Parallel()
	e := newBoltEnv(t) // the file itself
	total := func() int {
		t.Helper()
		keys := e.s.Keys()
		if err := e.s.Close(); err != nil {
			t.Fatal(err)
		}
		e.s = nil
		n := readRaw(t, e.path).count
		res, err := store.Peek(e.path, 0, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if n != len(keys) || res.Total != n || len(res.Keys) != 0 {
			t.Fatalf("key_count %d, Peek: total %d, %d keys; the store had %d keys", n, res.Total, len(res.Keys), len(keys))
		}
		e.open()
		return n
	}
	if n := total(); n != 0 {
		t.Fatalf("new database: %d keys", n)
	}
	k, _ := e.create(spec("a"))
	if n := total(); n != 1 {
		t.Fatalf("after a create: %d", n)
	}
	if _, _, err := e.s.ImportKeys("admin", []model.KeySpec{spec("b"), spec("c"), spec("d")}); err != nil {
		t.Fatal(err)
	}
	if n := total(); n != 4 {
		t.Fatalf("after an import of 3: %d", n)
	}
	if _, err := e.s.SeedKeys("admin", []store.SeedKey{{Spec: spec("e")}, {Spec: spec("f")}}); err != nil {
		t.Fatal(err)
	}
	if n := total(); n != 6 {
		t.Fatalf("after a seed of 2: %d", n)
	}
	if err := e.s.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	// Writes that neither add nor remove keys leave it alone.
	if _, err := e.s.SetKeyActive("admin", e.seededID("e"), false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.s.RegenerateKey("admin", e.seededID("f"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := total(); n != 5 {
		t.Fatalf("after a delete: %d", n)
	}
	e.checkIndex(t)
}

// peekEnv is a database of keys whose names sort in a known order, some
// used (with last-used records on disk), loaded by a fresh Open; it
// returns the keys as that Open's Key(id) gives them, in name order, and
// leaves the store closed.
func peekEnv(t *testing.T) (*env, []*model.Key) {
	t.Helper()
	e := newBoltEnv(t) // Peek reads a bbolt file
	var toks []string
	for _, name := range []string{"delta", "Bravo", "alpha", "Charlie-2", "charlie", "echo", "ÄRGER", "zulu"} {
		_, tok := e.create(spec(name))
		toks = append(toks, tok)
	}
	e.s.Verify(toks[1], "coupons:read", "", "10.1.2.3")
	e.clock.Advance(time.Minute)
	e.s.Verify(toks[5], "coupons:read", "", "")
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	var keys []*model.Key
	for _, k := range e.s.Keys() {
		got, err := e.s.Key(k.ID)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, got)
	}
	sort.Slice(keys, func(i, j int) bool {
		return strings.ToLower(keys[i].Name) < strings.ToLower(keys[j].Name)
	})
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	return e, keys
}

func TestPeek(t *testing.T) {
	t.Parallel()
	e, want := peekEnv(t)
	used := 0
	for _, k := range want {
		if k.LastUsedAt != nil {
			used++
		}
	}
	if used != 2 {
		t.Fatalf("%d keys used, want 2", used)
	}
	for _, n := range []int{0, 1, 3, len(want), len(want) + 5, 1000} {
		res, err := store.Peek(e.path, n, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != len(want) {
			t.Fatalf("n=%d: total %d, want %d", n, res.Total, len(want))
		}
		w := want[:min(n, len(want))]
		if len(res.Keys) != len(w) {
			t.Fatalf("n=%d: %d keys, want %d", n, len(res.Keys), len(w))
		}
		for i := range w {
			if !reflect.DeepEqual(res.Keys[i], w[i]) {
				t.Fatalf("n=%d, key %d:\n got %+v\nwant %+v", n, i, res.Keys[i], w[i])
			}
		}
	}
}

func TestPeekEmptyDatabase(t *testing.T) {
	t.Parallel()
	e := newBoltEnv(t) // the file itself
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
	res, err := store.Peek(e.path, 200, store.Options{})
	if err != nil || res.Total != 0 || len(res.Keys) != 0 {
		t.Fatalf("Peek of an empty database: %+v, %v", res, err)
	}
}

// TestPeekWritesNothing: the file's bytes and mtime stay, no lock file is
// left, and a missing path is refused without being created.
func TestPeekWritesNothing(t *testing.T) {
	t.Parallel()
	e, _ := peekEnv(t)
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(e.path, old, old); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, e.path)
	if _, err := store.Peek(e.path, 3, store.Options{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, readFile(t, e.path)) || !fi.ModTime().Equal(old) {
		t.Fatalf("Peek changed the file (mtime %v, was %v)", fi.ModTime(), old)
	}
	if _, err := os.Stat(e.path + ".lock"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Peek left a lock file: %v", err)
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, "sub", "keyward.db")
	_, err = store.Peek(missing, 10, store.Options{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Peek of a missing file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("Peek of a missing file created %v", entries)
	}
	empty := filepath.Join(dir, "empty.db")
	writeFile(t, empty, nil)
	_, err = store.Peek(empty, 10, store.Options{})
	isErr(t, err, store.ErrNoIndex)
	if fi, _ := os.Stat(empty); fi.Size() != 0 {
		t.Fatal("Peek wrote into an empty file")
	}
}

// TestPeekRefuses: what Open refuses, Peek refuses too.
func TestPeekRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := refusedFiles(t, dir)
	truncated := filepath.Join(dir, "truncated.db")
	e, _ := peekEnv(t)
	b := readFile(t, e.path)
	writeFile(t, truncated, b[:2*os.Getpagesize()]) // both meta pages, no data
	cases = append(cases, refusedFile{truncated, store.ErrDamaged})
	for _, c := range cases {
		_, err := store.Peek(c.path, 10, store.Options{})
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %v, want %v naming the file", filepath.Base(c.path), err, c.want)
		}
	}
	if _, err := store.Peek(dir, 10, store.Options{}); err == nil {
		t.Error("Peek of a directory succeeded")
	}
}

// TestPeekLocked: while a store holds the file, Peek gives up after its
// timeout with the *LockedError Open gives, naming the holder.
func TestPeekLocked(t *testing.T) {
	t.Parallel()
	e := newBoltEnv(t) // the file itself
	e.create(spec("a"))
	start := time.Now()
	_, err := store.Peek(e.path, 10, store.Options{Timeout: 200 * time.Millisecond})
	var le *store.LockedError
	if !errors.As(err, &le) || !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Peek of a held file: %T %v", err, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Peek took %v", d)
	}
	if le.Holder == nil || le.Holder.PID != os.Getpid() {
		t.Fatalf("holder %+v, want this process", le.Holder)
	}
}
