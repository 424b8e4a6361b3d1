package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// The gateway harness: the real nginx and Caddy (Debian packages), started
// on 127.0.0.1 with the configs shipped in docs/gateways/ (only their
// placeholders filled in, so the docs cannot rot), in front of an upstream
// that records what reaches it.

// gatewayVars fills a shipped config's placeholders.
type gatewayVars struct {
	KeywardAddr, Secret, Listen, Upstream string
}

func (v gatewayVars) env() map[string]string {
	return map[string]string{"KEYWARD_ADDR": v.KeywardAddr, "KEYWARD_SECRET": v.Secret, "LISTEN": v.Listen, "UPSTREAM": v.Upstream}
}

// shippedConfig reads docs/gateways/name.
func shippedConfig(t testing.TB, name string) string {
	t.Helper()
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "gateways", name))
	if err != nil {
		t.Fatalf("the shipped gateway config: %v", err)
	}
	return string(b)
}

var placeholderRE = regexp.MustCompile(`\$\{([A-Z_]+)\}`)

// envsubst replaces ${NAME} for the names in vars only, as the documented
// envsubst '${A} ${B}' does (nginx's own $variables stay), and fails the
// test if the file uses a placeholder vars lacks.
func envsubst(t testing.TB, s string, vars map[string]string) string {
	t.Helper()
	return placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := vars[name]
		if !ok {
			t.Fatalf("the shipped config uses ${%s}, which the test does not fill", name)
		}
		return v
	})
}

// program finds a real program the tests drive; missing is a failure.
func program(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s is not installed (Debian package %s; .ci/run installs it): this test drives the real program and does not skip", name, pkg)
	return ""
}

// gatewayProc is a running gateway.
type gatewayProc struct {
	name string
	addr string
	out  *testkit.SyncBuffer
	logs func() string // the gateway's own log files, if any
}

func (g *gatewayProc) String() string {
	s := g.out.String()
	if g.logs != nil {
		s += g.logs()
	}
	return testkit.Tail(s, 40)
}

// startProc runs cmd until the test ends and waits until addr accepts.
func startProc(t *testing.T, g *gatewayProc, cmd *exec.Cmd) {
	t.Helper()
	g.out = &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = g.out, g.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", g.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", g.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("%s exited before listening:\n%s", g.name, g)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 20s:\n%s", g.name, g.addr, g)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startNginx runs the real nginx in the foreground with the shipped
// docs/gateways/nginx.conf included in a minimal main config of its own
// (pid, logs and temp paths in a temp dir; one process, as the test user).
func startNginx(t *testing.T, v gatewayVars) *gatewayProc {
	t.Helper()
	bin := program(t, "nginx", "nginx")
	dir := t.TempDir()
	v.Listen = testkit.FreeAddr(t)
	site := envsubst(t, shippedConfig(t, "nginx.conf"), v.env())
	if err := os.WriteFile(filepath.Join(dir, "keyward.conf"), []byte(site), 0o600); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 512; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/keyward.conf;
}
`, dir)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{name: "nginx", addr: v.Listen, logs: func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(b)
	}}
	startProc(t, g, exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf))
	return g
}

// startCaddy runs the real Caddy on the shipped docs/gateways/Caddyfile,
// which reads its placeholders from the environment.
func startCaddy(t *testing.T, v gatewayVars) *gatewayProc {
	t.Helper()
	bin := program(t, "caddy", "caddy")
	dir := t.TempDir()
	v.Listen = testkit.FreeAddr(t)
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(shippedConfig(t, "Caddyfile")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "PATH=" + os.Getenv("PATH"), "CADDY_ADMIN=off"}
	for k, val := range v.env() {
		cmd.Env = append(cmd.Env, k+"="+val)
	}
	g := &gatewayProc{name: "caddy", addr: v.Listen}
	startProc(t, g, cmd)
	return g
}

// upstream is the service behind the gateway: it answers 200 "upstream"
// and records every request that reaches it.
type upstream struct {
	addr string
	mu   sync.Mutex
	seen []http.Header
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Clone())
		u.mu.Unlock()
		_, _ = w.Write([]byte("upstream"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return u
}

// count is how many requests reached the upstream.
func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// last is the headers of the last request that reached it.
func (u *upstream) last() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

var gatewayClient = &http.Client{Timeout: 10 * time.Second}

// gatewayGet sends GET path through the gateway with headers hdr.
func gatewayGet(t *testing.T, g *gatewayProc, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+g.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := gatewayClient.Do(req)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", g.name, path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp, strings.TrimSpace(b.String())
}
