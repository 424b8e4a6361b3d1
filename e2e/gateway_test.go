package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/etcdtest"
	"github.com/keyward/keyward/internal/testkit"
)

// TestGateways: the real nginx (auth_request) and the real Caddy
// (forward_auth), each on the config shipped in docs/gateways/, in front
// of a recording upstream, ask a real keyward serve (on etcd, so a key can
// be disabled through the CLI while it serves) at /v1/auth:
//   - a VALID key reaches the upstream, which gets the key id and role
//     from keyward (what the client sent under those names is replaced),
//     by X-API-Key or Authorization: Bearer; a query of the client's own
//     cannot change the route's scope
//   - no key → 401 with WWW-Authenticate; a key without the route's scope
//     → 403; a key disabled a moment ago → 401; none reaches the upstream
//   - the same gateway with a wrong shared secret → a 5xx for every
//     request, valid key or not, and nothing reaches the upstream.
func TestGateways(t *testing.T) {
	c := &kwCluster{t: t, dir: t.TempDir()}
	c.etcd = etcdtest.Start(t, 1)
	c.prefix = fmt.Sprintf("/kwgw-%d/", time.Now().UnixNano()%1e6)
	c.master = filepath.Join(c.dir, "master.key")
	c.bootstrap()
	node := c.startNode()
	up := startUpstream(t)

	for _, gw := range []struct {
		name  string
		start func(*testing.T, gatewayVars) *gatewayProc
	}{{"nginx", startNginx}, {"caddy", startCaddy}} {
		t.Run(gw.name, func(t *testing.T) {
			c.t = t // CLI failures fail the subtest
			eps := c.etcd.Endpoints()
			shop := c.create(eps, gw.name+"-shop", "--resource", "web-shop")
			victim := c.create(eps, gw.name+"-victim", "--resource", "web-shop")
			other := testkit.Decode[cliKey](t, c.ok(eps, "keys", "create", "--json", "--name", gw.name+"-campaigns", "--scope", "campaigns:read"))

			g := gw.start(t, gatewayVars{KeywardAddr: node.httpAddr, Secret: c.secret, Upstream: up.addr})
			bad := gw.start(t, gatewayVars{KeywardAddr: node.httpAddr, Secret: c.secret + "-wrong", Upstream: up.addr})

			// VALID: the upstream gets the key id and role from keyward.
			for _, hdr := range []map[string]string{
				{"X-API-Key": shop.Token, "X-Keyward-Key-Id": "key_spoofed", "X-Keyward-Role": "ADMIN"},
				{"Authorization": "Bearer " + shop.Token},
			} {
				n := up.count()
				resp, body := gatewayGet(t, g, "/coupons/list?scope=campaigns:read&resource=loyalty", hdr)
				if resp.StatusCode != 200 || body != "upstream" || up.count() != n+1 {
					t.Fatalf("valid key: %d %q (upstream reached %d times)\n%s\n%s", resp.StatusCode, body, up.count()-n, g, testkit.Tail(node.logs(), 10))
				}
				if h := up.last(); h.Get("X-Keyward-Key-Id") != shop.ID || h.Get("X-Keyward-Role") != "EDITOR" || len(h.Values("X-Keyward-Key-Id")) != 1 {
					t.Fatalf("the upstream got key id %q role %q, want %s EDITOR", h.Values("X-Keyward-Key-Id"), h.Values("X-Keyward-Role"), shop.ID)
				}
			}

			refused := func(what string, hdr map[string]string, want int) {
				t.Helper()
				n := up.count()
				resp, body := gatewayGet(t, g, "/coupons/list", hdr)
				if resp.StatusCode != want || up.count() != n {
					t.Fatalf("%s: %d %q (upstream reached %d times), want %d\n%s", what, resp.StatusCode, body, up.count()-n, want, g)
				}
				if want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: WWW-Authenticate %q", what, resp.Header.Get("WWW-Authenticate"))
				}
			}
			refused("no key", nil, 401)
			refused("wrong scope", map[string]string{"X-API-Key": other.Token}, 403)
			refused("unknown key", map[string]string{"X-API-Key": shop.Token[:len(shop.Token)-4] + "AAAA"}, 401)

			// Disabled a moment ago: VALID first, then 401 as soon as this
			// node has seen the disable (the gateway caches nothing).
			if resp, _ := gatewayGet(t, g, "/coupons/list", map[string]string{"X-API-Key": victim.Token}); resp.StatusCode != 200 {
				t.Fatalf("victim before the disable: %d", resp.StatusCode)
			}
			c.ok(eps, "keys", "disable", victim.ID)
			start := time.Now()
			n := up.count()
			for {
				resp, _ := gatewayGet(t, g, "/coupons/list", map[string]string{"X-API-Key": victim.Token})
				if resp.StatusCode == 401 {
					break
				}
				if resp.StatusCode != 200 || time.Since(start) > 5*time.Second {
					t.Fatalf("the disabled key: %d after %s", resp.StatusCode, time.Since(start))
				}
				n = up.count()
				time.Sleep(5 * time.Millisecond)
			}
			if up.count() != n {
				t.Fatalf("the disabled key's refused request reached the upstream")
			}
			t.Logf("%s: the key disabled through the CLI was refused %s after the CLI returned", gw.name, time.Since(start).Round(time.Millisecond))

			// The gateway's own secret wrong: an error, never the upstream.
			n = up.count()
			for _, hdr := range []map[string]string{{"X-API-Key": shop.Token}, nil} {
				resp, body := gatewayGet(t, bad, "/coupons/list", hdr)
				if resp.StatusCode < 500 || resp.StatusCode > 599 {
					t.Fatalf("wrong gateway secret: %d %q, want a 5xx\n%s", resp.StatusCode, body, bad)
				}
			}
			if up.count() != n {
				t.Fatalf("a request through the gateway with the wrong secret reached the upstream")
			}
		})
	}
	c.t = t
	testkit.WaitFor(t, 5*time.Second, "the refused gateway in serve's log", func() bool {
		return strings.Contains(node.logs(), "refused the gateway")
	})
	logs := node.logs()
	if strings.Contains(logs, c.secret) {
		t.Fatalf("serve logged the shared secret")
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "kw_") && !strings.Contains(line, "hint=kw_") {
			t.Fatalf("serve logged something token-like: %q", line)
		}
	}
}
