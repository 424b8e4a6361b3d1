package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// The conformance test of server/openapi.json: a real server (real bbolt
// file, real listener) is driven into every status the document lists for
// every operation, and every answer it gives, to those requests and to
// every method on every path, must be one the document lists, with the
// documented headers and a body that matches the documented schema. A
// status or a body member the document lacks fails, and so does a
// documented status the drivers never saw.
//
// The schemas are checked by oaSchema below, a checker for the subset of
// JSON Schema 2020-12 the document uses. It refuses any keyword it does
// not know, so the document cannot grow a constraint that goes unchecked.
// A full validator (santhosh-tekuri/jsonschema) would be a new module
// dependency for nine small schemas.

type oaDoc struct {
	root map[string]any
}

func loadOpenAPI(t *testing.T) *oaDoc {
	t.Helper()
	var root map[string]any
	dec := json.NewDecoder(bytes.NewReader(openAPIDoc))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if v := root["openapi"]; v != "3.1.0" {
		t.Fatalf("openapi.json: openapi %v, want 3.1.0", v)
	}
	return &oaDoc{root: root}
}

// deref follows a local $ref ("#/components/...").
func (d *oaDoc) deref(n any) map[string]any {
	m, _ := n.(map[string]any)
	for i := 0; m != nil && i < 10; i++ {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = d.root
		for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cm, _ := cur.(map[string]any)
			cur = cm[p]
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}

// response returns the documented answer for status to method on path,
// and the key under which coverage is counted.
func (d *oaDoc) response(path, method string, status int) (map[string]any, string, error) {
	paths := d.root["paths"].(map[string]any)
	code := strconv.Itoa(status)
	item, ok := paths[path].(map[string]any)
	if !ok {
		r := d.deref(d.root["x-keyward-any-path"].(map[string]any)[code])
		if r == nil || status != 404 {
			return nil, "", fmt.Errorf("%s %s (no such path): status %d, want the documented 404", method, path, status)
		}
		return r, "any 404", nil
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		if other, ok := item["x-keyward-other-methods"].(map[string]any); ok {
			r := d.deref(other[code])
			if r == nil {
				return nil, "", fmt.Errorf("%s %s (method not documented): status %d is not in the path's x-keyward-other-methods", method, path, status)
			}
			return r, path + " other " + code, nil
		}
		r := d.deref(d.root["x-keyward-any-path"].(map[string]any)[code])
		if r == nil || status != 405 {
			return nil, "", fmt.Errorf("%s %s (method not documented): status %d, want the documented 405", method, path, status)
		}
		return r, "any 405", nil
	}
	r := d.deref(op["responses"].(map[string]any)[code])
	if r == nil {
		return nil, "", fmt.Errorf("%s %s: status %d is not documented", method, path, status)
	}
	return r, method + " " + path + " " + code, nil
}

// documented lists every documented path, method and status as coverage
// keys, with the path.
func (d *oaDoc) documented() map[string]string {
	out := map[string]string{"any 404": "", "any 405": ""}
	for path, item := range d.root["paths"].(map[string]any) {
		if other, ok := item.(map[string]any)["x-keyward-other-methods"].(map[string]any); ok {
			for code := range other {
				out[path+" other "+code] = path
			}
		}
		for _, m := range methods {
			op, ok := item.(map[string]any)[strings.ToLower(m)].(map[string]any)
			if !ok {
				continue
			}
			for code := range op["responses"].(map[string]any) {
				out[m+" "+path+" "+code] = path
			}
		}
	}
	return out
}

// check validates one answer against the document and returns its
// coverage key.
func (d *oaDoc) check(path, method string, resp *http.Response, body []byte) (string, error) {
	doc, key, err := d.response(path, method, resp.StatusCode)
	if err != nil {
		return "", fmt.Errorf("%w (body %.200q)", err, body)
	}
	where := fmt.Sprintf("%s %s %d", method, path, resp.StatusCode)
	hdrs, _ := doc["headers"].(map[string]any)
	for name, h := range hdrs {
		hm := d.deref(h)
		vals := resp.Header.Values(name)
		if len(vals) == 0 {
			if hm["required"] == true {
				return "", fmt.Errorf("%s: documented header %s missing (headers %v)", where, name, resp.Header)
			}
			continue
		}
		if len(vals) != 1 {
			return "", fmt.Errorf("%s: header %s sent %d times", where, name, len(vals))
		}
		if err := d.checkHeader(hm["schema"], vals[0]); err != nil {
			return "", fmt.Errorf("%s: header %s: %v", where, name, err)
		}
	}
	for name := range resp.Header {
		if !strings.HasPrefix(name, "X-Keyward-") {
			continue
		}
		found := false
		for dn := range hdrs {
			found = found || http.CanonicalHeaderKey(dn) == name
		}
		if !found {
			return "", fmt.Errorf("%s: header %s is not documented", where, name)
		}
	}
	content, _ := doc["content"].(map[string]any)
	if len(content) == 0 || method == "HEAD" {
		if len(body) != 0 {
			return "", fmt.Errorf("%s: a body (%.200q) where the document has none", where, body)
		}
		return key, nil
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		return "", fmt.Errorf("%s: Content-Type %q: %v", where, resp.Header.Get("Content-Type"), err)
	}
	media, ok := content[mt].(map[string]any)
	if !ok {
		return "", fmt.Errorf("%s: Content-Type %s is not documented", where, mt)
	}
	var v any = string(body)
	if mt == "application/json" {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return "", fmt.Errorf("%s: body %.200q: %v", where, body, err)
		}
		if dec.More() {
			return "", fmt.Errorf("%s: data after the JSON body %.200q", where, body)
		}
	}
	if err := d.validate(media["schema"], v, "body"); err != nil {
		return "", fmt.Errorf("%s: %v (body %.300q)", where, err, body)
	}
	return key, nil
}

