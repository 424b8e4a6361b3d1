package server

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"
	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// scrape GETs http://addr/metrics and returns its body and the parsed
// families; the exposition must parse.
func scrape(t *testing.T, addr string) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	return body, fams
}

// sample returns the value of name{labels} (counter, gauge, or a
// histogram's count), -1 when absent.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func postVerify(t *testing.T, addr, secret, body string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/keys/verify", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, _ := do(t, req)
	return resp.StatusCode
}

// TestMetricsCountVerifications: real verifications against a real
// listener move the counters by code, the latency histogram, the HTTP
// error classes and keys by status; the exposition parses.
func TestMetricsCountVerifications(t *testing.T) {
	env := newEnv(t)
	_, tok := env.createKey(model.KeySpec{Name: "checkout"})
	k2, _ := env.createKey(model.KeySpec{Name: "old"})
	if _, err := env.st.SetKeyActive(rootOp, k2.ID, false); err != nil {
		t.Fatal(err)
	}
	maddr := testkit.FreeAddr(t)
	srv := env.serve(Config{SSHAddr: "-", MetricsAddr: maddr})
	secret := env.secret()

	_, fams := scrape(t, maddr)
	if v := sample(fams, "keyward_verifications_total", "code", "VALID"); v != 0 {
		t.Fatalf("VALID before any verification: %v, want 0 (every code is listed from the start)", v)
	}
	for range 3 {
		if st := postVerify(t, srv.httpAddr, secret, verifyBody(tok)); st != 200 {
			t.Fatalf("verify: %d", st)
		}
	}
	postVerify(t, srv.httpAddr, secret, `{"key":"kw_nope"}`)
	if st := postVerify(t, srv.httpAddr, "wrong", verifyBody(tok)); st != 401 {
		t.Fatalf("wrong secret: %d", st)
	}
	resp, _ := do(t, mustReq(t, "GET", "http://"+srv.httpAddr+"/nowhere"))
	if resp.StatusCode != 404 {
		t.Fatalf("404 path: %d", resp.StatusCode)
	}

	body, fams := scrape(t, maddr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"keyward_verifications_total", []string{"code", "VALID"}, 3},
		{"keyward_verifications_total", []string{"code", "MALFORMED"}, 1},
		{"keyward_verifications_total", []string{"code", "NOT_FOUND"}, 0},
		{"keyward_verification_duration_seconds", []string{"endpoint", "verify"}, 4},
		{"keyward_verification_duration_seconds", []string{"endpoint", "auth"}, 0},
		{"keyward_http_requests_total", nil, 6},
		{"keyward_http_errors_total", []string{"class", "4xx"}, 2},
		{"keyward_http_errors_total", []string{"class", "5xx"}, 0},
		{"keyward_http_requests_in_flight", nil, 0},
		{"keyward_keys", []string{"status", "active"}, 1},
		{"keyward_keys", []string{"status", "disabled"}, 1},
		{"keyward_keys", []string{"status", "expired"}, 0},
		{"keyward_lastused_backlog", nil, 1},
		{"keyward_stale", nil, 0},
		{"keyward_ssh_sessions", nil, 0},
	} {
		if got := sample(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "keyward_lastused_flush_duration_seconds"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if fams["keyward_etcd_applied_revision"] != nil {
		t.Errorf("etcd series on a bbolt file")
	}
	// A request in progress (its headers sent, its body not yet: the
	// handler waits for it) is in flight, on one of the open connections.
	c, err := net.Dial("tcp", srv.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret + "\r\nContent-Length: 10\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "a request in flight", func() bool {
		_, fams := scrape(t, maddr)
		return sample(fams, "keyward_http_requests_in_flight") == 1 && sample(fams, "keyward_http_connections") >= 1
	})
	c.Close()
	testkit.WaitFor(t, 5*time.Second, "no request in flight", func() bool {
		_, fams := scrape(t, maddr)
		return sample(fams, "keyward_http_requests_in_flight") == 0
	})

	// No key material in the exposition.
	if bytes.Contains(body, []byte(tok)) || bytes.Contains(body, []byte(secret)) {
		t.Fatalf("a token or the shared secret appears in /metrics")
	}

	// A flush is observed and empties the backlog.
	if err := env.st.FlushLastUsed(); err != nil {
		t.Fatal(err)
	}
	_, fams = scrape(t, maddr)
	if got := sample(fams, "keyward_lastused_flush_duration_seconds"); got != 1 {
		t.Errorf("flushes observed: %v, want 1", got)
	}
	if got := sample(fams, "keyward_lastused_backlog"); got != 0 {
		t.Errorf("backlog after the flush: %v", got)
	}

	// The metrics listener serves nothing else, and the API listener no
	// metrics.
	for _, u := range []string{"http://" + maddr + "/v1/keys/verify", "http://" + srv.httpAddr + "/metrics"} {
		if resp, _ := do(t, mustReq(t, "GET", u)); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", u, resp.StatusCode)
		}
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + maddr + "/metrics"); err == nil {
		t.Errorf("the metrics listener is still open after shutdown")
	}
}

