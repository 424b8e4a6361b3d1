package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// TestSSHShutdownEndsEverySession: `keyward serve` gets SIGTERM (the
// process signal and the cancelled context arrive together, as in main)
// while sessions are at every stage: running, program starting, just
// authenticated. Every session must end and Serve must return without
// "sessions did not end in time", every round.
//
// The race it catches: each session's bubbletea program used to install
// its own SIGINT/SIGTERM handler. On SIGTERM that handler and shutdown's
// p.Quit both send on the program's unbuffered message channel; when
// shutdown's quit won, the handler blocked forever on its send, and the
// program's exit waits for every handler, so the session never ended.
func TestSSHShutdownEndsEverySession(t *testing.T) {
	// Keep the test process alive on SIGTERM, as serve's NotifyContext does.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM)
	defer signal.Stop(sigs)

	const rounds = 4
	for round := range rounds {
		env := newEnv(t)
		requireTUI(t, env.st)
		k := env.addOperator("alice", model.OperatorAdmin)
		// Seven connections for one operator: above the default caps.
		srv := env.serve(Config{HTTPAddr: "-", ShutdownTimeout: 4 * time.Second,
			SSHLimits: SSHLimits{MaxConnsPerOperator: 16, MaxSessionsPerOperator: 16}})

		var terms []*testkit.Term
		// Running: the keys table is on screen.
		for range 3 {
			v := testkit.OpenTerm(t, mustDial(t, env, srv, "alice", k))
			terms = append(terms, v)
		}
		for _, v := range terms {
			v.WaitText(10*time.Second, 0, "Name")
		}
		// Program starting: the session is open, nothing waited for.
		for range 2 {
			terms = append(terms, testkit.OpenTerm(t, mustDial(t, env, srv, "alice", k)))
		}
		// Just authenticated: a connection with no session yet, and one
		// whose session request races the shutdown.
		idle := mustDial(t, env, srv, "alice", k)
		late := mustDial(t, env, srv, "alice", k)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := late.NewSession(); err == nil {
				_ = s.RequestPty("xterm", 40, 140, gossh.TerminalModes{})
				_ = s.Shell()
				_ = s.Wait()
			}
		}()

		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		start := time.Now()
		err := srv.stop(t)
		if err != nil {
			t.Fatalf("round %d: Serve: %v\nlog:\n%s", round, err, srv.logs.String())
		}
		if strings.Contains(srv.logs.String(), "did not end in time") {
			t.Fatalf("round %d: sessions were left running:\n%s", round, srv.logs.String())
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("round %d: shutdown took %s", round, d)
		}
		for i, v := range terms {
			select {
			case <-v.Done():
			case <-time.After(3 * time.Second):
				t.Fatalf("round %d: session %d did not end; output tail:\n%s", round, i, testkit.Tail(v.Text(), 500))
			}
		}
		idle.Close()
		late.Close()
		wg.Wait()
		// Drain the signal so the next round starts clean.
		select {
		case <-sigs:
		case <-time.After(time.Second):
		}
	}
}

// TestServerLifecycle: New binds both listeners; Shutdown without Serve
// releases them (the ports can be bound again) and flushes; Shutdown
// while Serve runs makes Serve return, and a second Shutdown returns the
// first one's result.
func TestServerLifecycle(t *testing.T) {
	env := newEnv(t)
	cfg := Config{Store: env.st, SSHAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Log: io.Discard,
		HostKeyPath: filepath.Join(env.dir, "hostkeys", HostKeyFile)}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sshAddr, httpAddr := s.ssh.ln.Addr().String(), s.http.ln.Addr().String()
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown without Serve: %v", err)
	}
	for _, a := range []string{sshAddr, httpAddr} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("listener %s not released by Shutdown: %v", a, err)
		}
		ln.Close()
	}

	logs := &testkit.SyncBuffer{}
	cfg.Log = logs
	ready := make(chan string, 1)
	cfg.Ready = func(_, h string) { ready <- h }
	if s, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	h := <-ready
	resp, err := http.Get("http://" + h + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if n := strings.Count(logs.String(), "stopped"); n != 1 {
		t.Fatalf(`"stopped" logged %d times:\n%s`, n, logs)
	}
}
