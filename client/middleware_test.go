package client_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/client"
	"github.com/keyward/keyward/model"
)

// TestMiddleware: a handler behind Middleware, on a real listener, over a
// real serve: a VALID key reaches it with its id and role in the context;
// the rest is answered like keyward's /v1/auth (401 with WWW-Authenticate,
// 403, X-Keyward-Code on each), 503 with Retry-After while keyward is stale
// or unreachable, 500 when keyward refuses the secret. Nothing but a VALID
// key reaches the handler.
func TestMiddleware(t *testing.T) {
	e := newEnv(t)
	k, tok := e.key(model.KeySpec{Name: "svc", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}})
	_, noScope := e.key(model.KeySpec{Name: "writer", Role: model.RoleEditor, Scopes: []string{"coupons:write"}, Resources: []string{"web-shop"}})
	dk, disabled := e.key(model.KeySpec{Name: "gone"})
	if _, err := e.st.SetKeyActive(rootOp, dk.ID, false); err != nil {
		t.Fatal(err)
	}
	reached := 0
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		id, ok := client.FromContext(r.Context())
		if !ok {
			t.Error("no identity in the context")
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"key_id": id.KeyID, "role": string(id.Role)})
	})
	serveApp := func(c *client.Client) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: client.Middleware(c, "coupons:read", "web-shop")(app), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return "http://" + ln.Addr().String() + "/coupons"
	}
	url := serveApp(e.client())
	get := func(url string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	for _, h := range [][]string{{"X-API-Key", tok}, {"Authorization", "Bearer " + tok}, {"Authorization", "bearer  " + tok}} {
		resp, body := get(url, h...)
		if resp.StatusCode != 200 || !strings.Contains(body, `"key_id":"`+k.ID+`"`) || !strings.Contains(body, `"role":"EDITOR"`) {
			t.Errorf("%s: %d %s", h[0], resp.StatusCode, body)
		}
	}
	for _, tc := range []struct {
		hdr    []string
		status int
		code   string
	}{
		{nil, 401, client.CodeMissing},
		{[]string{"Authorization", "Basic dXNlcjpwdw=="}, 401, client.CodeMissing},
		{[]string{"X-API-Key", "kw_nope"}, 401, "MALFORMED"},
		{[]string{"X-API-Key", tok, "X-API-Key", tok}, 401, "MALFORMED"},
		{[]string{"X-API-Key", disabled}, 401, "DISABLED"},
		{[]string{"X-API-Key", noScope}, 403, "INSUFFICIENT_SCOPE"},
	} {
		before := reached
		resp, body := get(url, tc.hdr...)
		if resp.StatusCode != tc.status || resp.Header.Get("X-Keyward-Code") != tc.code || reached != before ||
			(tc.status == 401) != strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%q: %d %v %s (reached: %v); want %d %s", tc.hdr, resp.StatusCode, resp.Header, body, reached != before, tc.status, tc.code)
		}
		if strings.Contains(body, tok) || strings.Contains(body, disabled) {
			t.Errorf("the answer echoes a key: %s", body)
		}
	}

	e.setStale(true)
	if resp, body := get(url, "X-API-Key", tok); resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" {
		t.Errorf("stale keyward: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	e.setStale(false)

	bad, _ := client.New(e.base, "wrong")
	if resp, body := get(serveApp(bad), "X-API-Key", tok); resp.StatusCode != 500 {
		t.Errorf("wrong secret: %d %s", resp.StatusCode, body)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := ln.Addr().String()
	ln.Close()
	dead, _ := client.New("http://"+deadAddr, "s")
	if resp, body := get(serveApp(dead), "X-API-Key", tok); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("keyward unreachable: %d %s", resp.StatusCode, body)
	}
	if reached != 3 {
		t.Errorf("the handler ran %d times, want 3 (the VALID requests only)", reached)
	}
}
