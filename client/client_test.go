package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/server"
	"github.com/keyward/keyward/store"
)

// The client is tested against a real keyward serve: server.Serve over a
// real bbolt file in t.TempDir(), on a real listener on 127.0.0.1.

const rootOp = "root"

type env struct {
	t      *testing.T
	st     *store.Store
	base   string
	secret string
	stale  atomic.Pointer[error]
	logs   *testkit.SyncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, logs: &testkit.SyncBuffer{}}
	st, err := store.Open(filepath.Join(t.TempDir(), "keyward.db"), store.Options{Bootstrap: rootOp, DefaultCatalog: testkit.CatalogJSON(t),
		FlushInterval: time.Hour, NoSync: true, Lean: true, Warn: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Serve(ctx, server.Config{Store: st, HTTPAddr: "127.0.0.1:0", Log: e.logs,
			Ready: func(_, h string) { ready <- h },
			Stale: func() error {
				if p := e.stale.Load(); p != nil {
					return *p
				}
				return nil
			}})
	}()
	select {
	case h := <-ready:
		e.base = "http://" + h
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not get ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop")
		}
		st.Close()
	})
	if e.secret, _, err = st.RevealSecret(rootOp); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) key(spec model.KeySpec) (*model.Key, string) {
	e.t.Helper()
	if spec.Role == "" {
		spec.Role = model.RoleAdmin
	}
	spec.Active = true
	k, tok, err := e.st.CreateKey(rootOp, spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return k, tok
}

func (e *env) client(opts ...client.Option) *client.Client {
	e.t.Helper()
	c, err := client.New(e.base, e.secret, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) setStale(on bool) {
	if !on {
		e.stale.Store(nil)
		return
	}
	err := fmt.Errorf("%w: no word from etcd for 17s", store.ErrStale)
	e.stale.Store(&err)
}

// TestVerifyCodes: every outcome comes back typed, with the key's id,
// role and expiry when one matched; a key disabled a moment ago is
// DISABLED on the next call.
func TestVerifyCodes(t *testing.T) {
	e := newEnv(t)
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	k, tok := e.key(model.KeySpec{Name: "svc", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}, ExpiresAt: &exp})
	c := e.client()
	ctx := context.Background()

	res, err := c.Verify(ctx, tok, "coupons:read", "web-shop")
	if err != nil || !res.Valid || res.Code != model.CodeValid || res.KeyID != k.ID || res.Role != model.RoleEditor || res.ExpiresAt == nil || !res.ExpiresAt.Equal(exp) {
		t.Fatalf("valid: %+v %v", res, err)
	}
	for _, tc := range []struct {
		key, scope, resource string
		want                 model.Code
	}{
		{tok, "coupons:write", "web-shop", model.CodeInsufficientScope},
		{tok, "coupons:read", "loyalty", model.CodeForbiddenResource},
		{"kw_nope", "", "", model.CodeMalformed},
		{strings.Repeat("x", client.MaxKey+1), "", "", model.CodeMalformed},
	} {
		res, err := c.Verify(ctx, tc.key, tc.scope, tc.resource)
		if err != nil || res.Valid || res.Code != tc.want {
			t.Errorf("Verify(%.20q, %q, %q) = %+v, %v; want %s", tc.key, tc.scope, tc.resource, res, err, tc.want)
		}
	}
	if _, err := c.Verify(ctx, "", "", ""); !errors.Is(err, client.ErrNoKey) {
		t.Errorf("empty key: %v", err)
	}
	// A well-formed token of no key.
	ko, other := e.key(model.KeySpec{Name: "other"})
	if err := e.st.DeleteKey(rootOp, ko.ID); err != nil {
		t.Fatal(err)
	}
	if res, err := c.Verify(ctx, other, "", ""); err != nil || res.Code != model.CodeNotFound {
		t.Errorf("deleted key: %+v %v", res, err)
	}

	if _, err := e.st.SetKeyActive(rootOp, k.ID, false); err != nil {
		t.Fatal(err)
	}
	if res, err := c.Verify(ctx, tok, "coupons:read", "web-shop"); err != nil || res.Valid || res.Code != model.CodeDisabled || res.KeyID != k.ID {
		t.Errorf("disabled a moment ago: %+v %v", res, err)
	}
}

// TestVerifyErrors: a wrong secret, a stale node and an unreachable one
// are distinct errors; the stale one carries Retry-After.
func TestVerifyErrors(t *testing.T) {
	e := newEnv(t)
	_, tok := e.key(model.KeySpec{Name: "svc"})
	ctx := context.Background()

	bad, err := client.New(e.base, "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Verify(ctx, tok, "", ""); !errors.Is(err, client.ErrBadSecret) {
		t.Errorf("wrong secret: %v, want ErrBadSecret", err)
	}

	c := e.client()
	e.setStale(true)
	_, err = c.Verify(ctx, tok, "", "")
	var ue *client.UnavailableError
	if !errors.As(err, &ue) || !ue.Stale || ue.RetryAfter != 5*time.Second || !strings.Contains(ue.Detail, "no word from etcd") {
		t.Errorf("stale: %#v", err)
	}
	e.setStale(false)
	if res, err := c.Verify(ctx, tok, "", ""); err != nil || !res.Valid {
		t.Errorf("recovered: %+v %v", res, err)
	}

	// Nothing listens on a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dead, _ := client.New("http://"+addr, "s")
	var te *client.TransportError
	if _, err := dead.Verify(ctx, tok, "", ""); !errors.As(err, &te) {
		t.Errorf("nothing listening: %#v, want *TransportError", err)
	}

	for _, u := range []string{"", "ftp://x", "http://", "http://h/?q=1", "http://u:p@h"} {
		if _, err := client.New(u, "s"); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	if _, err := client.New(e.base, "a\nb"); err == nil {
		t.Error("a secret with a newline accepted")
	}
}

// TestVerifyReusesConnections: sequential calls share one connection.
func TestVerifyReusesConnections(t *testing.T) {
	e := newEnv(t)
	_, tok := e.key(model.KeySpec{Name: "svc"})
	c := e.client()
	var fresh, reused atomic.Int32
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if i.Reused {
			reused.Add(1)
		} else {
			fresh.Add(1)
		}
	}})
	for range 50 {
		if res, err := c.Verify(ctx, tok, "", ""); err != nil || !res.Valid {
			t.Fatalf("%+v %v", res, err)
		}
	}
	if fresh.Load() != 1 || reused.Load() != 49 {
		t.Errorf("50 calls: %d new connections, %d reused; want 1 and 49", fresh.Load(), reused.Load())
	}
}

