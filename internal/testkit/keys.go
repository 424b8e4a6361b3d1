package testkit

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/keyward/keyward/model"
)

// NewBenchKeys builds n realistic keys in memory (no database), created
// in the 900 days before now; the caller may change them.
func NewBenchKeys(n int, now time.Time) []*model.Key {
	teams := []string{"billing", "checkout", "crm", "fraud", "loyalty", "marketing", "mobile", "search"}
	kinds := []string{"bot", "cron", "etl", "export", "sync", "webhook", "worker"}
	roles := []model.Role{model.RoleAdmin, model.RoleEditor, model.RoleEditor, model.RoleReadonly}
	keys := make([]*model.Key, n)
	for i := range keys {
		created := now.Add(-time.Duration(i%900) * 24 * time.Hour)
		exp := created.Add(365 * 24 * time.Hour)
		k := &model.Key{
			ID:          fmt.Sprintf("key_%012d", i),
			Name:        fmt.Sprintf("%s-%s-%07d", teams[i%len(teams)], kinds[(i/8)%len(kinds)], (i*7919)%n),
			Description: fmt.Sprintf("Used by the %s team", teams[(i/3)%len(teams)]),
			Role:        roles[i%len(roles)], Status: model.StatusActive,
			CreatedAt: created, CreatedBy: []string{"alice", "bob", "carol"}[i%3], ExpiresAt: &exp, Version: 1,
		}
		if i%11 == 0 {
			k.Status = model.StatusDisabled
		}
		if i%3 == 0 {
			t := now.Add(-time.Duration(i%5000) * time.Minute)
			k.LastUsedAt = &t
		}
		keys[i] = k
	}
	return keys
}

type benchKeySet struct {
	n   int
	now time.Time
}

// benchKeyCache shares the (immutable) key sets between benchmarks: a
// million keys take seconds to build.
var benchKeyCache = struct {
	sync.Mutex
	m map[benchKeySet][]*model.Key
}{m: map[benchKeySet][]*model.Key{}}

// BenchKeys is NewBenchKeys(n, now), built once per test process and
// shared: the caller must not change the keys.
func BenchKeys(n int, now time.Time) []*model.Key {
	benchKeyCache.Lock()
	defer benchKeyCache.Unlock()
	id := benchKeySet{n, now}
	if benchKeyCache.m[id] == nil {
		benchKeyCache.m[id] = NewBenchKeys(n, now)
	}
	return benchKeyCache.m[id]
}

// ShuffledBenchKeys is BenchKeys(n, now) in a random order, as the
// store's map hands them over (and not the address order a table leaves
// behind).
func ShuffledBenchKeys(n int, now time.Time) []*model.Key {
	keys := slices.Clone(BenchKeys(n, now))
	rand.New(rand.NewPCG(1, uint64(n))).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	return keys
}

// BenchOperators are the creators of the bench keys (and a few more),
// all ADMIN and active since before any key.
func BenchOperators() []model.Operator {
	var ops []model.Operator
	for _, n := range []string{"alice", "bob", "Bob", "carol", "dave", "erin"} {
		ops = append(ops, model.Operator{Name: n, Role: model.OperatorAdmin})
	}
	return ops
}

// BenchSizes are the key table sizes benchmarked. The 1M cases need
// about 1 GiB and a few seconds of set-up each, so they run only with
// KEYWARD_BENCH_1M=1 (CI runs -benchtime 1x without it).
func BenchSizes() []int {
	if os.Getenv("KEYWARD_BENCH_1M") != "" {
		return []int{1_000, 100_000, 1_000_000}
	}
	return []int{1_000, 100_000}
}
