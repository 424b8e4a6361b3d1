package cli

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

func (a *app) devCmd() *cobra.Command {
	var n int
	var seed uint64
	seedCmd := &cobra.Command{
		Use:   "seed --keys N",
		Short: "Fill the database with N realistic keys",
		Long: `Fill the database with N realistic keys for demos and benchmarks: varied
names and descriptions, all three roles, scopes and resources from the
catalog, creation dates up to three years back but never before the seeding
operator's account (verify refuses a key older than its creator as
CREATOR_DISABLED, so on a new database every key is recent), expiries (some
never, some already past, some within the 14-day expiring window, most months
to two years away), last use (some never, some more than 90 days ago when the
keys are old enough, most recent) and some keys disabled. Their tokens are not
printed or kept, so seeded keys never verify. The batch is audited as one
event, not one per key. --seed makes the run repeatable.

On etcd (--etcd) the keys are written in batches, one etcd transaction each
(etcd allows 128 operations per transaction), so a seed is not atomic
there: if it fails, the batches already written stay.`,
		Example: `  KEYWARD_DB=/tmp/demo.db keyward dev seed --keys 100000
  keyward --db /tmp/demo.db dev seed --keys 500 --seed 7`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n <= 0 {
				return usageErrorf("--keys must be 1 or more")
			}
			return a.withStore(cmd, nil, func(st *store.Store) error { return a.seed(st, n, seed) })
		},
	}
	seedCmd.Flags().IntVar(&n, "keys", 0, "how many keys to add")
	seedCmd.Flags().Uint64Var(&seed, "seed", 1, "random seed")
	return group("dev", "Developer tools (seeding demo data)", "Tools for development, demos and benchmarks.",
		`  keyward --db /tmp/demo.db dev seed --keys 100000`, seedCmd)
}

var (
	seedTeams    = []string{"billing", "checkout", "loyalty", "marketing", "mobile", "partner", "reporting", "search", "support", "warehouse", "crm", "fraud"}
	seedPurposes = []string{"sync", "import", "export", "bot", "worker", "webhook", "dashboard", "cron", "gateway", "etl"}
	seedDescs    = []string{
		"Nightly %s job",
		"Used by the %s service in production",
		"Staging credentials for %s",
		"Partner integration (%s)",
		"",
		"Owned by the %s team; rotate quarterly",
	}
	seedSources = []string{"10.0.4.17", "10.0.9.3", "10.2.0.44", "172.16.3.8", "192.168.10.21", "cli", "203.0.113.7"}
)

// seedBatch keys go into one transaction. Ids are random, so every batch
// touches most leaf pages of the keys bucket, splits pages the previous
// batch filled and rewrites them at commit: four batches of 250k made a
// 1M-key file 810 MiB, one transaction makes it 334 MiB. Memory is the
// limit: seeding 1M keys in one transaction peaks at about 2.8 GiB RSS.
const seedBatch = 2_000_000

