package store_test

import (
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

const benchKeys = 100_000

// benchSpecs returns n realistic key specs: a mix of roles, scopes,
// resource limits and expiries, with unique names.
func benchSpecs(n int, now time.Time) []model.KeySpec {
	exp := now.Add(model.DefaultLifetime)
	out := make([]model.KeySpec, n)
	for i := range out {
		sp := model.KeySpec{Name: fmt.Sprintf("svc-%06d", i), Description: "benchmark key", Role: model.RoleEditor,
			Scopes: []string{"coupons:read", "campaigns:read"}, ExpiresAt: &exp, Active: true}
		switch i % 10 {
		case 0:
			sp.Role, sp.Scopes = model.RoleAdmin, nil
		case 1, 2:
			sp.Role, sp.Scopes = model.RoleReadonly, []string{"coupons:read", "analytics:read"}
		case 3, 4:
			sp.Scopes, sp.Resources = []string{"coupons:read", "coupons:write"}, []string{"web-shop", "eu-store"}
		case 5:
			sp.ExpiresAt = nil
		}
		out[i] = sp
	}
	return out
}

func benchOptions(tb testing.TB) store.Options {
	return store.Options{Bootstrap: "admin", DefaultCatalog: testkit.CatalogJSON(tb), FlushInterval: time.Hour}
}

var bench struct {
	once   sync.Once
	dir    string
	s      *store.Store // open on dir/verify.db, shared by the Verify benchmarks
	tokens []string
	copy   string // a closed copy of the same DB, for BenchmarkOpen100k
	err    error
}

// benchDB builds the 100k-key database once per process: ImportKeys with
// NoSync, then a Backup copy for the load benchmark.
func benchDB(b *testing.B) {
	b.Helper()
	bench.once.Do(func() {
		dir, err := os.MkdirTemp("", "keyward-bench-")
		if err != nil {
			bench.err = err
			return
		}
		bench.dir = dir
		opts := benchOptions(b)
		opts.NoSync = true
		s, err := store.Open(filepath.Join(dir, "verify.db"), opts)
		if err != nil {
			bench.err = err
			return
		}
		_, toks, err := s.ImportKeys("admin", benchSpecs(benchKeys, time.Now()))
		if err != nil {
			bench.err = err
			return
		}
		// Requests arrive in no particular order, but each token is hot in
		// the cache (it was just read from the request). So: shuffle, then
		// lay the token texts out contiguously in that order; the store's
		// own lookups stay random.
		mrand.Shuffle(len(toks), func(i, j int) { toks[i], toks[j] = toks[j], toks[i] })
		arena := strings.Join(toks, "")
		for i := range toks {
			n := len(toks[i])
			toks[i], arena = arena[:n], arena[n:]
		}
		bench.s, bench.tokens = s, toks
		bench.copy = filepath.Join(dir, "open.db")
		f, err := os.Create(bench.copy)
		if err != nil {
			bench.err = err
			return
		}
		defer f.Close()
		_, bench.err = s.Backup(f)
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
}

func cleanupBench() {
	if bench.s != nil {
		bench.s.Close()
	}
	if bench.dir != "" {
		os.RemoveAll(bench.dir)
	}
}

// BenchmarkVerify measures in-process verification of valid tokens on a
// 100k-key database (last-used tracking on, as in production).
func BenchmarkVerify(b *testing.B) {
	benchDB(b)
	s, toks := bench.s, bench.tokens
	report := func(b *testing.B) {
		if el := b.Elapsed(); el > 0 {
			b.ReportMetric(float64(b.N)/el.Seconds(), "verifies/s")
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			tok := toks[i%len(toks)]
			if r := s.Verify(tok, "coupons:read", "web-shop", "10.0.0.1"); r.Code != model.CodeValid {
				b.Fatalf("%s", r.Code)
			}
		}
		report(b)
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(1)) * (len(toks) / 8)
			for pb.Next() {
				i++
				tok := toks[i%len(toks)]
				if r := s.Verify(tok, "coupons:read", "web-shop", "10.0.0.1"); r.Code != model.CodeValid {
					b.Errorf("%s", r.Code)
					return
				}
			}
		})
		report(b)
	})
	b.Run("refused-malformed", func(b *testing.B) {
		bad := toks[0][:len(toks[0])-1] + "!"
		for i := 0; i < b.N; i++ {
			if r := s.Verify(bad, "", "", ""); r.Code != model.CodeMalformed {
				b.Fatalf("%s", r.Code)
			}
		}
		report(b)
	})
}

// BenchmarkCreate creates one key per op with a normal fsync'd commit.
func BenchmarkCreate(b *testing.B) {
	s, err := store.Open(filepath.Join(b.TempDir(), "create.db"), benchOptions(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	specs := benchSpecs(b.N, time.Now())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.CreateKey("admin", specs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkImport100k imports 100k keys into a fresh database in one
// transaction, with normal sync.
func BenchmarkImport100k(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		specs := benchSpecs(benchKeys, time.Now())
		s, err := store.Open(filepath.Join(b.TempDir(), fmt.Sprintf("import-%d.db", i)), benchOptions(b))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, _, err := s.ImportKeys("admin", specs); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/import")
}

// BenchmarkOpen100k measures opening (and loading into memory) a 100k-key
// database.
func BenchmarkOpen100k(b *testing.B) {
	benchDB(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := store.Open(bench.copy, benchOptions(b))
		if err != nil {
			b.Fatal(err)
		}
		if s.KeyCount() != benchKeys {
			b.Fatalf("%d keys", s.KeyCount())
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/open")
}
