package keytable

import (
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// testNow is the fixed clock of the table tests (the TUI tests' too).
var testNow = time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)

// testOperators are the creators of the test keys, all active since
// before any key; testOps indexes them.
var (
	testOperators = testkit.BenchOperators()
	testOps       = OperatorMap(testOperators)
)

// The bench keys (testkit.NewBenchKeys) at testNow: benchKeys are fresh,
// cachedBenchKeys shared and not to be changed, shuffledKeys a shuffled
// copy of those.
func benchKeys(n int) []*model.Key       { return testkit.NewBenchKeys(n, testNow) }
func cachedBenchKeys(n int) []*model.Key { return testkit.BenchKeys(n, testNow) }
func shuffledKeys(n int) []*model.Key    { return testkit.ShuffledBenchKeys(n, testNow) }

// sizes are the table sizes benchmarked (testkit.BenchSizes).
var sizes = testkit.BenchSizes()
