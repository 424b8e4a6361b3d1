package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/etcdtest"
	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// The engine over etcd: several stores (nodes) on one prefix of a real
// three-member cluster, each through its own proxy so a test can cut one
// off.

type etcdNodes struct {
	t       *testing.T
	cluster *etcdtest.Cluster
	prefix  string
	master  string
}

var etcdPrefixes atomic.Int64

func newEtcdNodes(t *testing.T) *etcdNodes {
	t.Helper()
	return &etcdNodes{t: t, cluster: etcdtest.Start(t, 3),
		prefix: fmt.Sprintf("/kwengine-%d/", etcdPrefixes.Add(1)),
		master: filepath.Join(t.TempDir(), "master.key")}
}

// node opens a store on the cluster through its own proxies.
func (n *etcdNodes) node(opts store.Options) (*store.Store, *etcdtest.ProxySet) {
	n.t.Helper()
	px := n.cluster.Proxies(n.t)
	if opts.Bootstrap == "" {
		opts.Bootstrap = "admin"
	}
	if opts.DefaultCatalog == nil {
		opts.DefaultCatalog = testkit.CatalogJSON(n.t)
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour
	}
	opts.MasterKey = n.master
	opts.Warn = func(msg string) { n.t.Log("warning: " + msg) }
	s, err := store.OpenEtcd(store.EtcdConfig{Endpoints: px.Endpoints(), Prefix: n.prefix}, opts)
	if err != nil {
		n.t.Fatalf("OpenEtcd: %v", err)
	}
	n.t.Cleanup(func() { _ = s.Close() })
	return s, px
}

// eventually polls cond until it holds, for at most d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func TestEtcdNodesShareKeys(t *testing.T) {
	n := newEtcdNodes(t)
	a, _ := n.node(store.Options{})
	b, _ := n.node(store.Options{})
	c, _ := n.node(store.Options{Lean: true})
	if a.Backend() != "etcd" || a.Stale() != nil {
		t.Fatalf("backend %q stale %v", a.Backend(), a.Stale())
	}
	k, tok, err := a.CreateKey("admin", spec("shared"))
	if err != nil {
		t.Fatal(err)
	}
	// Read your writes on A (at once), then B and C (through the watch).
	seen := func(what string, want model.Code) {
		t.Helper()
		if r := a.Verify(tok, "coupons:read", "", "t"); r.Code != want {
			t.Fatalf("A right after %s: %s, want %s", what, r.Code, want)
		}
		for name, s := range map[string]*store.Store{"B": b, "C": c} {
			d := eventually(t, 5*time.Second, what+" on "+name, func() bool {
				return s.Verify(tok, "coupons:read", "", "t").Code == want
			})
			t.Logf("%s seen on %s after %s", what, name, d)
		}
	}
	seen("create", model.CodeValid)
	if _, err := a.SetKeyActive("admin", k.ID, false); err != nil {
		t.Fatal(err)
	}
	seen("disable", model.CodeDisabled)
	// Edits, regenerations with grace, deletes and operators follow too.
	if _, err := b.SetKeyActive("admin", k.ID, true); err != nil {
		t.Fatal(err)
	}
	_, tok2, err := b.RegenerateKey("admin", k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "regenerate with grace on A", func() bool {
		return a.Verify(tok2, "coupons:read", "", "t").Code == model.CodeValid &&
			a.Verify(tok, "coupons:read", "", "t").Code == model.CodeValid
	})
	if _, _, err := b.RegenerateKey("admin", k.ID, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "regenerate without grace on A", func() bool {
		return a.Verify(tok2, "coupons:read", "", "t").Code == model.CodeNotFound
	})
	if _, err := c.AddOperator("admin", "bob", model.OperatorReadonly, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "operator on A", func() bool {
		_, err := a.Operator("bob")
		return err == nil
	})
	if err := c.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "delete on A", func() bool {
		_, err := a.Key(k.ID)
		return errors.Is(err, store.ErrNotFound)
	})
	// A fresh node loads the same state.
	d, _ := n.node(store.Options{})
	if _, err := d.Operator("bob"); err != nil {
		t.Fatalf("new node: %v", err)
	}
	if d.KeyCount() != a.KeyCount() {
		t.Fatalf("new node has %d keys, A %d", d.KeyCount(), a.KeyCount())
	}
}

