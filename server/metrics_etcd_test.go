package server

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/etcdtest"
	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// TestMetricsEtcd: on a real etcd (one member, started by the test), the
// sync series follow the cluster: the applied revision advances with a
// write, the lag stays small while etcd answers, and when the member is
// paused past --max-staleness the node reports itself stale until it is
// resumed.
func TestMetricsEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	opts := storeOptions(t, &testkit.Clock{})
	opts.MasterKey = filepath.Join(dir, "master.key")
	opts.MaxStaleness = 2 * time.Second
	st, err := store.OpenEtcd(store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/kwtest-metrics/"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	env := &testEnv{t: t, dir: dir, st: st, clock: &testkit.Clock{}}
	maddr := testkit.FreeAddr(t)
	env.serve(Config{SSHAddr: "-", MetricsAddr: maddr})

	_, fams := scrape(t, maddr)
	rev0 := sample(fams, "keyward_etcd_applied_revision")
	if rev0 <= 0 {
		t.Fatalf("applied revision %v", rev0)
	}
	if lag := sample(fams, "keyward_etcd_sync_lag_seconds"); lag < 0 || lag > 2 {
		t.Errorf("sync lag %v s while etcd answers", lag)
	}
	if got := sample(fams, "keyward_etcd_relists_total"); got != 0 {
		t.Errorf("relists %v, want 0", got)
	}
	if got := sample(fams, "keyward_stale"); got != 0 {
		t.Errorf("stale %v, want 0", got)
	}
	env.createKey(model.KeySpec{Name: "on-etcd"})
	testkit.WaitFor(t, 5*time.Second, "the applied revision to advance", func() bool {
		_, fams := scrape(t, maddr)
		return sample(fams, "keyward_etcd_applied_revision") > rev0 && sample(fams, "keyward_keys", "status", "active") >= 0
	})

	m := c.Members()[0]
	m.Pause()
	testkit.WaitFor(t, 15*time.Second, "the node to report itself stale", func() bool {
		_, fams := scrape(t, maddr)
		return sample(fams, "keyward_stale") == 1 && sample(fams, "keyward_etcd_sync_lag_seconds") > 2
	})
	m.Resume()
	testkit.WaitFor(t, 20*time.Second, "the node to be current again", func() bool {
		_, fams := scrape(t, maddr)
		return sample(fams, "keyward_stale") == 0
	})
}
