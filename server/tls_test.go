package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// tlsEnv is a store, a CA and a certificate pair on disk.
type tlsEnv struct {
	*testEnv
	ca                *testkit.TLSCA
	certPath, keyPath string
	leaves            int
}

func newTLSEnv(t *testing.T) *tlsEnv {
	e := &tlsEnv{testEnv: newEnv(t), ca: testkit.NewTLSCA(t)}
	e.certPath, e.keyPath = filepath.Join(e.dir, "tls.crt"), filepath.Join(e.dir, "tls.key")
	e.rotate()
	return e
}

// rotate writes a fresh pair (key first, then certificate) and returns
// its common name.
func (e *tlsEnv) rotate() string {
	e.leaves++
	l := e.ca.Leaf(e.t, fmt.Sprintf("leaf-%d", e.leaves), time.Time{}, time.Time{})
	l.Write(e.t, e.certPath, e.keyPath)
	return l.CN
}

type tlsServer struct {
	s     *Server
	addr  string
	logs  *testkit.SyncBuffer
	certs *certReloader
}

// serveTLS runs a Server (HTTP only, TLS on) and stops it at cleanup.
func (e *tlsEnv) serveTLS(cfg Config) *tlsServer {
	e.t.Helper()
	cfg.Store = e.st
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.TLS.CertFile, cfg.TLS.KeyFile = e.certPath, e.keyPath
	if cfg.TLS.PollInterval == 0 {
		cfg.TLS.PollInterval = time.Hour // tests reload by hand unless they ask
	}
	logs := &testkit.SyncBuffer{}
	cfg.Log = logs
	ready := make(chan string, 1)
	cfg.Ready = func(_, h string) { ready <- h }
	s, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	ts := &tlsServer{s: s, logs: logs, certs: s.http.tls.certs}
	select {
	case ts.addr = <-ready:
	case err := <-done:
		e.t.Fatalf("Serve: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return ts
}

// peerCN makes a new TLS connection and returns the certificate's name.
func (e *tlsEnv) peerCN(addr string) (string, error) {
	c, err := tls.Dial("tcp", addr, e.ca.TLSClientConfig())
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func (e *tlsEnv) client(keepAlive bool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: e.ca.TLSClientConfig(), DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 4, ForceAttemptHTTP2: true,
	}}
}

func verifyTLS(c *http.Client, addr, secret, token string) (model.VerifyResult, *http.Response, error) {
	var res model.VerifyResult
	req, _ := http.NewRequest("POST", "https://"+addr+"/v1/keys/verify", strings.NewReader(verifyBody(token)))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := c.Do(req)
	if err != nil {
		return res, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return res, resp, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return res, resp, json.NewDecoder(resp.Body).Decode(&res)
}

// TestTLSServes: verify and /healthz answer over TLS 1.3 and 1.2,
// HTTP/1.1 (no h2 even when the client offers it); TLS 1.1 and 1.0 are
// refused, and so is plain HTTP.
func TestTLSServes(t *testing.T) {
	e := newTLSEnv(t)
	k, tok := e.createKey(model.KeySpec{Name: "gw"})
	ts := e.serveTLS(Config{})
	secret := e.secret()

	c := e.client(true)
	res, resp, err := verifyTLS(c, ts.addr, secret, tok)
	if err != nil || res.Code != model.CodeValid || res.KeyID != k.ID {
		t.Fatalf("verify over TLS: %+v %v", res, err)
	}
	if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 || resp.Proto != "HTTP/1.1" {
		t.Fatalf("negotiated %+v proto %s; want TLS 1.3, HTTP/1.1", resp.TLS, resp.Proto)
	}
	hr, err := c.Get("https://" + ts.addr + "/healthz")
	if err != nil || hr.StatusCode != 200 {
		t.Fatalf("/healthz over TLS: %v %v", hr, err)
	}
	hr.Body.Close()

	cfg12 := e.ca.TLSClientConfig()
	cfg12.MaxVersion = tls.VersionTLS12
	if c12, err := tls.Dial("tcp", ts.addr, cfg12); err != nil {
		t.Fatalf("TLS 1.2 refused: %v", err)
	} else {
		c12.Close()
	}
	for _, v := range []uint16{tls.VersionTLS11, tls.VersionTLS10} {
		old := e.ca.TLSClientConfig()
		old.MinVersion, old.MaxVersion = v, v
		if c, err := tls.Dial("tcp", ts.addr, old); err == nil {
			c.Close()
			t.Fatalf("%s accepted; want TLS 1.2 at least", tls.VersionName(v))
		}
	}
	// Plain HTTP on the TLS port gets no verify answer.
	if r, err := http.Get("http://" + ts.addr + "/healthz"); err == nil && r.StatusCode == 200 {
		t.Fatal("plain HTTP answered 200 on the TLS listener")
	}
	waitLog(t, ts.logs, "http tls: serving certificate subject=leaf-1 ", 1)
}

// TestTLSReload: a reload (what SIGHUP runs) presents the new pair to new
// handshakes; a connection made before keeps working.
func TestTLSReload(t *testing.T) {
	e := newTLSEnv(t)
	_, tok := e.createKey(model.KeySpec{Name: "gw"})
	ts := e.serveTLS(Config{})
	secret := e.secret()
	c := e.client(true)
	if _, _, err := verifyTLS(c, ts.addr, secret, tok); err != nil {
		t.Fatal(err)
	}
	cn := e.rotate()
	if got, _ := e.peerCN(ts.addr); got != "leaf-1" {
		t.Fatalf("before reload: %q", got)
	}
	if err := ts.certs.reload("sighup"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.peerCN(ts.addr); got != cn {
		t.Fatalf("after reload a new handshake got %q (%v), want %q", got, err, cn)
	}
	if _, resp, err := verifyTLS(c, ts.addr, secret, tok); err != nil || resp.TLS.PeerCertificates[0].Subject.CommonName != "leaf-1" {
		t.Fatalf("the keep-alive connection after reload: %v", err)
	}
	waitLog(t, ts.logs, "http tls: reloaded reason=sighup, serving certificate subject="+cn, 1)
}

// TestTLSReloadOnFileChange: with no signal, a changed pair is picked up
// by the poll.
func TestTLSReloadOnFileChange(t *testing.T) {
	e := newTLSEnv(t)
	ts := e.serveTLS(Config{TLS: HTTPTLS{PollInterval: 20 * time.Millisecond}})
	cn := e.rotate()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := e.peerCN(ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got == cn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the changed pair was not picked up in 5 s:\n%s", ts.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitLog(t, ts.logs, "reloaded reason=file_change", 1)
}

// TestTLSBadPairKeepsOld: a reload of a broken pair fails, says why, and
// leaves the certificate in use; New refuses the same pairs at start.
func TestTLSBadPairKeepsOld(t *testing.T) {
	e := newTLSEnv(t)
	ts := e.serveTLS(Config{})
	good := e.ca.Leaf(t, "good", time.Time{}, time.Time{})
	other := e.ca.Leaf(t, "other", time.Time{}, time.Time{})
	expired := e.ca.Leaf(t, "expired", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	link := filepath.Join(e.dir, "link.key")
	cases := []struct {
		name  string
		setup func()
		want  string
	}{
		{"mismatched key", func() {
			other.Write(t, e.certPath, e.keyPath)
			testkit.WriteFileAtomic(t, e.certPath, good.CertPEM, 0o644)
		},
			"private key does not match public key"},
		{"half-written certificate", func() {
			good.Write(t, e.certPath, e.keyPath)
			testkit.WriteFileAtomic(t, e.certPath, good.CertPEM[:len(good.CertPEM)/2], 0o644)
		}, "failed to find any PEM data in certificate input"},
		{"empty key", func() { good.Write(t, e.certPath, e.keyPath); testkit.WriteFileAtomic(t, e.keyPath, nil, 0o600) },
			"failed to find any PEM data in key input"},
		{"key readable by others", func() { good.Write(t, e.certPath, e.keyPath); os.Chmod(e.keyPath, 0o644) },
			"it has mode 0644"},
		{"key through a symlink", func() {
			good.Write(t, e.certPath, link)
			os.Remove(e.keyPath)
			if err := os.Symlink(link, e.keyPath); err != nil {
				t.Fatal(err)
			}
		}, "it is a symbolic link; keyward reads a private key only from the file itself"},
		{"expired", func() { os.Remove(e.keyPath); expired.Write(t, e.certPath, e.keyPath) }, "expired at"},
		{"certificate is a directory", func() {
			good.Write(t, e.certPath, e.keyPath)
			os.Remove(e.certPath)
			os.Mkdir(e.certPath, 0o755)
		}, "not a regular file"},
	}
	for _, tc := range cases {
		os.RemoveAll(e.certPath)
		tc.setup()
		err := ts.certs.reload("sighup")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: reload error %v, want %q", tc.name, err, tc.want)
		}
		if got, err := e.peerCN(ts.addr); got != "leaf-1" {
			t.Fatalf("%s: after a failed reload a handshake got %q (%v), want the old leaf-1", tc.name, got, err)
		}
		if _, err := New(Config{Store: e.st, HTTPAddr: "127.0.0.1:0", Log: io.Discard, TLS: HTTPTLS{CertFile: e.certPath, KeyFile: e.keyPath}}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: New accepted the pair (%v)", tc.name, err)
		}
	}
	waitLog(t, ts.logs, "reload failed reason=sighup, still serving the previous certificate", len(cases))
	if logs := ts.logs.String(); strings.Contains(logs, "PRIVATE KEY") || strings.Contains(logs, string(good.KeyPEM[40:80])) {
		t.Fatalf("key material in the log:\n%s", logs)
	}
	// Half a pair is a usage error.
	for _, half := range []HTTPTLS{{CertFile: e.certPath}, {KeyFile: e.keyPath}} {
		if _, err := New(Config{Store: e.st, HTTPAddr: "127.0.0.1:0", Log: io.Discard, TLS: half}); err == nil || !strings.Contains(err.Error(), "give both") {
			t.Fatalf("half a pair %+v: %v", half, err)
		}
	}
}

// TestTLSRotationUnderLoad: clients hammer verify over keep-alive and
// over a new connection per request while the pair is rotated several
// times, by the poll and by reload; no request fails, and new handshakes
// see the new certificates.
func TestTLSRotationUnderLoad(t *testing.T) {
	e := newTLSEnv(t)
	_, tok := e.createKey(model.KeySpec{Name: "gw"})
	ts := e.serveTLS(Config{TLS: HTTPTLS{PollInterval: 10 * time.Millisecond}})
	secret := e.secret()

	const workers = 8
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var seenMu sync.Mutex
	seen := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		c := e.client(i%2 == 0) // half reuse connections, half handshake per request
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 5000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				res, resp, err := verifyTLS(c, ts.addr, secret, tok)
				if err == nil && res.Code != model.CodeValid {
					err = fmt.Errorf("code %s", res.Code)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
				{
					seenMu.Lock()
					seen[resp.TLS.PeerCertificates[0].Subject.CommonName]++
					seenMu.Unlock()
				}
			}
		}()
	}
	var names []string
	for i := range 6 {
		time.Sleep(150 * time.Millisecond)
		names = append(names, e.rotate())
		if i%2 == 1 {
			_ = ts.certs.reload("sighup") // races the poll: both are fine
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed during rotation, first: %v", n, n+ok.Load(), firstErr.Load())
	}
	last := names[len(names)-1]
	if got, err := e.peerCN(ts.addr); got != last {
		t.Fatalf("after rotation a new handshake got %q (%v), want %q", got, err, last)
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	if len(seen) < 4 {
		t.Fatalf("handshakes saw only %v over 6 rotations", seen)
	}
	t.Logf("%d requests, none failed; certificates seen by responses: %v", ok.Load(), seen)
}

// TestTLSConnCapSeesRequests: at the connection cap the limiter closes
// the idle connection, not one in the middle of a request. It follows
// connections through the TLS wrapper net/http hands its ConnState hook;
// without that, every TLS connection looked new forever, and the oldest
// (here the busy one) was closed.
func TestTLSConnCapSeesRequests(t *testing.T) {
	e := newTLSEnv(t)
	_, tok := e.createKey(model.KeySpec{Name: "gw"})
	ts := e.serveTLS(Config{HTTPMaxConns: 2})
	secret := e.secret()

	body := verifyBody(tok)
	busy, err := tls.Dial("tcp", ts.addr, e.ca.TLSClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	fmt.Fprintf(busy, "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", secret, len(body), body[:5])

	idle := e.client(true)
	if _, _, err := verifyTLS(idle, ts.addr, secret, tok); err != nil {
		t.Fatal(err)
	}
	time.Sleep(staleNew + 200*time.Millisecond)

	if _, _, err := verifyTLS(e.client(false), ts.addr, secret, tok); err != nil {
		t.Fatalf("a new connection at the cap: %v", err)
	}
	busy.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(busy, body[5:]); err != nil {
		t.Fatalf("the busy connection was closed: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("the busy connection was closed at the cap instead of the idle one: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("busy request: %d", resp.StatusCode)
	}
	// The idle one was evicted; its client reconnects.
	if _, _, err := verifyTLS(idle, ts.addr, secret, tok); err != nil {
		t.Fatalf("the idle client after eviction: %v", err)
	}
}

// waitLog waits until logs holds want n times (lines are written in
// batches), up to 5 s.
func waitLog(t *testing.T, logs *testkit.SyncBuffer, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(logs.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged %d times in 5 s:\n%s", want, n, logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTLSHandshakeErrorsFolded: failed handshakes (here TLS 1.1 clients)
// are logged a few at a time with a count of the rest, not one line each;
// net/http wrote one line per failed handshake.
func TestTLSHandshakeErrorsFolded(t *testing.T) {
	e := newTLSEnv(t)
	ts := e.serveTLS(Config{})
	const n = 30
	old := e.ca.TLSClientConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	for range n {
		if c, err := tls.Dial("tcp", ts.addr, old); err == nil {
			c.Close()
			t.Fatal("TLS 1.1 accepted")
		}
	}
	waitLog(t, ts.logs, "http tls: handshake failed from=127.0.0.1:", logFoldBurst)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	logs := ts.logs.String()
	if got := strings.Count(logs, "handshake failed"); got != logFoldBurst {
		t.Fatalf("%d lines for %d failed handshakes, want %d and a count:\n%s", got, n, logFoldBurst, logs)
	}
	if !strings.Contains(logs, fmt.Sprintf("http tls %d more log lines of kind tls-handshake folded", n-logFoldBurst)) {
		t.Fatalf("the folded handshakes are not counted:\n%s", logs)
	}
	if !strings.Contains(logs, "err=\"tls: client offered only unsupported versions") {
		t.Fatalf("the reason is not logged:\n%s", logs)
	}
}

// TestTLSSighupBeforeServe: a SIGHUP between New and Serve (serve has
// bound its listener; systemd may already send ExecReload's signal) is
// kept and reloads the pair once serving. SIGHUP was caught only once
// serving had started, and until then it ended the process.
func TestTLSSighupBeforeServe(t *testing.T) {
	e := newTLSEnv(t)
	logs := &testkit.SyncBuffer{}
	s, err := New(Config{Store: e.st, HTTPAddr: "127.0.0.1:0", Log: logs, TLS: HTTPTLS{CertFile: e.certPath, KeyFile: e.keyPath, PollInterval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	cn := e.rotate()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the signal is delivered
	addr := s.http.ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	}()
	waitLog(t, logs, "reloaded reason=sighup", 1)
	if got, err := e.peerCN(addr); got != cn {
		t.Fatalf("after the early SIGHUP a handshake got %q (%v), want %q", got, err, cn)
	}
}
