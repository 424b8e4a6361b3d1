package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// A second process fails fast, naming the file and its holder, while a
// long-running keyward holds the database.
func TestLockedDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.OK("keys", "list") // create the database
	srv := e.startServe("--ssh", "")

	start := time.Now()
	r := e.Run("", "keys", "list")
	took := time.Since(start)
	if took > 2*time.Second {
		t.Errorf("keys list took %v against a locked database; want ≤ 2s", took)
	}
	if r.Code != 1 {
		t.Fatalf("want exit 1, got %s", r)
	}
	for _, want := range []string{"keyward: ", e.DB, "in use", `"keyward serve"`} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r.Stderr)
		}
	}

	// Once the holder stops, the database is free again.
	srv.stop()
	e.OK("keys", "list")
}

// serve wires the store into the HTTP API: a key created by the CLI
// verifies over HTTP, the CLI is locked out meanwhile, SIGINT stops the
// server cleanly and the last use is on disk afterwards.
func TestServeHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.Create("--name", "gateway", "--scope", "coupons:read")
	secret := testkit.Decode[map[string]any](t, e.OK("secret", "show", "--json"))["secret"].(string)

	srv := e.startServe("--ssh", "")
	base := "http://" + srv.httpAddr

	body := fmt.Sprintf(`{"key": %q, "scope": "coupons:read"}`, k.Token)
	req, _ := http.NewRequest("POST", base+"/v1/keys/verify", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res model.VerifyResult
	err = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || res.Code != model.CodeValid || res.KeyID != k.ID {
		t.Fatalf("HTTP verify: status %d, %+v, %v", resp.StatusCode, res, err)
	}

	if r := e.Run("", "keys", "list"); r.Code != 1 || !strings.Contains(r.Stderr, "in use") || !strings.Contains(r.Stderr, `"keyward serve"`) {
		t.Errorf("keys list while serving: %s", r)
	}

	srv.stop()
	if logs := srv.logs(); strings.Contains(logs, k.Token) || strings.Contains(logs, secret) {
		t.Errorf("serve logged a token or the shared secret")
	}
	got := e.Key(k.ID)
	if got.LastUsedAt == nil || got.LastUsedFrom != "127.0.0.1" {
		t.Errorf("after HTTP verify: last_used_at=%v from %q", got.LastUsedAt, got.LastUsedFrom)
	}
}
