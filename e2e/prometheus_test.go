package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// A real Prometheus (Debian's package) scrapes a running keyward serve
// --metrics: its own query API then reports the target up and keyward's
// series. The test fails, never skips, without the prometheus binary
// (apt-get install prometheus; .ci/run installs it).
func TestPrometheusScrapesServe(t *testing.T) {
	t.Parallel()
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed (apt-get install prometheus): %v", err)
	}
	e := newEnv(t)
	k := e.Create("--name", "gateway", "--scope", "coupons:read")
	secret := testkit.Decode[map[string]any](t, e.OK("secret", "show", "--json"))["secret"].(string)
	maddr := testkit.FreeAddr(t)
	srv := e.startServe("--ssh", "", "--metrics", maddr)
	testkit.WaitFor(t, 10*time.Second, "metrics listening", func() bool {
		return strings.Contains(srv.logs(), "metrics listening on "+maddr)
	})
	body := fmt.Sprintf(`{"key": %q, "scope": "coupons:read"}`, k.Token)
	req, _ := http.NewRequest("POST", "http://"+srv.httpAddr+"/v1/keys/verify", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("verify: %d", resp.StatusCode)
	}

	// Prometheus with its own config and data directory, on a free port.
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: keyward
    static_configs:
      - targets: [%q]
`, maddr)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	paddr := testkit.FreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prom,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+paddr,
		"--log.level=warn")
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	promLogs := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	query := func(q string) (string, bool) {
		resp, err := http.Get("http://" + paddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return err.Error(), false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var out struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  []any             `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &out); err != nil || out.Status != "success" || len(out.Data.Result) != 1 || len(out.Data.Result[0].Value) != 2 {
			return string(b), false
		}
		v, _ := out.Data.Result[0].Value[1].(string)
		return v, true
	}
	var last string
	wait := func(q, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			v, ok := query(q)
			if ok && v == want {
				return
			}
			last = v
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus: %s = %q, want %q\nprometheus log:\n%s\nserve log:\n%s", q, last, want, promLogs(), srv.logs())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wait(`up{job="keyward"}`, "1")
	wait(`keyward_verifications_total{job="keyward",code="VALID"}`, "1")
	wait(`keyward_keys{job="keyward",status="active"}`, "1")
	srv.stop()
}
