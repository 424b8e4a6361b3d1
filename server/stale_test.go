package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// TestStaleFailsClosed: while the node is stale (on etcd: no word from the
// cluster for --max-staleness; here Config.Stale, over a real bbolt store
// and a real listener), verify answers 503 {"error":"stale","detail"}
// with Retry-After, before even the shared secret is looked at, and
// /healthz answers 503 so a balancer drains the node. When it is current
// again it answers as before, by itself. The log says so once each way,
// not per request.
func TestStaleFailsClosed(t *testing.T) {
	e := newEnv(t)
	_, tok := e.createKey(model.KeySpec{Name: "svc"})
	var stale atomic.Pointer[error]
	r := e.serve(Config{SSHAddr: "-", Stale: func() error {
		if p := stale.Load(); p != nil {
			return *p
		}
		return nil
	}})
	secret := e.secret()
	base := "http://" + r.httpAddr
	verify := func(secret string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/v1/keys/verify", strings.NewReader(verifyBody(tok)))
		req.Header.Set("Authorization", "Bearer "+secret)
		return do(t, req)
	}
	health := func(method string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+"/healthz", nil)
		return do(t, req)
	}

	if resp, body := verify(secret); resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"VALID"`)) {
		t.Fatalf("fresh node: %d %s", resp.StatusCode, body)
	}
	errStale := fmt.Errorf("%w: no word from etcd for 17s", store.ErrStale)
	stale.Store(&errStale)
	for _, s := range []string{secret, "wrong"} {
		resp, body := verify(s)
		var got struct{ Error, Detail string }
		if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != 503 || got.Error != "stale" ||
			!strings.Contains(got.Detail, "no word from etcd for 17s") || resp.Header.Get("Retry-After") == "" ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("stale verify (secret %q): %d %v %s", s, resp.StatusCode, resp.Header, body)
		}
	}
	if resp, body := health("GET"); resp.StatusCode != 503 || !bytes.Contains(body, []byte(`"error":"stale"`)) {
		t.Fatalf("stale /healthz: %d %s", resp.StatusCode, body)
	}
	if resp, body := health("HEAD"); resp.StatusCode != 503 || len(body) != 0 {
		t.Fatalf("stale HEAD /healthz: %d %q", resp.StatusCode, body)
	}
	testkit.WaitFor(t, 5*time.Second, "the stale line in the log", func() bool {
		return strings.Contains(r.logs.String(), `stale: "not in touch with the etcd cluster: no word from etcd for 17s"; answering verify and /healthz with 503`)
	})

	stale.Store(nil)
	if resp, body := verify(secret); resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"VALID"`)) {
		t.Fatalf("recovered node: %d %s", resp.StatusCode, body)
	}
	if resp, body := health("GET"); resp.StatusCode != 200 {
		t.Fatalf("recovered /healthz: %d %s", resp.StatusCode, body)
	}
	testkit.WaitFor(t, 5*time.Second, "the recovery line in the log", func() bool {
		return strings.Contains(r.logs.String(), "in touch with etcd again")
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "stale: "); n != 1 {
		t.Errorf("the stale transition was logged %d times, want once:\n%s", n, logs)
	}
	if n := strings.Count(logs, "in touch with etcd again"); n != 1 {
		t.Errorf("the recovery was logged %d times, want once:\n%s", n, logs)
	}
	if n := strings.Count(logs, "status=503 stale"); n != 4 {
		t.Errorf("%d stale request lines, want 4:\n%s", n, logs)
	}
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// BenchmarkStaleGate is the verify handler without the stale check and
// with it, over a bbolt store (Store.Stale): the gate must cost nothing
// measurable. go test -run ^$ -bench StaleGate -benchmem ./server
func BenchmarkStaleGate(b *testing.B) {
	st, toks, secret := loadStore(b, b.TempDir(), 1000, false)
	defer st.Close()
	log := newLogSink(io.Discard)
	defer log.Close()
	for _, c := range []struct {
		name  string
		stale func() error
	}{{"off", nil}, {"on", st.Stale}} {
		b.Run(c.name, func(b *testing.B) {
			benchVerifyHandler(b, &httpAPI{st: st, log: log, stale: c.stale}, toks[0], secret)
		})
	}
}
