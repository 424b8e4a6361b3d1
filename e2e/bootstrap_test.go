package e2e

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
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

// TestE2EBootstrapAdminOverOpenSSH is the issue-12 user journey for
// operator keys: on a fresh database the bootstrap ADMIN (the OS user) has
// no SSH key; `keyward operators keys add NAME --key ...` gives it one, and
// the real OpenSSH client, in tmux, logs in to the built binary's
// `keyward serve` as that operator, sees the keys table and its own key
// marked as this session's. It needs tmux and ssh and fails without them.
func TestE2EBootstrapAdminOverOpenSSH(t *testing.T) {
	requireTools(t, "ssh", "tmux")
	dir := t.TempDir()
	bin := testkit.Binary(t)
	db := filepath.Join(dir, "data", "keyward.db")
	if err := os.Mkdir(filepath.Dir(db), 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--db", db}, args...)...)
		cmd.Env = testkit.Environ(dir, "")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("keyward %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// The first command creates the database; its only operator is the
	// bootstrap ADMIN, with no key.
	var ops []model.Operator
	if err := json.Unmarshal([]byte(run("operators", "list", "--json")), &ops); err != nil || len(ops) != 1 {
		t.Fatalf("operators list --json: %v %+v", err, ops)
	}
	me := ops[0].Name
	if len(ops[0].PublicKeys) != 0 || ops[0].Role != model.OperatorAdmin {
		t.Fatalf("bootstrap operator: %+v", ops[0])
	}
	k := testkit.NewSSHKey(t)
	keyFile := filepath.Join(dir, "id_ed25519")
	block, err := gossh.MarshalPrivateKey(k.Priv, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile+".pub", []byte(k.Line+" "+me+"@e2e\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(keyFile + ".pub")
	out := run("operators", "keys", "add", me, "--key", strings.TrimSpace(string(pub)))
	fp := gossh.FingerprintSHA256(k.Signer.PublicKey())
	if !strings.Contains(out, fp) {
		t.Fatalf("keys add output %q lacks %s", out, fp)
	}

	sshPort := freePort(t)
	var serveLog testkit.SyncBuffer
	serve := exec.Command(bin, "--db", db, "serve", "--ssh", "127.0.0.1:"+sshPort)
	serve.Env = testkit.Environ(dir, "")
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve.Wait() }()
	stopped := false
	stopServe := func() error {
		stopped = true
		_ = serve.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-served:
			return err
		case <-time.After(20 * time.Second):
			_ = serve.Process.Kill()
			return fmt.Errorf("serve did not stop 20s after SIGTERM")
		}
	}
	defer func() {
		if !stopped {
			_ = stopServe()
		}
	}()
	testkit.WaitFor(t, 10*time.Second, "serve listening", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+sshPort, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	done := filepath.Join(dir, "ssh-exit")
	sshCmd := fmt.Sprintf("ssh -F /dev/null -i %s -p %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityAgent=none -o LogLevel=ERROR %s@127.0.0.1; echo $? > %s; sleep 30",
		keyFile, sshPort, me, done)
	p := newPane(t, 120, 30, []string{"set -g history-limit 1000"}, nil, sshCmd)
	p.trail = func() string { return "serve log:\n" + serveLog.String() }
	s := p.wait("the keys table", 15*time.Second, func(s string) bool { return strings.Contains(s, "Press n to create") })
	if !strings.Contains(s, me) || strings.Contains(s, "read-only") {
		t.Fatalf("the header should name %s, with write rights:\n%s", me, s)
	}
	p.keys("o")
	p.wait("the operators screen", 15*time.Second, func(s string) bool { return strings.Contains(s, "(you)") })
	p.keys("Enter")
	p.wait("the session's own key", 15*time.Second, func(s string) bool {
		return strings.Contains(s, "SSH keys of "+me) && strings.Contains(s, fp) && strings.Contains(s, "(this session)")
	})
	p.keys("Escape", "Escape", "q")
	testkit.WaitFor(t, 5*time.Second, "ssh to exit after q", func() bool {
		b, err := os.ReadFile(done)
		return err == nil && strings.TrimSpace(string(b)) == "0"
	})
	if err := stopServe(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, serveLog.String())
	}
	if !strings.Contains(serveLog.String(), "session start user="+me) {
		t.Fatalf("serve log lacks the session:\n%s", serveLog.String())
	}
	var evs []model.AuditEvent
	if err := json.Unmarshal([]byte(run("audit", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	var added, login bool
	for _, ev := range evs {
		added = added || (ev.Action == model.ActOperatorKeyAdd && ev.Target == me && strings.Contains(ev.Detail, fp))
		login = login || (ev.Action == model.ActLogin && ev.Actor == me)
	}
	if !added || !login {
		t.Fatalf("audit: key added %v, login %v:\n%+v", added, login, evs)
	}
}