// TestEtcdConflicts: the lock's guarantees without a lock. A stale edit
// on B after an edit on A is a conflict; names stay unique under
// concurrent creates on several nodes; a deleted operator cannot write
// through a node that has not heard of it yet.
func TestEtcdConflicts(t *testing.T) {
	n := newEtcdNodes(t)
	a, _ := n.node(store.Options{})
	b, _ := n.node(store.Options{})
	k, _, err := a.CreateKey("admin", spec("edited"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "key on B", func() bool { _, err := b.Key(k.ID); return err == nil })
	onB, _ := b.Key(k.ID)
	sp := spec("edited")
	sp.Description = "from A"
	if _, err := a.EditKey("admin", k.ID, k.Version, sp); err != nil {
		t.Fatal(err)
	}
	sp.Description = "from B"
	if _, err := b.EditKey("admin", k.ID, onB.Version, sp); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale edit on B: %v, want ErrConflict", err)
	}

	nodes := []*store.Store{a, b}
	var ok, taken atomic.Int64
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			_, _, err := nodes[i%2].CreateKey("admin", spec(fmt.Sprintf("race-%d", i%10)))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrNameTaken):
				taken.Add(1)
			default:
				t.Errorf("create %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || taken.Load() != 90 {
		t.Fatalf("100 creates over 10 names: %d succeeded, %d name taken; want 10 and 90", ok.Load(), taken.Load())
	}
	eventually(t, 5*time.Second, "nodes agree", func() bool { return a.KeyCount() == b.KeyCount() && a.KeyCount() == 11 })
}

