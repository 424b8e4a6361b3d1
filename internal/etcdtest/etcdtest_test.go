package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func proxyClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// One cluster, every harness operation against it in turn: this keeps the
// whole test near ten seconds on a 2-core box.
func TestEtcdHarness(t *testing.T) {
	c := Start(t, 3)
	cl := c.Client(t)
	if _, err := cl.Put(ctxT(t, 5*time.Second), "/h/a", "1"); err != nil {
		t.Fatalf("put: %v", err)
	}

	t.Run("proxy and blackhole", func(t *testing.T) {
		p := NewProxy(t, c.Members()[0].ClientURL())
		pc := proxyClient(t, []string{p.URL()})
		r, err := pc.Get(ctxT(t, 5*time.Second), "/h/a")
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "1" {
			t.Fatalf("get through proxy: %v %v", r, err)
		}
		if p.Conns() == 0 {
			t.Fatal("proxy counts no connection")
		}

		p.Blackhole(true)
		start := time.Now()
		_, err = pc.Get(ctxT(t, 300*time.Millisecond), "/h/a")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("get while blackholed: want deadline exceeded, got %v", err)
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("blackholed get ended after %v: the client saw an error, not silence", d)
		}
		// A fresh connection is accepted and hears nothing too.
		fresh := proxyClient(t, []string{p.URL()})
		if _, err := fresh.Get(ctxT(t, 300*time.Millisecond), "/h/a"); err == nil {
			t.Fatal("a new connection got an answer through a blackhole")
		}
		// Writes made meanwhile elsewhere are seen once healed.
		if _, err := cl.Put(ctxT(t, 5*time.Second), "/h/a", "2"); err != nil {
			t.Fatal(err)
		}

		p.Blackhole(false)
		r, err = pc.Get(ctxT(t, 5*time.Second), "/h/a")
		if err != nil || string(r.Kvs[0].Value) != "2" {
			t.Fatalf("get after heal: %v %v", r, err)
		}
		if _, err := fresh.Get(ctxT(t, 5*time.Second), "/h/a"); err != nil {
			t.Fatalf("the connection made during the blackhole, after heal: %v", err)
		}
	})

	t.Run("proxy set", func(t *testing.T) {
		ps := c.Proxies(t)
		pc := proxyClient(t, ps.Endpoints())
		if _, err := pc.Put(ctxT(t, 5*time.Second), "/h/b", "x"); err != nil {
			t.Fatal(err)
		}
		w := pc.Watch(clientv3.WithRequireLeader(ctxT(t, 10*time.Second)), "/h/w")
		ps.Blackhole(true)
		if _, err := cl.Put(ctxT(t, 5*time.Second), "/h/w", "during"); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-w:
			t.Fatalf("watch event through a blackhole: %+v", ev)
		case <-time.After(300 * time.Millisecond):
		}
		ps.Blackhole(false)
		select {
		case ev := <-w:
			if ev.Err() != nil || len(ev.Events) != 1 || string(ev.Events[0].Kv.Value) != "during" {
				t.Fatalf("after heal: %+v %v", ev, ev.Err())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the held watch event never arrived after heal")
		}
	})

	t.Run("kill leader", func(t *testing.T) {
		old := c.MustLeader(t, 5*time.Second)
		old.Kill()
		if old.Running() {
			t.Fatal("killed member still running")
		}
		nl := c.MustLeader(t, 10*time.Second)
		if nl == old {
			t.Fatalf("leader is still %s", nl.Name())
		}
		if _, err := cl.Put(ctxT(t, 10*time.Second), "/h/c", "after-kill"); err != nil {
			t.Fatalf("put after leader kill: %v", err)
		}
		old.Restart(t)
		r, err := clientOf(t, old).Get(ctxT(t, 5*time.Second), "/h/c")
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "after-kill" {
			t.Fatalf("restarted member does not have the write made while it was dead: %v %v", r, err)
		}
	})

	t.Run("stop and restart follower", func(t *testing.T) {
		ld := c.MustLeader(t, 5*time.Second)
		var f *Member
		for _, m := range c.Members() {
			if m != ld {
				f = m
				break
			}
		}
		f.Stop()
		if f.Running() {
			t.Fatal("stopped member still running")
		}
		if _, err := os.Stat(f.DataDir()); err != nil {
			t.Fatal(err)
		}
		f.Restart(t)
		if _, err := clientOf(t, f).Get(ctxT(t, 5*time.Second), "/h/a"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		// Pause a follower: a client pinned to a paused member hangs until
		// its context ends (the connection stays open), so the writes go
		// through a client of the other two.
		ld := c.MustLeader(t, 5*time.Second)
		var m *Member
		var others []string
		for _, o := range c.Members() {
			if o != ld && m == nil {
				m = o
			} else {
				others = append(others, o.ClientURL())
			}
		}
		mc := clientOf(t, m)
		oc := proxyClient(t, others)
		m.Pause()
		t.Cleanup(m.Resume)
		if _, err := mc.Get(ctxT(t, 300*time.Millisecond), "/h/a", clientv3.WithSerializable()); err == nil {
			t.Fatal("a paused member answered")
		}
		if !m.Running() {
			t.Fatal("a paused member counts as not running")
		}
		// The other two keep a quorum.
		if _, err := oc.Put(ctxT(t, 10*time.Second), "/h/d", "paused"); err != nil {
			t.Fatal(err)
		}
		m.Resume()
		r, err := mc.Get(ctxT(t, 10*time.Second), "/h/d")
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("after resume: %v %v", r, err)
		}
	})
}

