package store_test

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// TestLastUsedLive: a verification shows in Key and Keys and is announced
// on the change feed within a fraction of a second, long before the
// (here: hourly) flush writes it to the file.
func TestLastUsedLive(t *testing.T) {
	e := newEnv(t)
	k, tok := e.create(spec("live"))
	e.create(spec("idle"))
	sub := e.s.Subscribe()
	defer sub.Close()
	e.clock.Advance(time.Minute)
	e.wantCode(tok, "coupons:read", "", "VALID")

	deadline := time.After(3 * time.Second)
	announced := false
	for !announced {
		select {
		case <-sub.Ready():
			for _, ch := range sub.Next() {
				if ch.Kind == store.LastUsed && slices.Contains(ch.IDs, k.ID) {
					announced = true
				}
			}
		case <-deadline:
			t.Fatal("the verification was not announced on the feed within 3 s")
		}
	}
	got, err := e.s.Key(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(e.clock.Now()) || got.LastUsedFrom != "test" {
		t.Fatalf("Key before the flush: last used %v from %q", got.LastUsedAt, got.LastUsedFrom)
	}
	for _, x := range e.s.Keys() {
		if (x.ID == k.ID) != (x.LastUsedAt != nil) {
			t.Fatalf("Keys before the flush: %s last used %v", x.Name, x.LastUsedAt)
		}
	}
}

// BenchmarkVerifyWithFeed is BenchmarkVerify/parallel with a change-feed
// subscriber draining the feed, as an open SSH TUI session does: it
// measures what announcing verifications live costs verification.
func BenchmarkVerifyWithFeed(b *testing.B) {
	benchDB(b)
	s, toks := bench.s, bench.tokens
	sub := s.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range sub.Ready() {
			sub.Next()
		}
	}()
	defer func() { sub.Close(); <-done }()
	var seed atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(1)) * (len(toks) / 8)
		for pb.Next() {
			i++
			if r := s.Verify(toks[i%len(toks)], "coupons:read", "web-shop", "10.0.0.1"); r.Code != model.CodeValid {
				b.Errorf("%s", r.Code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
}