func mustReq(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestMetricsKeyStatusCached: keys by status is counted at most once per
// keyStatusTTL, however often Prometheus scrapes.
func TestMetricsKeyStatusCached(t *testing.T) {
	env := newEnv(t)
	k, _ := env.createKey(model.KeySpec{Name: "a"})
	m := newMetrics()
	if n := m.keyCounts(env.st); n.Active != 1 || n.Disabled != 0 {
		t.Fatalf("first count: %+v", n)
	}
	if _, err := env.st.SetKeyActive(rootOp, k.ID, false); err != nil {
		t.Fatal(err)
	}
	if n := m.keyCounts(env.st); n.Active != 1 {
		t.Fatalf("counted again within the TTL: %+v", n)
	}
	m.keysAt = m.keysAt.Add(-keyStatusTTL)
	if n := m.keyCounts(env.st); n.Active != 0 || n.Disabled != 1 {
		t.Fatalf("not counted again after the TTL: %+v", n)
	}
}

// TestMetricsSSH: refused logins are counted by reason, and open sessions
// are a gauge.
func TestMetricsSSH(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	maddr := testkit.FreeAddr(t)
	srv := env.serve(Config{HTTPAddr: "-", MetricsAddr: maddr})
	stranger := testkit.NewSSHKey(t)
	_, err := dialSSH(t, env, srv, "alice", gossh.PublicKeys(stranger.Signer))
	wantAuthRefused(t, err, "unknown key")

	c := mustDial(t, env, srv, "alice", k)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = sess.CombinedOutput("keys list") // no PTY: refused
	v := testkit.OpenTerm(t, c)
	v.WaitText(10*time.Second, 0, "Name")

	_, fams := scrape(t, maddr)
	if got := sample(fams, "keyward_ssh_logins_refused_total", "reason", "unknown_key"); got < 1 {
		t.Errorf("unknown_key refusals: %v", got)
	}
	if got := sample(fams, "keyward_ssh_logins_refused_total", "reason", "no_pty"); got != 1 {
		t.Errorf("no_pty refusals: %v", got)
	}
	if got := sample(fams, "keyward_ssh_sessions"); got != 1 {
		t.Errorf("sessions: %v, want 1", got)
	}
	v.Send("\x03")
	if err := v.WaitExit(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "session gauge back to 0", func() bool {
		_, fams := scrape(t, maddr)
		return sample(fams, "keyward_ssh_sessions") == 0
	})
}

// TestMetricsAuthDecision: the forward-auth hook classifies answers the
// way gateways do, and bounds its code label.
func TestMetricsAuthDecision(t *testing.T) {
	m := newMetrics()
	m.authDecision("VALID", 200)
	m.authDecision("INSUFFICIENT_SCOPE", 403)
	m.authDecision("NOT_FOUND", 401)
	m.authDecision("STALE", 503)
	m.authDecision("evil\x1b[2J", 500)
	m.verification(EndpointAuth, "VALID", time.Now())
	var nilM *metrics // metrics off: every hook is a no-op
	nilM.authDecision("VALID", 200)
	nilM.verification(EndpointVerify, "VALID", time.Now())
	nilM.sshRefused(refusedNoPTY)

	var buf bytes.Buffer
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		decision, code string
	}{{"allow", "VALID"}, {"deny", "INSUFFICIENT_SCOPE"}, {"deny", "NOT_FOUND"}, {"error", "STALE"}, {"error", "OTHER"}} {
		if got := sample(byName, "keyward_forward_auth_decisions_total", "decision", c.decision, "code", c.code); got != 1 {
			t.Errorf("decision %s code %s: %v, want 1", c.decision, c.code, got)
		}
	}
	if got := sample(byName, "keyward_verification_duration_seconds", "endpoint", "auth"); got != 1 {
		t.Errorf("auth latency count: %v", got)
	}
	if bytes.Contains(buf.Bytes(), []byte("\x1b")) {
		t.Errorf("a control character reached the exposition")
	}
}