func clientOf(t *testing.T, m *Member) *clientv3.Client {
	return proxyClient(t, []string{m.ClientURL()})
}

// Start leaves no process behind: after the test's cleanups every member
// is gone.
func TestEtcdStartCleanup(t *testing.T) {
	var members []*Member
	t.Run("inner", func(t *testing.T) {
		c := Start(t, 1)
		members = c.Members()
		if !members[0].Running() {
			t.Fatal("not running")
		}
	})
	for _, m := range members {
		if m.Running() {
			t.Fatalf("%s still running after cleanup", m.Name())
		}
	}
}

// fatalTB records a Fatal and ends the goroutine, as testing does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// A KEYWARD_ETCD_BIN that does not exist fails the test, never skips it.
func TestEtcdBinEnvMissingIsFatal(t *testing.T) {
	t.Setenv(EnvBin, filepath.Join(t.TempDir(), "no-etcd"))
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); Bin(f) }()
	<-done
	if !strings.Contains(f.msg, EnvBin) || !strings.Contains(f.msg, "no-etcd") {
		t.Fatalf("want a Fatal naming %s and the path, got %q", EnvBin, f.msg)
	}
}

// Options reach the command line, and etcd accepts them (an unknown flag
// would make it exit during Start).
func TestEtcdStartOptions(t *testing.T) {
	c := Start(t, 1, WithAutoCompaction("revision", "1000"), WithTiming(50*time.Millisecond, 500*time.Millisecond))
	b, err := os.ReadFile(c.Members()[0].LogPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--auto-compaction-mode=revision", "--auto-compaction-retention=1000", "--heartbeat-interval=50", "--election-timeout=500"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("command line lacks %s", want)
		}
	}
}

// A proxy to a dead member ends the client's connection (as a refused dial
// would), and Close returns promptly while connections are held in a
// blackhole.
func TestEtcdProxyDeadTargetAndClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := NewProxy(t, "http://"+dead)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read through a proxy to a dead target: want EOF, got %v", err)
	}
	c.Close()

	// A live echo target, then a blackhole holding one connection.
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	q := NewProxy(t, echo.Addr().String())
	c, err = net.Dial("tcp", q.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("a"))
	buf := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'a' {
		t.Fatalf("echo through proxy: %q %v", buf, err)
	}
	q.Blackhole(true)
	c.Write([]byte("b"))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read through a blackhole: n=%d err=%v, want a timeout", n, err)
	}
	if q.Conns() != 1 {
		t.Fatalf("Conns = %d, want 1", q.Conns())
	}
	start := time.Now()
	q.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v with a held connection", d)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("connection still open after Close")
	}
}