// checkHeader validates a header value: an integer schema must parse as
// one, anything else is a string.
func (d *oaDoc) checkHeader(schema any, val string) error {
	s := d.deref(schema)
	if s["type"] == "integer" {
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", val)
		}
		return d.validate(s, json.Number(strconv.FormatInt(n, 10)), "header")
	}
	return d.validate(s, val, "header")
}

// validate checks v (decoded with UseNumber) against a schema of the
// subset: $ref, type, properties, required, additionalProperties (false
// only, and required wherever properties are listed), enum, const, oneOf,
// format date-time, minLength, minimum, description.
func (d *oaDoc) validate(schema any, v any, at string) error {
	s := d.deref(schema)
	if s == nil {
		return fmt.Errorf("%s: no schema", at)
	}
	for k := range s {
		switch k {
		case "type", "properties", "required", "additionalProperties", "enum", "const", "oneOf", "format", "minLength", "minimum", "description":
		default:
			return fmt.Errorf("%s: schema keyword %q is not supported by the test's checker: extend oaDoc.validate", at, k)
		}
	}
	if t, ok := s["type"]; ok {
		var types []any
		if ts, ok := t.([]any); ok {
			types = ts
		} else {
			types = []any{t}
		}
		match := false
		for _, t := range types {
			match = match || jsonType(v, t.(string))
		}
		if !match {
			return fmt.Errorf("%s: %T %v is not of type %v", at, v, v, t)
		}
	}
	if c, ok := s["const"]; ok && fmt.Sprint(c) != fmt.Sprint(v) {
		return fmt.Errorf("%s: %v, want %v", at, v, c)
	}
	if e, ok := s["enum"].([]any); ok {
		found := false
		for _, x := range e {
			found = found || fmt.Sprint(x) == fmt.Sprint(v)
		}
		if !found {
			return fmt.Errorf("%s: %v is not one of %v", at, v, e)
		}
	}
	if str, ok := v.(string); ok {
		if n, ok := s["minLength"].(json.Number); ok {
			if min, _ := n.Int64(); int64(len([]rune(str))) < min {
				return fmt.Errorf("%s: %q shorter than %d", at, str, min)
			}
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				return fmt.Errorf("%s: %q is not a date-time: %v", at, str, err)
			}
		}
	}
	if n, ok := v.(json.Number); ok {
		if m, ok := s["minimum"].(json.Number); ok {
			if a, b := n.String(), m.String(); mustFloat(a) < mustFloat(b) {
				return fmt.Errorf("%s: %s below %s", at, a, b)
			}
		}
	}
	if alts, ok := s["oneOf"].([]any); ok {
		var n int
		var errs []string
		for _, alt := range alts {
			if err := d.validate(alt, v, at); err == nil {
				n++
			} else {
				errs = append(errs, err.Error())
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: matches %d of oneOf, want 1 (%s)", at, n, strings.Join(errs, "; "))
		}
	}
	obj, isObj := v.(map[string]any)
	props, hasProps := s["properties"].(map[string]any)
	if !isObj {
		return nil
	}
	if hasProps && s["additionalProperties"] != false {
		return fmt.Errorf("%s: a schema that lists properties must set additionalProperties false, or an undocumented member would pass", at)
	}
	req, _ := s["required"].([]any)
	for _, r := range req {
		if _, ok := obj[r.(string)]; !ok {
			return fmt.Errorf("%s: required member %q missing", at, r)
		}
	}
	for k, val := range obj {
		ps, ok := props[k]
		if !ok {
			if hasProps {
				return fmt.Errorf("%s: member %q is not documented", at, k)
			}
			continue
		}
		if err := d.validate(ps, val, at+"."+k); err != nil {
			return err
		}
	}
	return nil
}

