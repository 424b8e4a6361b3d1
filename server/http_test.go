package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

type httpClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newHTTPClient(t *testing.T, r *running) *httpClient {
	return &httpClient{t: t, base: "http://" + r.httpAddr, c: &http.Client{Timeout: 10 * time.Second}}
}

// do sends a request and returns the status, headers and body.
func (h *httpClient) do(method, path, auth string, body io.Reader) (int, http.Header, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// verify calls the verify API with the shared secret and decodes a 200.
func (h *httpClient) verify(secret, token, scope, resource string) model.VerifyResult {
	h.t.Helper()
	body, _ := json.Marshal(map[string]string{"key": token, "scope": scope, "resource": resource})
	code, _, b := h.do("POST", "/v1/keys/verify", "Bearer "+secret, bytes.NewReader(body))
	if code != 200 {
		h.t.Fatalf("verify: status %d, body %s", code, b)
	}
	var res model.VerifyResult
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&res); err != nil {
		h.t.Fatalf("verify answer %s: %v", b, err)
	}
	return res
}

func TestHTTPVerifyValid(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	exp := env.clock.Now().Add(model.DefaultLifetime).UTC()
	k, tok := env.createKey(model.KeySpec{Name: "gateway", ExpiresAt: &exp})

	code, hdr, b := c.do("POST", "/v1/keys/verify", "Bearer "+env.secret(), strings.NewReader(`{"key":"`+tok+`","scope":"coupons:write","resource":"web-shop"}`))
	if code != 200 {
		t.Fatalf("status %d: %s", code, b)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"valid", "code", "key_id", "role", "expires_at"} {
		if _, ok := got[f]; !ok {
			t.Errorf("answer %s lacks %q", b, f)
		}
	}
	if len(got) != 5 {
		t.Errorf("answer %s has fields beyond valid, code, key_id, role, expires_at", b)
	}
	res := c.verify(env.secret(), tok, "", "")
	if !res.Valid || res.Code != model.CodeValid || res.KeyID != k.ID || res.Role != model.RoleAdmin || res.ExpiresAt == nil || !res.ExpiresAt.Equal(*k.ExpiresAt) {
		t.Fatalf("got %+v, want VALID for %s", res, k.ID)
	}
}

// TestHTTPVerifyEveryCode drives each verification code through HTTP.
func TestHTTPVerifyEveryCode(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	secret := env.secret()
	env.addOperator("bob", model.OperatorAdmin)

	_, valid := env.createKey(model.KeySpec{Name: "valid"})
	dk, disabled := env.createKey(model.KeySpec{Name: "disabled"})
	if _, err := env.st.SetKeyActive(rootOp, dk.ID, false); err != nil {
		t.Fatal(err)
	}
	soon := env.clock.Now().Add(time.Hour)
	_, expired := env.createKey(model.KeySpec{Name: "expired", ExpiresAt: &soon})
	_, scoped := env.createKey(model.KeySpec{Name: "scoped", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}})
	_, bobs := env.createKeyAs("bob", model.KeySpec{Name: "bobs"})
	if _, err := env.st.SetOperatorDisabled(rootOp, "bob", true); err != nil {
		t.Fatal(err)
	}
	unknown, err := model.GenerateToken("")
	if err != nil {
		t.Fatal(err)
	}
	env.clock.Advance(2 * time.Hour)

	cases := []struct {
		name, token, scope, resource string
		want                         model.Code
	}{
		{"valid", valid, "coupons:write", "web-shop", model.CodeValid},
		{"malformed", "kw_not-a-token", "", "", model.CodeMalformed},
		{"bad checksum", valid[:len(valid)-1] + flip(valid[len(valid)-1]), "", "", model.CodeMalformed},
		{"not found", unknown.String(), "", "", model.CodeNotFound},
		{"disabled", disabled, "", "", model.CodeDisabled},
		{"expired", expired, "", "", model.CodeExpired},
		{"insufficient scope", scoped, "coupons:write", "web-shop", model.CodeInsufficientScope},
		{"forbidden resource", scoped, "coupons:read", "mobile-app", model.CodeForbiddenResource},
		{"scoped ok", scoped, "coupons:read", "web-shop", model.CodeValid},
		{"creator disabled", bobs, "", "", model.CodeCreatorDisabled},
	}
	seen := map[model.Code]bool{}
	for _, tc := range cases {
		res := c.verify(secret, tc.token, tc.scope, tc.resource)
		if res.Code != tc.want || res.Valid != (tc.want == model.CodeValid) {
			t.Errorf("%s: got %+v, want %s", tc.name, res, tc.want)
		}
		seen[res.Code] = true
	}
	for _, code := range model.Codes {
		if !seen[code] {
			t.Errorf("code %s never produced over HTTP", code)
		}
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestHTTPAuth(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	_, tok := env.createKey(model.KeySpec{Name: "k"})
	secret := env.secret()
	body := `{"key":"` + tok + `"}`
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + secret, "Bearer " + secret + "x", "Bearer" + secret, secret} {
		code, hdr, b := c.do("POST", "/v1/keys/verify", auth, strings.NewReader(body))
		if code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", auth, code)
		}
		if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: WWW-Authenticate %q", auth, hdr.Get("WWW-Authenticate"))
		}
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("401 body is not a JSON error: %s", b)
		}
	}
	for _, auth := range []string{"Bearer " + secret, "bearer " + secret, "BEARER  " + secret} {
		if code, _, b := c.do("POST", "/v1/keys/verify", auth, strings.NewReader(body)); code != 200 {
			t.Errorf("Authorization %q: status %d %s, want 200", auth, code, b)
		}
	}
	// Two Authorization headers are refused rather than guessed at.
	req, _ := http.NewRequest("POST", c.base+"/v1/keys/verify", strings.NewReader(body))
	req.Header.Add("Authorization", "Bearer wrong")
	req.Header.Add("Authorization", "Bearer "+secret)
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("two Authorization headers: status %d, want 401", resp.StatusCode)
	}
}

