package e2e

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// TestE2EOpenSSHInTmux drives the real binary with the real OpenSSH
// client inside tmux: register an operator, `keyward serve`, log in, create
// a key through the form, press c on the reveal, find the token in tmux's
// paste buffer (OSC 52 with set-clipboard on), verify it over HTTP, stop
// the server with SIGTERM and find the verification in last_used_at.
func TestE2EOpenSSHInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	requireTools(t, "ssh", "tmux")
	dir := t.TempDir()
	bin := testkit.Binary(t) // built once per test process; a build failure fails the test
	db := filepath.Join(dir, "data", "keyward.db")
	if err := os.Mkdir(filepath.Dir(db), 0o700); err != nil { // --db wants its directory
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--db", db}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Env = testkit.Environ(dir, "")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("keyward %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// A fresh ed25519 key for the operator, as OpenSSH files.
	k := testkit.NewSSHKey(t)
	keyFile := filepath.Join(dir, "id_ed25519")
	block, err := gossh.MarshalPrivateKey(k.Priv, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	run("", "operators", "add", "e2e", "--role", "admin", "--key", k.Line+" e2e@test")
	var sec struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(run("", "secret", "show", "--json")), &sec); err != nil || sec.Secret == "" {
		t.Fatalf("secret show --json: %v", err)
	}

	sshPort, httpPort := freePort(t), freePort(t)
	var serveLog testkit.SyncBuffer
	serve := exec.Command(bin, "--db", db, "serve", "--ssh", "127.0.0.1:"+sshPort, "--http", "127.0.0.1:"+httpPort)
	serve.Env = testkit.Environ(dir, "")
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve.Wait() }()
	stopServe := func() error {
		_ = serve.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-served:
			return err
		case <-time.After(20 * time.Second):
			_ = serve.Process.Kill()
			return fmt.Errorf("serve did not stop 20s after SIGTERM")
		}
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stopServe()
		}
	}()
	testkit.WaitFor(t, 10*time.Second, "serve listening", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 200*time.Millisecond)
		if err == nil {
			c.Close()
			c2, err := net.DialTimeout("tcp", "127.0.0.1:"+sshPort, 200*time.Millisecond)
			if err == nil {
				c2.Close()
				return true
			}
		}
		return false
	})

	// tmux on a private socket, with set-clipboard on.
	sshCmd := fmt.Sprintf("ssh -F /dev/null -i %s -p %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityAgent=none -o LogLevel=ERROR e2e@127.0.0.1; sleep 30", keyFile, sshPort)
	p := newPane(t, 140, 40, []string{"set -g set-clipboard on", "set -g history-limit 1000"}, nil, sshCmd)
	p.trail = func() string { return "serve log:\n" + serveLog.String() }
	p.wait("the keys table", 15*time.Second, func(s string) bool { return strings.Contains(s, "Name") })
	p.keys("n")
	p.wait("the create form", 5*time.Second, func(s string) bool { return strings.Contains(s, "New key") })
	p.keys("lit:e2e-key", "Enter", "Enter", "Up", "Enter", "Enter", "Enter", "Enter")
	s := p.wait("the revealed token", 10*time.Second, func(s string) bool { return tokenRE.MatchString(s) })
	token := tokenRE.FindString(s)
	p.keys("c")
	var buf string
	testkit.WaitFor(t, 5*time.Second, "the token in tmux's paste buffer", func() bool {
		buf, _ = p.tmux("show-buffer")
		return strings.TrimSpace(buf) == token
	})

	hc := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest("POST", "http://127.0.0.1:"+httpPort+"/v1/keys/verify", strings.NewReader(`{"key":"`+token+`","scope":"coupons:read","resource":"web-shop"}`))
	req.Header.Set("Authorization", "Bearer "+sec.Secret)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res model.VerifyResult
	err = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !res.Valid {
		t.Fatalf("verify the copied token: %d %+v %v", resp.StatusCode, res, err)
	}

	stopped = true
	if err := stopServe(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, serveLog.String())
	}
	if strings.Contains(serveLog.String(), token) || strings.Contains(serveLog.String(), sec.Secret) {
		t.Fatalf("serve's log holds the token or the secret:\n%s", serveLog.String())
	}
	var shown struct {
		LastUsedAt   *time.Time `json:"last_used_at"`
		LastUsedFrom string     `json:"last_used_from"`
		CreatedBy    string     `json:"created_by"`
	}
	if err := json.Unmarshal([]byte(run("", "keys", "show", res.KeyID, "--json")), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.LastUsedAt == nil || shown.LastUsedFrom != "127.0.0.1" || shown.CreatedBy != "e2e" {
		t.Fatalf("after SIGTERM and a restart: %+v; want last used from 127.0.0.1, created by e2e", shown)
	}
}

// freePort is the port of a 127.0.0.1 address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	_, p, _ := net.SplitHostPort(testkit.FreeAddr(t))
	return p
}