// TestVerifyHostileServer: a server that answers too much, or too slowly,
// or redirects, costs the client a bounded error: never more than
// MaxResponse bytes read, never longer than the timeout, never the secret
// sent elsewhere.
func TestVerifyHostileServer(t *testing.T) {
	var redirected atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/big/v1/keys/verify", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_, _ = io.WriteString(w, `{"valid":true,"code":"VALID","pad":"`+strings.Repeat("a", 1<<20)+`"}`)
	})
	mux.HandleFunc("/slow/v1/keys/verify", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/redir/v1/keys/verify", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { redirected.Store(true) })
	mux.HandleFunc("/html/v1/keys/verify", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(502)
		_, _ = io.WriteString(w, "<html>\x1b[2Jbad gateway</html>")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()
	ctx := context.Background()
	tok := "kw_x"

	big, _ := client.New(base+"/big", "s")
	var se *client.StatusError
	if _, err := big.Verify(ctx, tok, "", ""); !errors.As(err, &se) || !strings.Contains(se.Message, "64 KiB") {
		t.Errorf("1 MiB answer: %v", err)
	}
	slow, _ := client.New(base+"/slow", "s", client.WithTimeout(300*time.Millisecond))
	start := time.Now()
	var te *client.TransportError
	if _, err := slow.Verify(ctx, tok, "", ""); !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow answer: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("slow answer took %s with a 300ms timeout", d)
	}
	redir, _ := client.New(base+"/redir", "s")
	if _, err := redir.Verify(ctx, tok, "", ""); !errors.As(err, &se) || se.StatusCode != 307 || redirected.Load() {
		t.Errorf("redirect: %v (followed: %v)", err, redirected.Load())
	}
	html, _ := client.New(base+"/html", "s")
	if _, err := html.Verify(ctx, tok, "", ""); !errors.As(err, &se) || se.StatusCode != 502 || strings.ContainsRune(se.Message, 0x1b) {
		t.Errorf("502 page: %q", err)
	}
}
