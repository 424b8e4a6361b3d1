package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

func TestSeedKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sub := e.s.Subscribe()
	defer sub.Close()
	// The keys are made 400 days back: by an account older than that, or
	// verify (and the status shown) would refuse them as CREATOR_DISABLED.
	e.clock.Advance(401 * 24 * time.Hour)
	now := e.clock.Now()
	past, soon, later := now.Add(-48*time.Hour), now.Add(3*24*time.Hour), now.Add(300*24*time.Hour)
	used, old := now.Add(-time.Hour), now.Add(-200*24*time.Hour)
	var keys []store.SeedKey
	for i := range 300 {
		sk := store.SeedKey{Spec: spec(fmt.Sprintf("seed-%03d", i)), CreatedAt: now.Add(-400 * 24 * time.Hour)}
		switch i % 4 {
		case 0:
			sk.Spec.ExpiresAt = &past
		case 1:
			sk.Spec.ExpiresAt = &soon
			sk.LastUsedAt, sk.LastUsedFrom = &used, "10.0.0.1"
		case 2:
			sk.Spec.ExpiresAt = &later
			sk.LastUsedAt, sk.LastUsedFrom = &old, "batch\x1b]52;c;x\x07"
		case 3:
			sk.Spec.Active = false
		}
		keys = append(keys, sk)
	}
	n, err := e.s.SeedKeys("admin", keys)
	if err != nil || n != 300 {
		t.Fatalf("SeedKeys: %d, %v", n, err)
	}
	check := func() {
		t.Helper()
		shown := map[model.DisplayStatus]int{}
		admin, err := e.s.Operator("admin")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range e.s.Keys() {
			shown[model.StatusOf(k, &admin, now)]++
			if !k.CreatedAt.Equal(now.Add(-400 * 24 * time.Hour)) {
				t.Fatalf("created at %v", k.CreatedAt)
			}
			if k.LastUsedAt != nil && model.Sanitize(k.LastUsedFrom) != k.LastUsedFrom {
				t.Fatalf("unsanitised source %q", k.LastUsedFrom)
			}
		}
		want := map[model.DisplayStatus]int{model.ShowExpired: 75, model.ShowExpiring: 75, model.ShowActive: 75, model.ShowDisabled: 75}
		if fmt.Sprint(shown) != fmt.Sprint(want) {
			t.Fatalf("statuses %v, want %v", shown, want)
		}
		k, err := e.s.Key(e.seededID("seed-001"))
		if err != nil || k.LastUsedAt == nil || !k.LastUsedAt.Equal(used) || k.LastUsedFrom != "10.0.0.1" {
			t.Fatalf("last used of seed-001: %+v %v", k, err)
		}
	}
	check()
	before := map[string]*model.Key{}
	for _, k := range e.s.Keys() {
		before[k.ID] = k
	}
	e.reopen() // disk agrees with memory, last use included
	check()
	for _, k := range e.s.Keys() {
		b := before[k.ID]
		if b == nil || (b.LastUsedAt == nil) != (k.LastUsedAt == nil) || b.LastUsedFrom != k.LastUsedFrom ||
			(k.LastUsedAt != nil && !k.LastUsedAt.Equal(*b.LastUsedAt)) {
			t.Fatalf("after reopen %s: %v from %q, before %+v", k.Name, k.LastUsedAt, k.LastUsedFrom, b)
		}
	}
	if err := e.s.Check(); err != nil {
		t.Fatal(err)
	}

	// One audit event for the whole batch.
	var seeded int
	for _, ev := range e.audit() {
		if ev.Action == model.ActKeyCreate {
			seeded++
			if ev.Actor != "admin" || ev.Target != "" {
				t.Errorf("seed event: %+v", ev)
			}
		}
	}
	if seeded != 1 {
		t.Errorf("want 1 audit event for the batch, got %d", seeded)
	}
	select {
	case <-sub.Ready():
		cs := sub.Next()
		if e.backend == "bbolt" {
			// One transaction: one Resync.
			if len(cs) != 1 || cs[0].Kind != store.Resync {
				t.Errorf("changes: %+v", cs)
			}
			break
		}
		// On etcd a seed is written in batches (not atomic, as the README
		// says), and each batch reaches subscribers as its commit does:
		// a Resync, or a change naming every seeded key.
		if store.Touches(cs, store.Resync) {
			break
		}
		for _, k := range e.s.Keys() {
			if !hasChange(cs, store.KeyCreated, k.ID) {
				t.Errorf("no change announced seeded key %s (%d changes)", k.ID, len(cs))
				break
			}
		}
	default:
		t.Error("no change published")
	}
}

func TestSeedKeysRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.create(spec("taken"))
	if _, err := e.s.SeedKeys("nobody", []store.SeedKey{{Spec: spec("a")}}); !errors.Is(err, store.ErrForbidden) {
		t.Errorf("unknown actor: %v", err)
	}
	if _, err := e.s.SeedKeys("admin", []store.SeedKey{{Spec: spec("Taken")}}); !errors.Is(err, store.ErrNameTaken) {
		t.Errorf("taken name: %v", err)
	}
	if _, err := e.s.SeedKeys("admin", []store.SeedKey{{Spec: spec("a")}, {Spec: spec("A ")}}); err == nil {
		t.Error("a repeated name was accepted")
	}
	if _, err := e.s.SeedKeys("admin", []store.SeedKey{{Spec: spec("b", "no:such")}}); err == nil {
		t.Error("an unknown scope was accepted")
	}
	if n := e.s.KeyCount(); n != 1 {
		t.Errorf("a refused batch wrote keys: %d", n)
	}
}

func (e *env) seededID(name string) string {
	e.t.Helper()
	id, ok := e.s.KeyIDByName(name)
	if !ok {
		e.t.Fatalf("no key %q", name)
	}
	return id
}