func mustFloat(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

func jsonType(v any, t string) bool {
	switch t {
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		_, err := strconv.ParseInt(string(n), 10, 64)
		return ok && err == nil
	case "number":
		_, ok := v.(json.Number)
		return ok
	}
	return false
}

// exchange sends req on a new connection to addr and reads the answer (a
// raw round trip: it also reads the answer of a connection the cap
// refuses before reading the request).
func exchange(addr string, req *http.Request) (*http.Response, []byte, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(c); err != nil && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "broken pipe") {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestOpenAPIConformance: see the top of this file.
func TestOpenAPIConformance(t *testing.T) {
	doc := loadOpenAPI(t)
	e := newEnv(t)
	exp := e.clock.Now().Add(30 * 24 * time.Hour)
	_, valid := e.createKey(model.KeySpec{Name: "svc", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}, ExpiresAt: &exp})
	dk, disabled := e.createKey(model.KeySpec{Name: "gone"})
	if _, err := e.st.SetKeyActive(rootOp, dk.ID, false); err != nil {
		t.Fatal(err)
	}
	var stale atomic.Bool
	staleFn := func() error {
		if stale.Load() {
			return fmt.Errorf("%w: no word from etcd for 17s", store.ErrStale)
		}
		return nil
	}
	metricsAddr := testkit.FreeAddr(t)
	srv := e.serve(Config{SSHAddr: "-", Stale: staleFn, MetricsAddr: metricsAddr})
	// busy: a second server over the same store with one connection slot,
	// which the test fills with a request in progress.
	busySrv := e.serve(Config{SSHAddr: "-", HTTPMaxConns: 1})
	secret := e.secret()

	covered := map[string]bool{}
	var failures []string
	do := func(addr, method, path string, hdr http.Header, body string) (*http.Response, []byte) {
		t.Helper()
		var rb io.Reader
		if body != "" {
			rb = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, "http://"+addr+path, rb)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, rbody, err := exchange(addr, req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		p := path
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		key, err := doc.check(p, method, resp, rbody)
		if err != nil {
			failures = append(failures, err.Error())
		} else {
			covered[key] = true
		}
		return resp, rbody
	}
	bearer := func(s string) http.Header { return http.Header{"Authorization": {"Bearer " + s}} }
	withHdr := func(h http.Header, k, v string) http.Header {
		h = h.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set(k, v)
		return h
	}
	big := func(h http.Header) http.Header { return withHdr(h, "X-Pad", strings.Repeat("a", HTTPMaxHeaderBlock)) }
	a := srv.httpAddr

	// Which pending endpoints this server serves.
	addrOf := func(path string) string {
		if path == "/metrics" {
			return metricsAddr
		}
		return a
	}
	// POST /v1/keys/verify
	vb := verifyBody(valid)
	if resp, body := do(a, "POST", "/v1/keys/verify", bearer(secret), vb); resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"VALID"`)) {
		t.Errorf("verify: %d %s", resp.StatusCode, body)
	}
	for _, b := range []string{verifyBody(disabled), `{"key":"kw_nope"}`, `{"key":"` + valid + `","scope":"coupons:write"}`, `{"key":"` + valid + `","scope":"coupons:read","resource":"loyalty"}`} {
		do(a, "POST", "/v1/keys/verify", bearer(secret), b)
	}
	for _, b := range []string{"", "{", `{"key":1}`, `{"key":"x","extra":"y"}`, `{"key":"x"} []`} {
		do(a, "POST", "/v1/keys/verify", bearer(secret), b)
	}
	do(a, "POST", "/v1/keys/verify", bearer("wrong"), vb)
	do(a, "POST", "/v1/keys/verify", nil, vb)
	do(a, "POST", "/v1/keys/verify", bearer(secret), `{"key":"`+strings.Repeat("a", MaxVerifyBody)+`"}`)
	do(a, "POST", "/v1/keys/verify", big(bearer(secret)), vb)

	// GET|HEAD /healthz, /v1/openapi.json
	for _, m := range []string{"GET", "HEAD"} {
		do(a, m, "/healthz", nil, "")
		do(a, m, "/healthz", big(nil), "")
		resp, body := do(a, m, "/v1/openapi.json", nil, "")
		if m == "GET" && !bytes.Equal(body, openAPIDoc) {
			t.Errorf("GET /v1/openapi.json: %d, body is not the document", resp.StatusCode)
		}
		if r, _ := do(a, m, "/v1/openapi.json", withHdr(nil, "If-None-Match", resp.Header.Get("ETag")), ""); r.StatusCode != 304 {
			t.Errorf("%s /v1/openapi.json with its ETag: %d, want 304", m, r.StatusCode)
		}
		do(a, m, "/v1/openapi.json", big(nil), "")
	}

	// /metrics and /v1/auth, once served.
	{
		for _, m := range []string{"GET", "HEAD"} {
			if resp, body := do(metricsAddr, m, "/metrics", nil, ""); m == "GET" && !bytes.Contains(body, []byte("keyward_verifications_total")) {
				t.Errorf("GET /metrics: %d, no keyward_verifications_total in %.300q", resp.StatusCode, body)
			}
			do(metricsAddr, m, "/metrics", big(nil), "")
		}
	}
	authReqs := func(m string) {
		gw := http.Header{"X-Keyward-Secret": {secret}}
		q := "/v1/auth?scope=coupons:read&resource=web-shop"
		do(a, m, q, withHdr(gw, "Authorization", "Bearer "+valid), "")
		do(a, m, q, withHdr(gw, "X-API-Key", valid), "")
		do(a, m, q, gw, "")
		do(a, m, q, withHdr(gw, "X-API-Key", disabled), "")
		do(a, m, q, withHdr(gw, "X-API-Key", "kw_nope"), "")
		do(a, m, "/v1/auth?scope=coupons:write&resource=web-shop", withHdr(gw, "X-API-Key", valid), "")
		do(a, m, "/v1/auth?scope=coupons:read&resource=loyalty", withHdr(gw, "X-API-Key", valid), "")
		do(a, m, q, http.Header{"X-Keyward-Secret": {"wrong"}, "X-Api-Key": {valid}}, "")
		do(a, m, q, http.Header{"X-Api-Key": {valid}}, "")
		do(a, m, "/v1/auth?scopes=coupons:read", withHdr(gw, "X-API-Key", valid), "")
		do(a, m, q, big(withHdr(gw, "X-API-Key", valid)), "")
	}
	{
		for _, m := range methods {
			authReqs(m)
		}
	}

	// Every method on every path, and an unknown path.
	var paths []string
	for p := range doc.root["paths"].(map[string]any) {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range append(paths, "/nope", "/v1/keys") {
		for _, m := range methods {
			do(addrOf(p), m, p, bearer(secret), vb)
		}
	}

	// Stale (etcd): verify, healthz and forward auth answer 503.
	stale.Store(true)
	do(a, "POST", "/v1/keys/verify", bearer(secret), vb)
	do(a, "GET", "/healthz", nil, "")
	do(a, "HEAD", "/healthz", nil, "")
	{
		for _, m := range methods {
			do(a, m, "/v1/auth?scope=coupons:read", http.Header{"X-Keyward-Secret": {secret}, "X-Api-Key": {valid}}, "")
		}
	}
	stale.Store(false)

	// Busy: every slot holds a request in progress.
	hold := holdRequest(t, busySrv.httpAddr, "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+secret+"\r\nContent-Length: 100\r\n\r\n{")
	defer hold.Close()
	waitBusy(t, busySrv.httpAddr)
	for _, p := range paths {
		if p == "/metrics" {
			continue // its own listener, its own cap (above)
		}
		for _, m := range methods {
			item := doc.root["paths"].(map[string]any)[p].(map[string]any)
			if _, ok := item[strings.ToLower(m)]; ok {
				do(busySrv.httpAddr, m, p, bearer(secret), vb)
			}
		}
	}

	{
		// The metrics listener's own cap (16), every slot holding a
		// request in progress: a body the server waits for.
		for range 16 {
			c := holdRequest(t, metricsAddr, "POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
			defer c.Close()
		}
		waitBusy(t, metricsAddr)
		do(metricsAddr, "GET", "/metrics", nil, "")
		do(metricsAddr, "HEAD", "/metrics", nil, "")
	}

	for _, f := range failures {
		t.Error(f)
	}
	var missing []string
	for key := range doc.documented() {
		if !covered[key] {
			missing = append(missing, key)
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("documented but never answered: %s", m)
	}
}

// holdRequest opens a connection and sends the start of a request that
// keeps its slot busy (the server waits for the rest of its body).
func holdRequest(t *testing.T, addr, start string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, start); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitBusy waits until addr answers a new connection 503 (at its cap).
func waitBusy(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+addr+"/healthz", nil)
		resp, _, err := exchange(addr, req)
		if err == nil && resp.StatusCode == 503 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 503 at its connection cap: %v %v", addr, resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpenAPIFileEmbedded: the served document is the file in the
// repository (go:embed), and it is valid JSON of OpenAPI 3.1 that
// documents each path the server routes.
func TestOpenAPIFileEmbedded(t *testing.T) {
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, openAPIDoc) {
		t.Fatal("openapi.json differs from the embedded document")
	}
	doc := loadOpenAPI(t)
	src, err := os.ReadFile("http.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`case "(/[^"]*)"`).FindAllSubmatch(src, -1) {
		if _, ok := doc.root["paths"].(map[string]any)[string(m[1])]; !ok {
			t.Errorf("http.go routes %s, which openapi.json does not document", m[1])
		}
	}
}
