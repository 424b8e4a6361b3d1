package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// TestServeTLS runs the binary with --http-tls-cert/--http-tls-key and
// JSON logs: verify and /healthz answer over HTTPS; a rotated pair is
// presented to new handshakes after a real SIGHUP (polling is off, so
// only the signal can have done it); every stderr line is a JSON object
// and none holds the token or the shared secret.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.Create("--name", "gateway", "--scope", "coupons:read")
	secret := testkit.Decode[map[string]any](t, e.OK("secret", "show", "--json"))["secret"].(string)
	ca := testkit.NewTLSCA(t)
	certPath, keyPath := filepath.Join(e.Dir, "tls.crt"), filepath.Join(e.Dir, "tls.key")
	ca.Leaf(t, "first", time.Time{}, time.Time{}).Write(t, certPath, keyPath)

	addr := testkit.FreeAddr(t)
	logPath := filepath.Join(e.Dir, "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := e.command(ctx, "serve", "--ssh", "", "--http", addr, "--http-tls-cert", certPath, "--http-tls-key", keyPath,
		"--http-tls-poll", "0", "--log-format", "json")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.TLSClientConfig()}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if strings.Contains(logs(), "http listening on "+addr) {
			if resp, err := client.Get("https://" + addr + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("/healthz over TLS: %d", resp.StatusCode)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never answered /healthz over TLS:\n%s", logs())
		}
		time.Sleep(50 * time.Millisecond)
	}

	req, _ := http.NewRequest("POST", "https://"+addr+"/v1/keys/verify", strings.NewReader(fmt.Sprintf(`{"key": %q, "scope": "coupons:read"}`, k.Token)))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res model.VerifyResult
	err = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if err != nil || res.Code != model.CodeValid || res.KeyID != k.ID || resp.TLS == nil {
		t.Fatalf("verify over TLS: %d %+v %v", resp.StatusCode, res, err)
	}

	peer := func() string {
		c, err := tls.Dial("tcp", addr, ca.TLSClientConfig())
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	ca.Leaf(t, "second", time.Time{}, time.Time{}).Write(t, certPath, keyPath)
	time.Sleep(100 * time.Millisecond)
	if got := peer(); got != "first" {
		t.Fatalf("with polling off, the new pair was picked up without a signal: %s", got)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); peer() != "second"; {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload the pair in 5 s:\n%s", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve did not stop cleanly: %v\n%s", err, logs())
	}
	out := logs()
	if strings.Contains(out, k.Token) || strings.Contains(out, secret) {
		t.Fatal("serve logged the token or the shared secret")
	}
	var sawReload, sawVerify bool
	for _, ln := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(ln), &rec); err != nil || rec["time"] == nil || rec["msg"] == nil {
			t.Fatalf("not a JSON log record: %q (%v)", ln, err)
		}
		sawReload = sawReload || rec["reason"] == "sighup"
		sawVerify = sawVerify || rec["code"] == "VALID" && rec["key"] == k.ID
	}
	if !sawReload || !sawVerify {
		t.Fatalf("reload %v, verify %v not logged as fields:\n%s", sawReload, sawVerify, out)
	}
}

// TestServeTLSFlags: half a pair and TLS without HTTP are usage errors;
// a key others may read is refused at start with the reason, as a JSON
// record under --log-format json.
func TestServeTLSFlags(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := testkit.NewTLSCA(t)
	certPath, keyPath := filepath.Join(e.Dir, "tls.crt"), filepath.Join(e.Dir, "tls.key")
	ca.Leaf(t, "x", time.Time{}, time.Time{}).Write(t, certPath, keyPath)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-tls-cert", certPath}, "--http-tls-cert needs --http-tls-key"},
		{[]string{"--http-tls-key", keyPath}, "--http-tls-key needs --http-tls-cert"},
		{[]string{"--http", "", "--http-tls-cert", certPath, "--http-tls-key", keyPath}, "need the HTTP side"},
		{[]string{"--log-format", "xml"}, `--log-format: log format "xml"`},
	} {
		r := e.Run("", append([]string{"serve", "--ssh", "127.0.0.1:0", "--http", "127.0.0.1:0"}, c.args...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("serve %v: %s; want exit 2 and %q", c.args, r, c.want)
		}
	}
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.Run("", "serve", "--ssh", "", "--http", "127.0.0.1:0", "--http-tls-cert", certPath, "--http-tls-key", keyPath, "--log-format", "json")
	if r.Code != 1 || !strings.Contains(r.Stderr, "it has mode 0644") {
		t.Fatalf("a key readable by others: %s", r)
	}
	var last map[string]any
	for _, ln := range strings.Split(strings.TrimSpace(r.Stderr), "\n") {
		if err := json.Unmarshal([]byte(ln), &last); err != nil {
			t.Fatalf("not JSON: %q", ln)
		}
	}
	if last["level"] != "ERROR" {
		t.Fatalf("the exit error is not an ERROR record: %v", last)
	}
}
