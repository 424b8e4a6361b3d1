package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/store"
)

// TestCountKeyStatus: keys by status agree with what Verify answers:
// a disabled key is disabled, an active key past its expiry is expired,
// a deleted key is not counted.
func TestCountKeyStatus(t *testing.T) {
	e := newEnv(t)
	soon := e.clock.Now().Add(time.Hour)
	sp := spec("soon")
	sp.ExpiresAt = &soon
	_, soonTok := e.create(sp)
	_, _ = e.create(spec("live"))
	off, _ := e.create(spec("off"))
	gone, _ := e.create(spec("gone"))
	if _, err := e.s.SetKeyActive("admin", off.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := e.s.DeleteKey("admin", gone.ID); err != nil {
		t.Fatal(err)
	}
	if got, want := e.s.CountKeyStatus(e.clock.Now()), (store.KeyStatusCounts{Active: 2, Disabled: 1}); got != want {
		t.Fatalf("now: %+v, want %+v", got, want)
	}
	e.clock.Advance(2 * time.Hour)
	e.wantCode(soonTok, "", "", "EXPIRED")
	if got, want := e.s.CountKeyStatus(e.clock.Now()), (store.KeyStatusCounts{Active: 1, Disabled: 1, Expired: 1}); got != want {
		t.Fatalf("after expiry: %+v, want %+v", got, want)
	}
}

// TestObserveFlushes: a flush that writes records is reported with its
// count; the backlog is what waits for it.
func TestObserveFlushes(t *testing.T) {
	e := newEnv(t)
	_, tok := e.create(spec("a"))
	var mu sync.Mutex
	var got []int
	e.s.ObserveFlushes(func(d time.Duration, n int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil || d < 0 {
			t.Errorf("flush reported %s, %v", d, err)
		}
		got = append(got, n)
	})
	if err := e.s.FlushLastUsed(); err != nil { // nothing to write: not reported
		t.Fatal(err)
	}
	e.wantCode(tok, "", "", "VALID")
	if n := e.s.LastUsedBacklog(); n != 1 {
		t.Fatalf("backlog %d, want 1", n)
	}
	if err := e.s.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if n := e.s.LastUsedBacklog(); n != 0 {
		t.Fatalf("backlog after flush %d", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != 1 {
		t.Fatalf("flushes reported %v, want [1]", got)
	}
	e.s.ObserveFlushes(nil)
}

// BenchmarkCountKeyStatus is one count of keys by status (a scrape of
// keyward_keys when its cache is stale) over the 100k-key benchmark
// database: go test -run '^$' -bench CountKeyStatus ./store
func BenchmarkCountKeyStatus(b *testing.B) {
	benchDB(b)
	now := time.Now()
	for b.Loop() {
		if c := bench.s.CountKeyStatus(now); c.Active+c.Disabled+c.Expired != benchKeys {
			b.Fatalf("%+v", c)
		}
	}
}