// seed adds n generated keys to st in batches of seedBatch and says how
// long it took.
func (a *app) seed(st *store.Store, n int, seed uint64) error {
	cat := st.Catalog()
	if len(cat.Scopes) == 0 {
		return errors.New("the catalog has no scopes; import one first (keyward catalog import FILE)")
	}
	g := &seeder{rng: rand.New(rand.NewPCG(seed, uint64(st.KeyCount()))), cat: cat, offset: st.KeyCount(), now: st.Now().UTC()}
	started := time.Now()
	g.oldest = g.now.Add(-3 * 365 * day)
	if op, err := st.Operator(a.actor); err == nil && op.CreatedAt.After(g.oldest) {
		g.oldest = op.CreatedAt.UTC()
	}
	g.latest = g.now.Add(-time.Hour)
	if !g.latest.After(g.oldest) {
		g.latest = g.now
	}
	batch := make([]store.SeedKey, 0, min(n, seedBatch))
	for i := range n {
		batch = append(batch, g.key(i))
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := st.SeedKeys(a.actor, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	took := time.Since(started)
	if st.Backend() == "etcd" {
		fmt.Fprintf(a.stdout, "Seeded %s in %s (%.0f keys/s), in batches (not atomic on etcd); the cluster now holds %s.\n",
			model.Count(n, "key", ""), took.Round(time.Millisecond), float64(n)/took.Seconds(), model.Count(st.KeyCount(), "key", ""))
		return nil
	}
	size := "unknown"
	if fi, err := os.Stat(st.Path()); err == nil {
		size = fmt.Sprintf("%.1f MiB", float64(fi.Size())/(1<<20))
	}
	fmt.Fprintf(a.stdout, "Seeded %s in %s (%.0f keys/s); the database now holds %s in %s.\n",
		model.Count(n, "key", ""), took.Round(time.Millisecond), float64(n)/took.Seconds(), model.Count(st.KeyCount(), "key", ""), size)
	return nil
}

const day = 24 * time.Hour

// seeder makes the keys of one dev seed run. Its random draws come in a
// fixed order, so --seed repeats a run.
type seeder struct {
	rng    *rand.Rand
	cat    model.Catalog
	offset int // keys already in the database: names go on from there
	// now is the store's time; keys are created in [oldest, latest).
	now, oldest, latest time.Time
}

// between is a uniform time in [from, to), or from if the span is empty.
func (g *seeder) between(from, to time.Time) time.Time {
	if !to.After(from) {
		return from
	}
	return from.Add(time.Duration(g.rng.Int64N(int64(to.Sub(from)))))
}

// key makes the i-th key of the run.
func (g *seeder) key(i int) store.SeedKey {
	rng := g.rng
	team := seedTeams[rng.IntN(len(seedTeams))]
	spec := model.KeySpec{
		Name:   fmt.Sprintf("%s-%s-%04d", team, seedPurposes[rng.IntN(len(seedPurposes))], g.offset+i),
		Active: rng.IntN(100) >= 8,
	}
	if d := seedDescs[rng.IntN(len(seedDescs))]; d != "" {
		spec.Description = fmt.Sprintf(d, team)
	}
	// Not before the seeding operator's account: verify refuses a
	// key older than its creator (CREATOR_DISABLED), and so does
	// SeedKeys. On a new database the keys are therefore all recent.
	created := g.between(g.oldest, g.latest)
	spec.ExpiresAt = g.expiry(created)
	g.grants(&spec)
	sk := store.SeedKey{Spec: spec, CreatedAt: created}
	sk.LastUsedAt = g.lastUsed(created)
	if sk.LastUsedAt != nil {
		sk.LastUsedFrom = seedSources[rng.IntN(len(seedSources))]
	}
	return sk
}

// expiry is nil (never) for some keys, already past for some, within the
// expiring window for some, and months to two years away for most.
func (g *seeder) expiry(created time.Time) *time.Time {
	now := g.now
	var exp time.Time
	switch r := g.rng.IntN(100); {
	case r < 10: // never expires
		return nil
	case r < 18: // expired already
		exp = g.between(created.Add(min(time.Hour, now.Sub(created)/2)), now)
	case r < 23: // within the 14-day expiring window
		exp = g.between(now.Add(time.Hour), now.Add(model.ExpiringWindow))
	default:
		exp = g.between(now.Add(15*day), now.Add(730*day))
	}
	return &exp
}

// grants picks the role, and for non-ADMIN keys resources and scopes
// from the catalog.
func (g *seeder) grants(spec *model.KeySpec) {
	rng, cat := g.rng, g.cat
	switch r := rng.IntN(10); {
	case r == 0:
		spec.Role = model.RoleAdmin
	case r < 7:
		spec.Role = model.RoleEditor
	default:
		spec.Role = model.RoleReadonly
	}
	if spec.Role == model.RoleAdmin {
		return
	}
	if rng.IntN(10) < 4 && len(cat.Resources) > 0 {
		for _, j := range rng.Perm(len(cat.Resources))[:1+rng.IntN(min(2, len(cat.Resources)))] {
			spec.Resources = append(spec.Resources, cat.Resources[j].ID)
		}
	}
	offered := cat.OfferedScopes(spec.Role, len(spec.Resources) > 0)
	if len(offered) == 0 {
		spec.Resources = nil
		offered = cat.OfferedScopes(spec.Role, false)
	}
	if len(offered) == 0 {
		spec.Role = model.RoleAdmin
		return
	}
	for _, j := range rng.Perm(len(offered))[:1+rng.IntN(min(3, len(offered)))] {
		spec.Scopes = append(spec.Scopes, offered[j].Name)
	}
}

// lastUsed is nil (never) for some keys, more than 90 days ago for some
// (when they are old enough), and recent, mostly within a day, for most.
func (g *seeder) lastUsed(created time.Time) *time.Time {
	now := g.now
	switch r := g.rng.IntN(100); {
	case r < 25: // never used
	case r < 45: // unused for more than 90 days
		if at := g.between(created, now.Add(-91*day)); at.After(created) {
			return &at
		}
	default: // recently, mostly within the last day
		from := now.Add(-90 * day)
		if g.rng.IntN(3) > 0 {
			from = now.Add(-day)
		}
		if from.Before(created) {
			from = created
		}
		at := g.between(from, now)
		return &at
	}
	return nil
}
