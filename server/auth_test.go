package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// authReq sends one /v1/auth request to a running server.
func authReq(t *testing.T, r *running, method, query string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+r.httpAddr+"/v1/auth"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

// TestForwardAuthAnswers: /v1/auth answers every verification code with
// the status gateways act on (200 / 401 / 403), X-Keyward-Code always,
// the key id and role only on 200, WWW-Authenticate on 401; the key from
// X-API-Key or Authorization: Bearer, scope and resource from the URL;
// any method. Neither the key nor the secret reaches the log.
func TestForwardAuthAnswers(t *testing.T) {
	e := newEnv(t)
	valid, validTok := e.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}})
	off, offTok := e.createKey(model.KeySpec{Name: "off", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	exp := time.Now().Add(time.Hour)
	_, expTok := e.createKey(model.KeySpec{Name: "old", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, ExpiresAt: &exp})
	e.addOperator("carol", model.OperatorAdmin)
	_, carolTok := e.createKeyAs("carol", model.KeySpec{Name: "carols", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r := e.serve(Config{SSHAddr: "-"})
	secret := e.secret()
	if _, err := e.st.SetKeyActive(rootOp, off.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SetOperatorDisabled(rootOp, "carol", true); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour) // old expires
	gen, err := model.GenerateToken(e.st.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	unknownTok := gen.String()

	const q = "?scope=coupons:read&resource=web-shop"
	cases := []struct {
		name, method, query string
		hdr                 map[string]string
		status              int
		code                string
	}{
		{"x-api-key", "GET", q, map[string]string{"X-API-Key": validTok}, 200, "VALID"},
		{"bearer", "POST", q, map[string]string{"Authorization": "Bearer " + validTok}, 200, "VALID"},
		{"bearer lower-case scheme, HEAD", "HEAD", q, map[string]string{"Authorization": "bearer " + validTok}, 200, "VALID"},
		{"key header wins", "PUT", q, map[string]string{"X-API-Key": validTok, "Authorization": "Bearer kw_nonsense"}, 200, "VALID"},
		{"no key", "GET", q, nil, 401, "MISSING"},
		{"basic auth is no key", "GET", q, map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, 401, "MISSING"},
		{"malformed", "GET", q, map[string]string{"X-API-Key": "kw_short"}, 401, "MALFORMED"},
		{"not found", "DELETE", q, map[string]string{"X-API-Key": unknownTok}, 401, "NOT_FOUND"},
		{"disabled", "GET", q, map[string]string{"X-API-Key": offTok}, 401, "DISABLED"},
		{"expired", "GET", q, map[string]string{"X-API-Key": expTok}, 401, "EXPIRED"},
		{"creator disabled", "GET", q, map[string]string{"X-API-Key": carolTok}, 401, "CREATOR_DISABLED"},
		{"wrong scope", "GET", "?scope=coupons:write&resource=web-shop", map[string]string{"X-API-Key": validTok}, 403, "INSUFFICIENT_SCOPE"},
		{"wrong resource", "GET", "?scope=coupons:read&resource=loyalty", map[string]string{"X-API-Key": validTok}, 403, "FORBIDDEN_RESOURCE"},
		{"percent-encoded query", "GET", "?scope=coupons%3Aread&resource=web-shop", map[string]string{"X-API-Key": validTok}, 200, "VALID"},
	}
	for _, c := range cases {
		hdr := map[string]string{"X-Keyward-Secret": secret}
		for k, v := range c.hdr {
			hdr[k] = v
		}
		resp, body := authReq(t, r, c.method, c.query, hdr)
		h := resp.Header
		if resp.StatusCode != c.status || h.Get("X-Keyward-Code") != c.code {
			t.Errorf("%s: %d %s, want %d %s (%s)", c.name, resp.StatusCode, h.Get("X-Keyward-Code"), c.status, c.code, body)
			continue
		}
		if c.status == 200 {
			if h.Get("X-Keyward-Key-Id") != valid.ID || h.Get("X-Keyward-Role") != "EDITOR" || len(body) != 0 {
				t.Errorf("%s: key id %q role %q body %q", c.name, h.Get("X-Keyward-Key-Id"), h.Get("X-Keyward-Role"), body)
			}
		} else if h.Get("X-Keyward-Key-Id") != "" || h.Get("X-Keyward-Role") != "" {
			t.Errorf("%s: a refusal names a key: %v", c.name, h)
		}
		if got := h.Get("Www-Authenticate"); (c.status == 401) != strings.HasPrefix(got, "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q on %d", c.name, got, c.status)
		}
		if c.status != 200 && c.method != "HEAD" && !bytes.Contains(body, []byte(`"code":"`+c.code+`"`)) {
			t.Errorf("%s: body %q", c.name, body)
		}
		if h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", c.name, h.Get("Cache-Control"))
		}
	}
	testkitWait(t, func() bool { return strings.Count(r.logs.String(), "http auth status=") >= len(cases) })
	logs := r.logs.String()
	for _, s := range []string{validTok, offTok, expTok, carolTok, unknownTok, secret} {
		if strings.Contains(logs, s) {
			t.Fatalf("the log holds a key or the secret:\n%s", logs)
		}
	}
	if !strings.Contains(logs, "http auth status=200 code=VALID key="+valid.ID) || !strings.Contains(logs, "http auth status=401 code=MISSING") {
		t.Fatalf("the log does not say what was answered:\n%s", logs)
	}
}

// TestForwardAuthGateway: a gateway that sends no X-Keyward-Secret, a
// wrong one or two gets 500 (an error to every gateway, never a 401 or
// 403 it would pass on as the client's fault), no verification is done
// (last-used stays empty), and the refusal is logged at most once a
// second with how many were not. From an --auth-trust network no header
// is needed, but a wrong one is still refused.
func TestForwardAuthGateway(t *testing.T) {
	e := newEnv(t)
	k, tok := e.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r := e.serve(Config{SSHAddr: "-"})
	secret := e.secret()
	for i, hdr := range []map[string]string{
		{"X-API-Key": tok},
		{"X-API-Key": tok, "X-Keyward-Secret": "wrong"},
		{"X-API-Key": tok, "X-Keyward-Secret": secret + "x"},
		{"X-API-Key": tok, "X-Keyward-Secret": ""},
	} {
		resp, body := authReq(t, r, "GET", "?scope=coupons:read", hdr)
		if resp.StatusCode != 500 || resp.Header.Get("X-Keyward-Code") != "GATEWAY_UNAUTHENTICATED" || resp.Header.Get("X-Keyward-Key-Id") != "" {
			t.Fatalf("case %d: %d %s %s", i, resp.StatusCode, resp.Header.Get("X-Keyward-Code"), body)
		}
	}
	// Two secret headers: refused, however right either is.
	req, _ := http.NewRequest("GET", "http://"+r.httpAddr+"/v1/auth", nil)
	req.Header["X-Keyward-Secret"] = []string{secret, secret}
	req.Header.Set("X-API-Key", tok)
	if resp, _ := do(t, req); resp.StatusCode != 500 {
		t.Fatalf("two secret headers: %d", resp.StatusCode)
	}
	if err := e.st.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.Key(k.ID); got.LastUsedAt != nil {
		t.Fatalf("a refused gateway's request was verified: last used %v", got.LastUsedAt)
	}
	testkitWait(t, func() bool { return strings.Contains(r.logs.String(), "refused the gateway") })
	time.Sleep(50 * time.Millisecond)
	logs := r.logs.String()
	if n := strings.Count(logs, "refused the gateway"); n != 1 || strings.Contains(logs, secret) || strings.Contains(logs, tok) {
		t.Fatalf("want one refusal line (rate-limited), no secret or key; got %d:\n%s", n, logs)
	}
	time.Sleep(refusalLogEvery)
	authReq(t, r, "GET", "", map[string]string{"X-Keyward-Secret": "wrong"})
	testkitWait(t, func() bool { return strings.Count(r.logs.String(), "refused the gateway") == 2 })
	if logs := r.logs.String(); !strings.Contains(logs, "4 more refusals not logged") || !strings.Contains(logs, "sent a wrong X-Keyward-Secret") {
		t.Fatalf("the second refusal line must count the hidden ones and say why:\n%s", logs)
	}

	// Trusted network: no header needed; a wrong one still refused.
	e2 := newEnv(t)
	_, tok2 := e2.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r2 := e2.serve(Config{SSHAddr: "-", ForwardAuth: ForwardAuth{Trust: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
	if resp, body := authReq(t, r2, "GET", "?scope=coupons:read", map[string]string{"X-API-Key": tok2}); resp.StatusCode != 200 {
		t.Fatalf("trusted gateway without secret: %d %s", resp.StatusCode, body)
	}
	if resp, _ := authReq(t, r2, "GET", "?scope=coupons:read", map[string]string{"X-API-Key": tok2, "X-Keyward-Secret": "wrong"}); resp.StatusCode != 500 {
		t.Fatalf("trusted gateway with a wrong secret: %d", resp.StatusCode)
	}
	// A network that does not hold the peer is no trust.
	e3 := newEnv(t)
	_, tok3 := e3.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r3 := e3.serve(Config{SSHAddr: "-", ForwardAuth: ForwardAuth{Trust: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
	if resp, _ := authReq(t, r3, "GET", "", map[string]string{"X-API-Key": tok3, "X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.1.2.3"}); resp.StatusCode != 500 {
		t.Fatalf("an untrusted peer claiming a trusted address in headers: %d", resp.StatusCode)
	}
}

// TestForwardAuthSource: the key's last-used source is the right-most
// X-Forwarded-For entry outside --auth-trust (the client as our outermost
// gateway saw it; entries to its left are the client's own claims), else
// X-Real-IP, else the peer; an entry that is not an address falls back to
// the peer, so no header text reaches the store.
func TestForwardAuthSource(t *testing.T) {
	e := newEnv(t)
	k, tok := e.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r := e.serve(Config{SSHAddr: "-", ForwardAuth: ForwardAuth{Trust: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
	secret := e.secret()
	cases := []struct {
		name string
		hdr  map[string][]string
		want string
	}{
		{"peer only", nil, "127.0.0.1"},
		{"right-most", map[string][]string{"X-Forwarded-For": {"6.6.6.6, 203.0.113.7"}}, "203.0.113.7"},
		{"trusted hops skipped", map[string][]string{"X-Forwarded-For": {"6.6.6.6, 203.0.113.8, 10.0.0.2", "10.9.9.9"}}, "203.0.113.8"},
		{"all trusted: the left-most", map[string][]string{"X-Forwarded-For": {"10.0.0.5, 10.0.0.6"}}, "10.0.0.5"},
		{"v6, mapped v4", map[string][]string{"X-Forwarded-For": {"2001:db8::1, ::ffff:198.51.100.4"}}, "198.51.100.4"},
		{"garbage: the peer", map[string][]string{"X-Forwarded-For": {"1.2.3.4, evil<script>name"}}, "127.0.0.1"},
		{"x-real-ip", map[string][]string{"X-Real-Ip": {"198.51.100.9"}}, "198.51.100.9"},
		{"x-real-ip garbage", map[string][]string{"X-Real-Ip": {"<script>"}}, "127.0.0.1"},
		{"xff wins over x-real-ip", map[string][]string{"X-Forwarded-For": {"198.51.100.10"}, "X-Real-Ip": {"198.51.100.11"}}, "198.51.100.10"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", "http://"+r.httpAddr+"/v1/auth?scope=coupons:read", nil)
		for k, v := range c.hdr {
			req.Header[k] = v
		}
		req.Header.Set("X-Keyward-Secret", secret)
		req.Header.Set("X-API-Key", tok)
		if resp, body := do(t, req); resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", c.name, resp.StatusCode, body)
		}
		if err := e.st.FlushLastUsed(); err != nil {
			t.Fatal(err)
		}
		got, err := e.st.Key(k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.LastUsedFrom != c.want {
			t.Errorf("%s: last used from %q, want %q", c.name, got.LastUsedFrom, c.want)
		}
	}
}

// TestForwardAuthQuery: the auth URL may hold only scope and resource,
// each once and 1-256 bytes; anything else is 400 BAD_REQUEST (a gateway
// error), so a misspelt "scopes=" cannot turn a route's check into
// authentication only and a client query leaking into the auth URL
// cannot add a scope. What follows path= is never read (Envoy appends
// the client's path there). --require-scope applies too.
func TestForwardAuthQuery(t *testing.T) {
	e := newEnv(t)
	_, tok := e.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r := e.serve(Config{SSHAddr: "-"})
	secret := e.secret()
	hdr := map[string]string{"X-Keyward-Secret": secret, "X-API-Key": tok}
	for _, q := range []string{"?scopes=coupons:read", "?scope=coupons:write&scope=coupons:read", "?scope=coupons:read&resource=a&resource=b",
		"?scope=", "?scope=%zz", "?scope=" + strings.Repeat("a", 257)} {
		resp, body := authReq(t, r, "GET", q, hdr)
		if resp.StatusCode != 400 || resp.Header.Get("X-Keyward-Code") != "BAD_REQUEST" {
			t.Errorf("%.40q: %d %s %s", q, resp.StatusCode, resp.Header.Get("X-Keyward-Code"), body)
		}
	}
	if resp, body := authReq(t, r, "GET", "", hdr); resp.StatusCode != 200 {
		t.Errorf("no scope without --require-scope: %d %s", resp.StatusCode, body)
	}
	// Envoy appends the client's path and query: after path= nothing is read.
	if resp, body := authReq(t, r, "GET", "?scope=coupons:write&path=/coupons/x?scope=coupons:read&resource=web-shop&x=%zz", hdr); resp.StatusCode != 403 {
		t.Errorf("a client query after path= was read: %d %s", resp.StatusCode, body)
	}
	e2 := newEnv(t)
	_, tok2 := e2.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r2 := e2.serve(Config{SSHAddr: "-", RequireScope: true})
	hdr2 := map[string]string{"X-Keyward-Secret": e2.secret(), "X-API-Key": tok2}
	if resp, _ := authReq(t, r2, "GET", "?resource=web-shop", hdr2); resp.StatusCode != 400 {
		t.Errorf("no scope with --require-scope: %d", resp.StatusCode)
	}
	if resp, _ := authReq(t, r2, "GET", "?scope=coupons:read", hdr2); resp.StatusCode != 200 {
		t.Errorf("scope with --require-scope: %d", resp.StatusCode)
	}
}

// TestForwardAuthHeaders: the key and bearer header names are
// configurable; a key header given twice is MALFORMED, never a pick.
func TestForwardAuthHeaders(t *testing.T) {
	e := newEnv(t)
	_, tok := e.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	r := e.serve(Config{SSHAddr: "-", ForwardAuth: ForwardAuth{KeyHeader: "x-shop-key", BearerHeader: "Proxy-Authorization"}})
	secret := e.secret()
	for _, c := range []struct {
		hdr    map[string]string
		status int
		code   string
	}{
		{map[string]string{"X-Shop-Key": tok}, 200, "VALID"},
		{map[string]string{"Proxy-Authorization": "Bearer " + tok}, 200, "VALID"},
		{map[string]string{"X-API-Key": tok}, 401, "MISSING"},
		{map[string]string{"Authorization": "Bearer " + tok}, 401, "MISSING"},
	} {
		c.hdr["X-Keyward-Secret"] = secret
		if resp, _ := authReq(t, r, "GET", "", c.hdr); resp.StatusCode != c.status || resp.Header.Get("X-Keyward-Code") != c.code {
			t.Errorf("%v: %d %s", c.hdr, resp.StatusCode, resp.Header.Get("X-Keyward-Code"))
		}
	}
	req, _ := http.NewRequest("GET", "http://"+r.httpAddr+"/v1/auth", nil)
	req.Header["X-Shop-Key"] = []string{tok, tok}
	req.Header.Set("X-Keyward-Secret", secret)
	if resp, _ := do(t, req); resp.StatusCode != 401 || resp.Header.Get("X-Keyward-Code") != "MALFORMED" {
		t.Errorf("two key headers: %d %s", resp.StatusCode, resp.Header.Get("X-Keyward-Code"))
	}
	for _, bad := range []ForwardAuth{{KeyHeader: "X API"}, {KeyHeader: "authorization"}, {BearerHeader: "X-Keyward-Secret"}, {KeyHeader: strings.Repeat("a", 65)}} {
		if _, err := newFwdAuth(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestForwardAuthStale: a stale node answers /v1/auth 503 with
// X-Keyward-Code: STALE and Retry-After, before looking at the gateway
// or the key, and answers again once current.
func TestForwardAuthStale(t *testing.T) {
	e := newEnv(t)
	_, tok := e.createKey(model.KeySpec{Name: "shop", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	var stale atomic.Pointer[error]
	r := e.serve(Config{SSHAddr: "-", Stale: func() error {
		if p := stale.Load(); p != nil {
			return *p
		}
		return nil
	}})
	hdr := map[string]string{"X-Keyward-Secret": e.secret(), "X-API-Key": tok}
	errStale := fmt.Errorf("%w: no word from etcd for 17s", store.ErrStale)
	stale.Store(&errStale)
	for _, h := range []map[string]string{hdr, {"X-API-Key": tok}} {
		resp, body := authReq(t, r, "GET", "?scope=coupons:read", h)
		if resp.StatusCode != 503 || resp.Header.Get("X-Keyward-Code") != "STALE" || resp.Header.Get("Retry-After") == "" || !bytes.Contains(body, []byte(`"stale"`)) {
			t.Fatalf("stale: %d %v %s", resp.StatusCode, resp.Header, body)
		}
	}
	stale.Store(nil)
	if resp, _ := authReq(t, r, "GET", "?scope=coupons:read", hdr); resp.StatusCode != 200 {
		t.Fatalf("current again: %d", resp.StatusCode)
	}
}

// testkitWait polls cond for up to 5 s (log lines reach the sink in
// batches).
func testkitWait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkForwardAuth is the /v1/auth handler against the verify handler
// on the same store and key, in process: what forward auth adds per
// request. go test -run ^$ -bench ForwardAuth -benchmem ./server
func BenchmarkForwardAuth(b *testing.B) {
	st, toks, secret := loadStore(b, b.TempDir(), 1000, false)
	defer st.Close()
	log := newLogSink(io.Discard)
	defer log.Close()
	api := &httpAPI{st: st, log: log, stale: st.Stale}
	b.Run("verify", func(b *testing.B) { benchVerifyHandler(b, api, toks[0], secret) })
	b.Run("auth", func(b *testing.B) {
		req, _ := http.NewRequest("GET", "/v1/auth?scope=coupons:read&resource=web-shop", nil)
		req.Header.Set("X-Keyward-Secret", secret)
		req.Header.Set("X-API-Key", toks[0])
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		req.RemoteAddr = "127.0.0.1:5555"
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			api.ServeHTTP(w, req)
			if w.code != 200 {
				b.Fatalf("status %d", w.code)
			}
		}
	})
}
