package keytable

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/keyward/keyward/model"
)

// testNow is the fixed clock of the table tests (the TUI tests' too).
var testNow = time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)

// testOperators are the creators of the test keys, all active since
// before any key; testOps indexes them.
var (
	testOperators = func() []model.Operator {
		var ops []model.Operator
		for _, n := range []string{"alice", "bob", "Bob", "carol", "dave", "erin"} {
			ops = append(ops, model.Operator{Name: n, Role: model.OperatorAdmin})
		}
		return ops
	}()
	testOps = OperatorMap(testOperators)
)

// benchKeyCache shares the (immutable) key sets between benchmarks: a
// million keys take seconds to build.
var benchKeyCache = map[int][]*model.Key{}

func cachedBenchKeys(n int) []*model.Key {
	if benchKeyCache[n] == nil {
		benchKeyCache[n] = benchKeys(n)
	}
	return benchKeyCache[n]
}

// benchKeys builds n realistic keys in memory (no database).
func benchKeys(n int) []*model.Key {
	teams := []string{"billing", "checkout", "crm", "fraud", "loyalty", "marketing", "mobile", "search"}
	kinds := []string{"bot", "cron", "etl", "export", "sync", "webhook", "worker"}
	roles := []model.Role{model.RoleAdmin, model.RoleEditor, model.RoleEditor, model.RoleReadonly}
	keys := make([]*model.Key, n)
	for i := range keys {
		created := testNow.Add(-time.Duration(i%900) * 24 * time.Hour)
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
			t := testNow.Add(-time.Duration(i%5000) * time.Minute)
			k.LastUsedAt = &t
		}
		keys[i] = k
	}
	return keys
}

// shuffledKeys is the n bench keys in a random order, as the store's
// map hands them over (and not the address order a table leaves behind).
func shuffledKeys(n int) []*model.Key {
	keys := slices.Clone(cachedBenchKeys(n))
	rand.New(rand.NewPCG(1, uint64(n))).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	return keys
}

// sizes are the table sizes benchmarked. The 1M cases need about 1 GiB
// and a few seconds of set-up each, so they run only with
// KEYWARD_BENCH_1M=1 (CI runs -benchtime 1x without it).
var sizes = benchSizes()

func benchSizes() []int {
	if os.Getenv("KEYWARD_BENCH_1M") != "" {
		return []int{1_000, 100_000, 1_000_000}
	}
	return []int{1_000, 100_000}
}
