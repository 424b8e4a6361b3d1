package store

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// TestHashPrefixCollisions runs creates, regenerations with and without
// grace, grace expiry, deletes, seeding and a reload with every hash
// sharing one prefix (the collideHashes hook), so all but one stored hash
// live in the hash index's overflow. Every token must verify as it would
// without collisions, and an unknown token (its prefix collides with every
// stored hash) is NOT_FOUND.
func TestHashPrefixCollisions(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC).UnixNano())
	opts := Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true, collideHashes: true,
		Now: func() time.Time { return time.Unix(0, clock.Load()).UTC() }}
	open := testOpener(t, filepath.Join(t.TempDir(), "c.db"))
	s, err := open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	admin := func(name string) model.KeySpec {
		return model.KeySpec{Name: name, Role: model.RoleAdmin, Active: true}
	}
	stranger, err := model.GenerateToken(s.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]model.Code{stranger.String(): model.CodeNotFound}
	check := func(when string) {
		t.Helper()
		for tok, code := range want {
			if got := s.Verify(tok, "", "", "test").Code; got != code {
				t.Fatalf("%s: token %s… verifies %s, want %s", when, tok[:12], got, code)
			}
		}
	}
	ids, toks := map[string]string{}, map[string]string{}
	for _, name := range []string{"a", "b", "c", "d"} {
		k, tok, err := s.CreateKey("admin", admin(name))
		if err != nil {
			t.Fatal(err)
		}
		ids[name], toks[name], want[tok] = k.ID, tok, model.CodeValid
	}
	check("after creates")
	if n := s.hashes.len(); n != 4 || len(s.hashes.overflow) != 3 {
		t.Fatalf("%d hashes indexed, %d in the overflow; want 4 and 3", n, len(s.hashes.overflow))
	}

	// a: regenerated with a grace period, whose end is then passed.
	_, aNew, err := s.RegenerateKey("admin", ids["a"], time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want[aNew] = model.CodeValid
	check("during a's grace")
	// b: regenerated at once; c: deleted.
	_, bNew, err := s.RegenerateKey("admin", ids["b"], 0)
	if err != nil {
		t.Fatal(err)
	}
	want[toks["b"]], want[bNew] = model.CodeNotFound, model.CodeValid
	if err := s.DeleteKey("admin", ids["c"]); err != nil {
		t.Fatal(err)
	}
	want[toks["c"]] = model.CodeNotFound
	check("after regenerating b and deleting c")

	clock.Add(int64(2 * time.Hour))
	want[toks["a"]] = model.CodeNotFound // grace over, before and after expireGraces
	check("after a's grace")
	s.expireGraces()
	check("after expireGraces")
	if n := s.hashes.len(); n != 3 {
		t.Fatalf("%d hashes indexed, want 3 (a, b, d)", n)
	}

	if _, err := s.SeedKeys("admin", []SeedKey{{Spec: admin("seeded")}}); err != nil {
		t.Fatal(err)
	}
	if n := s.hashes.len(); n != 4 {
		t.Fatalf("%d hashes indexed after seeding, want 4", n)
	}
	// d: a grace period that is still running when the file is reopened.
	_, dNew, err := s.RegenerateKey("admin", ids["d"], time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want[dNew] = model.CodeValid
	check("during d's grace")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = open(opts); err != nil {
		t.Fatal(err)
	}
	check("after reopening")
	// a, b, d (current and previous) and seeded: one hash in the index's
	// slot, the rest in its overflow. On etcd grace expiry writes nothing:
	// each node drops previous hashes on its own timer (ETCD.md §3), so
	// the reload indexed a's expired one again (it verified NOT_FOUND above
	// all the same) until that timer runs. On bbolt the expiry was
	// written, and the count checks that it was.
	indexed := 5
	if s.be.Shared() {
		indexed = 6
	}
	if n := s.hashes.len(); n != indexed || len(s.hashes.overflow) != indexed-1 {
		t.Fatalf("after reopening: %d hashes indexed, %d in the overflow; want %d and %d", n, len(s.hashes.overflow), indexed, indexed-1)
	}
	s.expireGraces()
	check("after reopening and expireGraces")
	if n := s.hashes.len(); n != 5 {
		t.Fatalf("after reopening and expireGraces: %d hashes indexed, want 5", n)
	}
	if _, previous, ok := s.hashes.lookup(&[32]byte{}, &s.slots); ok || previous {
		t.Fatal("the zero hash found a key")
	}
}