// TestMetricsPromtool: Debian's promtool accepts the real output. It
// fails, never skips, without promtool (apt-get install prometheus).
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (apt-get install prometheus): %v", err)
	}
	env := newEnv(t)
	_, tok := env.createKey(model.KeySpec{Name: "checkout"})
	maddr := testkit.FreeAddr(t)
	srv := env.serve(Config{SSHAddr: "-", MetricsAddr: maddr})
	postVerify(t, srv.httpAddr, env.secret(), verifyBody(tok))
	body, _ := scrape(t, maddr)
	file := filepath.Join(t.TempDir(), "metrics.txt")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n(the output is in %s)", err, out, file)
	}
	t.Logf("promtool check metrics: ok %s", bytes.TrimSpace(out))
}

// TestMetricsOffCostsNothing: without MetricsAddr nothing is built, and
// the handler is the API itself, not a wrapper.
func TestMetricsOffCostsNothing(t *testing.T) {
	env := newEnv(t)
	s, err := New(Config{Store: env.st, HTTPAddr: "127.0.0.1:0", Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if s.cfg.metrics != nil || s.mside != nil {
		t.Fatalf("metrics built without MetricsAddr")
	}
	if api, ok := s.http.srv.Handler.(*httpAPI); !ok || api.m != nil {
		t.Fatalf("handler is %T, want *httpAPI without metrics", s.http.srv.Handler)
	}
}

// TestMetricsForwardAuth: /v1/auth answers through a real listener move the
// forward-auth decisions and the auth endpoint's verifications.
func TestMetricsForwardAuth(t *testing.T) {
	env := newEnv(t)
	_, tok := env.createKey(model.KeySpec{Name: "gw", Role: model.RoleEditor, Scopes: []string{"coupons:read"}})
	maddr := testkit.FreeAddr(t)
	srv := env.serve(Config{SSHAddr: "-", MetricsAddr: maddr})
	secret := env.secret()
	ask := func(query, key, gwSecret string) int {
		t.Helper()
		req := mustReq(t, "GET", "http://"+srv.httpAddr+"/v1/auth"+query)
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		if gwSecret != "" {
			req.Header.Set(AuthSecretHeader, gwSecret)
		}
		resp, _ := do(t, req)
		return resp.StatusCode
	}
	for _, c := range []struct {
		query, key, secret string
		want               int
	}{
		{"?scope=coupons:read", tok, secret, 200},
		{"?scope=campaigns:write", tok, secret, 403},
		{"", "", secret, 401},
		{"", tok, "wrong", 500},
		{"?scopes=x", tok, secret, 400},
	} {
		if got := ask(c.query, c.key, c.secret); got != c.want {
			t.Fatalf("auth %q: %d, want %d", c.query, got, c.want)
		}
	}
	_, fams := scrape(t, maddr)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"decision", "allow", "code", "VALID"}, 1},
		{[]string{"decision", "deny", "code", "INSUFFICIENT_SCOPE"}, 1},
		{[]string{"decision", "deny", "code", "MISSING"}, 1},
		{[]string{"decision", "error", "code", "GATEWAY_UNAUTHENTICATED"}, 1},
		{[]string{"decision", "error", "code", "BAD_REQUEST"}, 1},
	} {
		if got := sample(fams, "keyward_forward_auth_decisions_total", c.labels...); got != c.want {
			t.Errorf("decisions%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := sample(fams, "keyward_verification_duration_seconds", "endpoint", "auth"); got != 2 {
		t.Errorf("auth verifications observed: %v, want 2 (the two with a key and a gateway secret)", got)
	}
}