// TestEtcdStaleFailsClosed: a node cut off from etcd (its proxies
// blackholed: no error reaches it, as with a real partition) reports
// Stale after the bound; once healed it applies what it missed.
func TestEtcdStaleFailsClosed(t *testing.T) {
	n := newEtcdNodes(t)
	a, _ := n.node(store.Options{})
	b, px := n.node(store.Options{MaxStaleness: 2 * time.Second})
	k, tok, err := a.CreateKey("admin", spec("cut"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "key on B", func() bool { return b.Verify(tok, "coupons:read", "", "t").Code == model.CodeValid })
	px.Blackhole(true)
	if _, err := a.SetKeyActive("admin", k.ID, false); err != nil {
		t.Fatal(err)
	}
	d := eventually(t, 10*time.Second, "B stale", func() bool { return errors.Is(b.Stale(), store.ErrStale) })
	t.Logf("B stale after %s: %v", d, b.Stale())
	// Writes through B are refused at once while it is out of touch.
	start := time.Now()
	if _, _, err := b.CreateKey("admin", spec("while-cut")); !errors.Is(err, store.ErrStale) || time.Since(start) > time.Second {
		t.Fatalf("a write on a stale node: %v after %s, want ErrStale at once", err, time.Since(start))
	}
	px.Blackhole(false)
	eventually(t, 20*time.Second, "B healed", func() bool {
		return b.Stale() == nil && b.Verify(tok, "coupons:read", "", "t").Code == model.CodeDisabled
	})
	if b.Relists() != 0 {
		t.Fatalf("B relisted %d times after a short cut; want the watch to resume", b.Relists())
	}
}

// TestEtcdLongCutHeals: a cut longer than the client's keepalive breaks
// the connection under the watch; once healed the node hears from etcd
// again. (After a paused member it once stayed stale for good: the
// client resumed its stream from the next revision, which gets no
// progress answers on a quiet cluster.)
func TestEtcdLongCutHeals(t *testing.T) {
	n := newEtcdNodes(t)
	a, px := n.node(store.Options{MaxStaleness: 2 * time.Second})
	if _, _, err := a.CreateKey("admin", spec("quiet")); err != nil {
		t.Fatal(err)
	}
	// Blackholed (the proxies hold bytes), then the whole cluster paused
	// (the kernel still accepts and acknowledges): both, each longer than
	// the keepalive (5 s + 3 s).
	px.Blackhole(true)
	eventually(t, 10*time.Second, "stale while cut", func() bool { return errors.Is(a.Stale(), store.ErrStale) })
	time.Sleep(8 * time.Second)
	px.Blackhole(false)
	d := eventually(t, 15*time.Second, "in touch after the cut", func() bool { return a.Stale() == nil })
	t.Logf("in touch %s after the cut healed", d)

	// A single member paused (SIGSTOP: the kernel still accepts and
	// acknowledges) for longer than the keepalive and the reconnection's
	// handshake timeout.
	one := &etcdNodes{t: t, cluster: etcdtest.Start(t, 1), prefix: "/kwpause/", master: filepath.Join(t.TempDir(), "m.key")}
	b, _ := one.node(store.Options{MaxStaleness: 2 * time.Second})
	if _, _, err := b.CreateKey("admin", spec("quiet")); err != nil {
		t.Fatal(err)
	}
	m := one.cluster.Members()[0]
	for i := range 1 {
		m.Pause()
		eventually(t, 10*time.Second, "stale while paused", func() bool { return errors.Is(b.Stale(), store.ErrStale) })
		time.Sleep(16 * time.Second)
		m.Resume()
		d = eventually(t, 20*time.Second, "in touch after the pause", func() bool { return b.Stale() == nil })
		t.Logf("pause %d: in touch %s after the member resumed", i+1, d)
	}
}

// TestEtcdRelistAfterCompaction: a node that missed history that was then
// compacted away relists once and ends up with the cluster's state.
func TestEtcdRelistAfterCompaction(t *testing.T) {
	n := newEtcdNodes(t)
	a, _ := n.node(store.Options{})
	b, px := n.node(store.Options{})
	k, tok, err := a.CreateKey("admin", spec("compacted"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "key on B", func() bool { return b.Verify(tok, "coupons:read", "", "t").Code == model.CodeValid })
	px.Blackhole(true)
	if _, err := a.SetKeyActive("admin", k.ID, false); err != nil {
		t.Fatal(err)
	}
	_, tok2, err := a.CreateKey("admin", spec("after-cut"))
	if err != nil {
		t.Fatal(err)
	}
	cli := n.cluster.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	// The cut lasted long enough to end B's connections: the events etcd
	// had sent are lost, and B must watch again from a compacted revision.
	px.Reset()
	px.Blackhole(false)
	eventually(t, 30*time.Second, "B relisted", func() bool {
		return b.Verify(tok, "coupons:read", "", "t").Code == model.CodeDisabled &&
			b.Verify(tok2, "coupons:read", "", "t").Code == model.CodeValid
	})
	if r := b.Relists(); r != 1 {
		t.Fatalf("B relisted %d times, want 1", r)
	}
}

// TestEtcdLastUsedMerges: last use recorded on two nodes merges to the
// latest, and a deleted key's last use does not bring it back.
func TestEtcdLastUsedMerges(t *testing.T) {
	n := newEtcdNodes(t)
	clock := newClock()
	a, _ := n.node(store.Options{Now: clock.Now})
	b, _ := n.node(store.Options{Now: clock.Now})
	k, tok, err := a.CreateKey("admin", spec("used"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "key on B", func() bool { return b.Verify(tok, "coupons:read", "", "10.0.0.2").Code == model.CodeValid })
	clock.Advance(time.Hour)
	a.Verify(tok, "coupons:read", "", "10.0.0.1")
	if err := a.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if err := b.FlushLastUsed(); err != nil { // earlier: must not win
		t.Fatal(err)
	}
	want := clock.Now().UTC()
	for name, s := range map[string]*store.Store{"A": a, "B": b} {
		eventually(t, 5*time.Second, "last used on "+name, func() bool {
			got, err := s.Key(k.ID)
			return err == nil && got.LastUsedAt != nil && got.LastUsedAt.Equal(want) && got.LastUsedFrom == "10.0.0.1"
		})
	}
	clock.Advance(time.Hour)
	b.Verify(tok, "coupons:read", "", "10.0.0.2")
	if err := a.DeleteKey("admin", k.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "delete on B", func() bool { _, err := b.Key(k.ID); return errors.Is(err, store.ErrNotFound) })
	if err := b.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	c, _ := n.node(store.Options{})
	if _, err := c.Key(k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a deleted key came back through last-used: %v", err)
	}
	if err := c.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// TestEtcdSessionsFeed: a change made through one node reaches another
// node's change feed (what its SSH sessions refresh from), operator
// changes included.
func TestEtcdSessionsFeed(t *testing.T) {
	n := newEtcdNodes(t)
	a, _ := n.node(store.Options{})
	b, _ := n.node(store.Options{Lean: true})
	sub := b.Subscribe()
	defer sub.Close()
	b.Keys() // a session lists the keys: the lean store keeps snapshots now
	if _, err := a.AddOperator("admin", "carol", model.OperatorAdmin, nil); err != nil {
		t.Fatal(err)
	}
	k, _, err := a.CreateKey("admin", spec("fed"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[store.ChangeKind]bool{}
	deadline := time.After(5 * time.Second)
	for !seen[store.KeyCreated] || !seen[store.OperatorsChanged] {
		select {
		case <-sub.Ready():
			for _, ch := range sub.Next() {
				seen[ch.Kind] = true
			}
		case <-deadline:
			t.Fatalf("B's feed saw %v", seen)
		}
	}
	got, err := b.Key(k.ID)
	if err != nil || got.Name != "fed" {
		t.Fatalf("B's key: %+v %v", got, err)
	}
	listed := false
	for _, lk := range b.Keys() {
		listed = listed || (lk.ID == k.ID && lk.Name == "fed")
	}
	if !listed {
		t.Fatal("B's key list lacks the new key")
	}
	if err := a.DeleteOperator("admin", "carol"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "carol gone on B", func() bool {
		_, err := b.SessionOperator("carol")
		return errors.Is(err, store.ErrForbidden)
	})
}

// TestEtcdMigrateAndBackup: a bbolt database moves into etcd whole (keys
// with their secrets and last use, operators, catalog, the sealed shared
// secret, the audit log), and a backup taken from etcd is a bbolt file
// that opens with everything again.
func TestEtcdMigrateAndBackup(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "old.db")
	clock := newClock()
	old, err := store.Open(src, store.Options{Bootstrap: "admin", DefaultCatalog: testkit.CatalogJSON(t), Now: clock.Now, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	k, tok, err := old.CreateKey("admin", spec("moved"))
	if err != nil {
		t.Fatal(err)
	}
	_, tok2, err := old.CreateKey("admin", spec("graced"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.AddOperator("admin", "ro", model.OperatorReadonly, nil); err != nil {
		t.Fatal(err)
	}
	secret, _, err := old.RotateSecret("admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	old.Verify(tok, "coupons:read", "", "10.1.1.1")
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	oldAudit := auditOf(t, src)

	n := newEtcdNodes(t)
	px := n.cluster.Proxies(t)
	cfg := store.EtcdConfig{Endpoints: px.Endpoints(), Prefix: n.prefix}
	stats, err := store.Migrate(context.Background(), src, cfg, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Keys != 2 || stats.Operators != 2 || stats.LastUsed != 1 || stats.Audit != len(oldAudit) {
		t.Fatalf("stats %+v (audit events in the file: %d)", stats, len(oldAudit))
	}
	if _, err := store.Migrate(context.Background(), src, cfg, store.Options{}); !errors.Is(err, store.ErrNotEmpty) {
		t.Fatalf("a second migrate into the same prefix: %v, want ErrNotEmpty", err)
	}
	n.master = store.MasterKeyPath(src) // the nodes get the old master key
	s, _ := n.node(store.Options{})
	got, err := s.Key(k.ID)
	if err != nil || got.LastUsedAt == nil || got.LastUsedFrom != "10.1.1.1" {
		t.Fatalf("last use after the move: %+v %v", got, err)
	}
	if r := s.Verify(tok, "coupons:read", "", "t"); r.Code != model.CodeValid {
		t.Fatalf("moved key: %s", r.Code)
	}
	if r := s.Verify(tok2, "coupons:read", "", "t"); r.Code != model.CodeValid {
		t.Fatalf("second key: %s", r.Code)
	}
	if _, err := s.Operator("ro"); err != nil {
		t.Fatal(err)
	}
	if shown, _, err := s.RevealSecret("admin"); err != nil || shown != secret {
		t.Fatalf("secret after the move: %v (same: %v)", err, shown == secret)
	}
	if evs, err := s.Audit(store.AuditFilter{}); err != nil || len(evs) < len(oldAudit) {
		t.Fatalf("audit after the move: %d events, %v; the file had %d", len(evs), err, len(oldAudit))
	}

	backup := filepath.Join(dir, "backup.db")
	f, err := os.OpenFile(backup, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	back, err := store.Open(backup, store.Options{MasterKey: store.MasterKeyPath(src), FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if r := back.Verify(tok, "coupons:read", "", "t"); r.Code != model.CodeValid || back.KeyCount() != 2 {
		t.Fatalf("backup: %s, %d keys", r.Code, back.KeyCount())
	}
	if shown, _, err := back.RevealSecret("admin"); err != nil || shown != secret {
		t.Fatalf("secret in the backup: %v", err)
	}
	if err := back.Check(); err != nil {
		t.Fatal(err)
	}
}

func auditOf(t *testing.T, path string) []model.AuditEvent {
	t.Helper()
	s, err := store.Open(path, store.Options{FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.Audit(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestEtcdTLS: a cluster that serves TLS and requires client
// certificates: a node with the CA, its certificate and key works; one
// without a client certificate, or trusting another CA, is refused with an
// error rather than hanging.
func TestEtcdTLS(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.WithTLS())
	f := c.TLS()
	opts := func() store.Options {
		return store.Options{Bootstrap: "admin", DefaultCatalog: testkit.CatalogJSON(t), MasterKey: filepath.Join(t.TempDir(), "m.key"), FlushInterval: time.Hour,
			Warn: func(string) {}}
	}
	cfg := store.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/kwtls/", CACert: f.CA, Cert: f.Cert, Key: f.Key, DialTimeout: 2 * time.Second}
	s, err := store.OpenEtcd(cfg, opts())
	if err != nil {
		t.Fatalf("with the client certificate: %v", err)
	}
	defer s.Close()
	if _, tok, err := s.CreateKey("admin", spec("over-tls")); err != nil || s.Verify(tok, "coupons:read", "", "t").Code != model.CodeValid {
		t.Fatalf("create over TLS: %v", err)
	}
	if s.Stale() != nil {
		t.Fatal(s.Stale())
	}
	noCert := cfg
	noCert.Cert, noCert.Key = "", ""
	start := time.Now()
	if s2, err := store.OpenEtcd(noCert, opts()); err == nil {
		s2.Close()
		t.Fatal("a node without a client certificate was let in")
	} else if t.Logf("without a client certificate: %v", err); !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without a client certificate (%s): %v: the error does not say why", time.Since(start).Round(time.Millisecond), err)
	}
	otherCA := cfg
	otherCA.CACert = f.Cert // a certificate that is not the CA
	if s3, err := store.OpenEtcd(otherCA, opts()); err == nil {
		s3.Close()
		t.Fatal("a node trusting another CA connected")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("trusting another CA: %v: the error does not say why", err)
	}
	plain := cfg
	plain.Endpoints = []string{strings.Replace(c.Endpoints()[0], "https://", "http://", 1)}
	plain.CACert, plain.Cert, plain.Key = "", "", ""
	if s4, err := store.OpenEtcd(plain, opts()); err == nil {
		s4.Close()
		t.Fatal("a node without TLS settings connected to a TLS cluster")
	} else if !strings.Contains(err.Error(), "answers TLS") {
		t.Fatalf("plain http to a TLS cluster: %v: the error does not say why", err)
	}
}