func TestHTTPSecretRotationGrace(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	_, tok := env.createKey(model.KeySpec{Name: "k"})
	old := env.secret()
	fresh, _, err := env.st.RotateSecret(rootOp, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"key":"` + tok + `"}`
	for _, s := range []string{old, fresh} {
		if code, _, b := c.do("POST", "/v1/keys/verify", "Bearer "+s, strings.NewReader(body)); code != 200 {
			t.Fatalf("during grace: status %d %s", code, b)
		}
	}
	env.clock.Advance(61 * time.Minute)
	if code, _, _ := c.do("POST", "/v1/keys/verify", "Bearer "+old, strings.NewReader(body)); code != 401 {
		t.Fatalf("previous secret after grace: status %d, want 401", code)
	}
	if code, _, _ := c.do("POST", "/v1/keys/verify", "Bearer "+fresh, strings.NewReader(body)); code != 200 {
		t.Fatalf("current secret after grace: status %d, want 200", code)
	}
	// Rotation without grace revokes the old secret at once.
	newest, _, err := env.st.RotateSecret(rootOp, 0)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := c.do("POST", "/v1/keys/verify", "Bearer "+fresh, strings.NewReader(body)); code != 401 {
		t.Fatalf("secret rotated without grace: status %d, want 401", code)
	}
	if code, _, _ := c.do("POST", "/v1/keys/verify", "Bearer "+newest, strings.NewReader(body)); code != 200 {
		t.Fatalf("newest secret: status %d, want 200", code)
	}
}

func TestHTTPBadRequests(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	_, tok := env.createKey(model.KeySpec{Name: "k"})
	auth := "Bearer " + env.secret()
	big := `{"key":"` + tok + `","scope":"` + strings.Repeat("a", MaxVerifyBody) + `"}`
	cases := []struct {
		name, method, path, body string
		want                     int
	}{
		{"not json", "POST", "/v1/keys/verify", `key=` + tok, 400},
		{"empty", "POST", "/v1/keys/verify", ``, 400},
		{"truncated", "POST", "/v1/keys/verify", `{"key":"` + tok, 400},
		{"unknown field", "POST", "/v1/keys/verify", `{"key":"` + tok + `","token":"x"}`, 400},
		{"trailing data", "POST", "/v1/keys/verify", `{"key":"` + tok + `"} {}`, 400},
		{"trailing garbage", "POST", "/v1/keys/verify", `{"key":"` + tok + `"}x`, 400},
		{"wrong type", "POST", "/v1/keys/verify", `{"key":42}`, 400},
		{"array", "POST", "/v1/keys/verify", `["` + tok + `"]`, 400},
		{"null", "POST", "/v1/keys/verify", `null`, 400},
		{"missing key", "POST", "/v1/keys/verify", `{"scope":"coupons:read"}`, 400},
		{"too large", "POST", "/v1/keys/verify", big, 413},
		{"GET verify", "GET", "/v1/keys/verify", ``, 405},
		{"PUT verify", "PUT", "/v1/keys/verify", `{"key":"` + tok + `"}`, 405},
		{"unknown path", "GET", "/v1/keys", ``, 404},
		{"trailing newline ok", "POST", "/v1/keys/verify", `{"key":"` + tok + `"}` + "\n", 200},
	}
	for _, tc := range cases {
		code, hdr, b := c.do(tc.method, tc.path, auth, strings.NewReader(tc.body))
		if code != tc.want {
			t.Errorf("%s: status %d (%s), want %d", tc.name, code, b, tc.want)
			continue
		}
		if code == 200 {
			continue
		}
		var e struct {
			Error string `json:"error"`
		}
		if hdr.Get("Content-Type") != "application/json" || json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("%s: error answer is not JSON {error}: %q", tc.name, b)
		}
		if code == 405 && hdr.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", tc.name)
		}
	}
	// A chunked body (no Content-Length) over the limit is also 413.
	code, _, _ := c.do("POST", "/v1/keys/verify", auth, io.MultiReader(strings.NewReader(big)))
	if code != 413 {
		t.Errorf("chunked oversize body: status %d, want 413", code)
	}
	// A body of exactly the limit is read (and is bad JSON here, so 400).
	code, _, _ = c.do("POST", "/v1/keys/verify", auth, strings.NewReader(strings.Repeat(" ", MaxVerifyBody)))
	if code != 400 {
		t.Errorf("64 KiB of spaces: status %d, want 400", code)
	}
}

func TestHTTPHealthz(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	code, _, b := c.do("GET", "/healthz", "", nil)
	if code != 200 || !strings.Contains(string(b), `"ok"`) {
		t.Fatalf("healthz: %d %s", code, b)
	}
	if code, _, _ := c.do("HEAD", "/healthz", "", nil); code != 200 {
		t.Fatalf("HEAD healthz: %d", code)
	}
	if code, _, _ := c.do("POST", "/healthz", "", nil); code != 405 {
		t.Fatalf("POST healthz: %d", code)
	}
}

func TestHTTPLastUsedFromCallerIP(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	k, tok := env.createKey(model.KeySpec{Name: "k"})
	before := env.clock.Now()
	if res := c.verify(env.secret(), tok, "", ""); !res.Valid {
		t.Fatalf("%+v", res)
	}
	if err := env.st.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	got, err := env.st.Key(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastUsedFrom != "127.0.0.1" || got.LastUsedAt == nil || got.LastUsedAt.Before(before.Add(-time.Second)) {
		t.Fatalf("last used %v from %q, want now from 127.0.0.1", got.LastUsedAt, got.LastUsedFrom)
	}
}

// TestHTTPLogsCarryNoSecrets checks the request log names keys by id or
// hint, never by token or shared secret, and never carries raw control
// characters even when the request path holds some.
func TestHTTPLogsCarryNoSecrets(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	k, tok := env.createKey(model.KeySpec{Name: "k"})
	secret := env.secret()
	unknown, _ := model.GenerateToken("")
	c.verify(secret, tok, "", "")
	c.verify(secret, unknown.String(), "", "")
	c.verify(secret, "kw_garbage-secret-looking-thing", "", "")
	c.do("POST", "/v1/keys/verify", "Bearer "+secret+"nope", strings.NewReader(`{"key":"`+tok+`"}`))
	c.do("POST", "/v1/keys/verify", "Bearer "+secret, strings.NewReader(`{"key":"`+tok+`","x":1}`))
	// A raw request whose path decodes to ESC [ 2 J and a BEL.
	conn, err := net.Dial("tcp", srv.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /%%1b[2J%%07evil HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		resp.Body.Close()
	}
	conn.Close()
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	logs := srv.logs.String()
	t.Logf("server log:\n%s", logs)
	for _, bad := range []string{tok, secret, unknown.String(), "garbage-secret", tok[3:20], secret[4:20]} {
		if strings.Contains(logs, bad) {
			t.Errorf("log contains secret material %q:\n%s", bad, logs)
		}
	}
	for _, want := range []string{"key=" + k.ID, "hint=" + unknown.Hint(), "status=401", "status=400", "status=404", "code=NOT_FOUND", "code=MALFORMED"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	for _, r := range logs {
		if r != '\n' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0)) {
			t.Fatalf("log contains control character %U:\n%q", r, logs)
		}
	}
}

// TestHTTPGracefulShutdown: verifications done just before shutdown are
// in last_used_at after the store is closed and reopened, and a request
// in flight when shutdown starts still gets its answer.
func TestHTTPGracefulShutdown(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	c := newHTTPClient(t, srv)
	secret := env.secret()
	var ids []string
	for i := range 5 {
		k, tok := env.createKey(model.KeySpec{Name: fmt.Sprintf("k%d", i)})
		ids = append(ids, k.ID)
		if res := c.verify(secret, tok, "", ""); !res.Valid {
			t.Fatalf("%+v", res)
		}
	}
	// One more request in flight: headers and half the body sent.
	k, tok := env.createKey(model.KeySpec{Name: "inflight"})
	ids = append(ids, k.ID)
	body := `{"key":"` + tok + `"}`
	conn, err := net.Dial("tcp", srv.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", secret, len(body), body[:10])
	time.Sleep(100 * time.Millisecond) // let the server start reading it

	done := make(chan error, 1)
	go func() { done <- srv.stop(t) }()
	time.Sleep(200 * time.Millisecond)
	if _, err := http.Get("http://" + srv.httpAddr + "/healthz"); err == nil {
		t.Errorf("server still accepts new connections during shutdown")
	}
	if _, err := io.WriteString(conn, body[10:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request got no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"VALID"`) {
		t.Fatalf("in-flight request: %d %s", resp.StatusCode, b)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}

	// What main.go does next: close the store; then a restart reopens it.
	if err := env.st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(env.path, storeOptions(t, env.clock))
	if err != nil {
		t.Fatal(err)
	}
	env.st = st
	for _, id := range ids {
		k, err := st.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		if k.LastUsedAt == nil || k.LastUsedFrom != "127.0.0.1" {
			t.Errorf("key %s: last used %v from %q after restart", id, k.LastUsedAt, k.LastUsedFrom)
		}
	}
}

func TestAppendResultMatchesEncodingJSON(t *testing.T) {
	exp := time.Date(2031, 2, 3, 4, 5, 6, 789, time.UTC)
	local := time.Date(2031, 2, 3, 4, 5, 6, 0, time.FixedZone("x", 3600))
	for _, res := range []model.VerifyResult{
		{Code: model.CodeMalformed, Reason: "ignored"},
		{Valid: true, Code: model.CodeValid, KeyID: "key_abcdefghijkl", Role: model.RoleAdmin, ExpiresAt: &exp},
		{Code: model.CodeExpired, KeyID: "key_abcdefghijkl", Role: model.RoleEditor, ExpiresAt: &local},
		{Code: model.Code("we\"ird<>&\u2028\x01é\xff")},
	} {
		want, _ := json.Marshal(struct {
			Valid     bool       `json:"valid"`
			Code      model.Code `json:"code"`
			KeyID     string     `json:"key_id,omitempty"`
			Role      model.Role `json:"role,omitempty"`
			ExpiresAt *time.Time `json:"expires_at"`
		}{res.Valid, res.Code, res.KeyID, res.Role, res.ExpiresAt})
		got := appendResult(nil, &res)
		if string(got) != string(want)+"\n" {
			t.Errorf("appendResult:\n got %s\nwant %s", got, want)
		}
	}
}

func TestBearer(t *testing.T) {
	for in, want := range map[string]string{
		"Bearer abc": "abc", "bearer abc": "abc", "BeArEr   abc": "abc",
		"Bearerabc": "", "Basic abc": "", "": "", "Bearer": "", "Bear abc": "",
	} {
		if got := bearer([]string{in}); got != want {
			t.Errorf("bearer(%q) = %q, want %q", in, got, want)
		}
	}
	if bearer(nil) != "" || bearer([]string{"Bearer a", "Bearer b"}) != "" {
		t.Error("missing or repeated headers must give no credentials")
	}
}

func TestReadBodyLimit(t *testing.T) {
	for _, n := range []int{0, 1, 2047, 2048, 2049, MaxVerifyBody - 1, MaxVerifyBody} {
		b, err := readBody(bytes.NewReader(make([]byte, n)), make([]byte, 0, 2048), MaxVerifyBody)
		if err != nil || len(b) != n {
			t.Errorf("%d bytes: got %d, %v", n, len(b), err)
		}
	}
	_, err := readBody(bytes.NewReader(make([]byte, MaxVerifyBody+1)), nil, MaxVerifyBody)
	if !errors.Is(err, errTooLarge) {
		t.Errorf("over the limit: %v", err)
	}
}

// TestAppendJSONStringMatchesEncodingJSON: the hand-written encoder of
// the verify answer escapes exactly as encoding/json does, on the fast
// plain-prefix path and after it.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "VALID", "key_abcdefghijkl", "READONLY", "a\"b", `back\slash`, "<script>&", "tab\there",
		"line\nbreak\r", "\x00\x01\x1f\x7f", "caf\u00e9", "\u2028\u2029", "bad\xffutf8", "plain then \x1b[31m",
		strings.Repeat("x", 300) + "\"",
	} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("appendJSONString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	}
}
