package e2e

// Helpers for the fault and security tests that drive `keyward serve`
// with --db: run CLI commands as the bootstrap ADMIN "root", start and
// kill serve, and talk to it over SSH and HTTP from goroutines that must
// not call t.Fatal.

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
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/server"
)

// kwInstall is one database and its files, driven through the binary
// with --db, as operator root.
type kwInstall struct {
	t   *testing.T
	bin string
	dir string
	db  string
}

func newInstall(t *testing.T) *kwInstall {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil { // --db wants its directory
		t.Fatal(err)
	}
	return &kwInstall{t: t, bin: testkit.Binary(t), dir: dir, db: filepath.Join(dir, "data", "keyward.db")}
}

func (k *kwInstall) env() []string { return testkit.Environ(k.dir, "", "KEYWARD_OPERATOR=root") }

// cli runs keyward --db DB args... and returns stdout, stderr and the exit code.
func (k *kwInstall) cli(stdin string, args ...string) (string, string, int) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, append([]string{"--db", k.db}, args...)...)
	cmd.Env = k.env()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		k.t.Fatalf("keyward %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs the CLI and fails unless it exits 0; it returns stdout.
func (k *kwInstall) ok(args ...string) string {
	k.t.Helper()
	out, errs, code := k.cli("", args...)
	if code != 0 {
		k.t.Fatalf("keyward %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// serveProcess is a running `keyward serve`.
type serveProcess struct {
	cmd      *exec.Cmd
	sshAddr  string
	httpAddr string
	hostKey  string
	logs     *testkit.SyncBuffer
	done     chan error
}

// newServeProcess is a serve on free 127.0.0.1 addresses with its host
// key in the install's directory, not yet started.
func (k *kwInstall) newServeProcess() *serveProcess {
	return &serveProcess{sshAddr: testkit.FreeAddr(k.t), httpAddr: testkit.FreeAddr(k.t), hostKey: filepath.Join(k.dir, "hostkey", server.HostKeyFile),
		logs: &testkit.SyncBuffer{}, done: make(chan error, 1)}
}

// start starts p.cmd with the install's environment; the test's end
// kills it.
func (k *kwInstall) start(p *serveProcess) {
	k.t.Helper()
	p.cmd.Env = k.env()
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	k.t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done; p.done <- nil })
}

// serve starts keyward serve on free 127.0.0.1 ports and waits until both
// listeners accept.
func (k *kwInstall) serve(extra ...string) *serveProcess {
	k.t.Helper()
	p := k.newServeProcess()
	args := append([]string{"--db", k.db, "serve", "--ssh", p.sshAddr, "--http", p.httpAddr, "--host-key", p.hostKey}, extra...)
	p.cmd = exec.Command(k.bin, args...)
	k.start(p)
	deadline := time.Now().Add(20 * time.Second)
	for {
		up := 0
		for _, a := range []string{p.sshAddr, p.httpAddr} {
			if c, err := net.DialTimeout("tcp", a, 200*time.Millisecond); err == nil {
				c.Close()
				up++
			}
		}
		if up == 2 {
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			k.t.Fatalf("serve exited before listening: %v\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("serve did not listen within 20s:\n%s", p.logs.String())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *serveProcess) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, p.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop 20s after SIGTERM")
	}
}

// dial logs in over SSH as user, pinning the host key serve wrote.
func (p *serveProcess) dial(t *testing.T, user string, key testkit.SSHKey) *gossh.Client {
	t.Helper()
	c, err := testkit.DialSSH(t, p.sshAddr, p.hostKey, user, gossh.PublicKeys(key.Signer))
	if err != nil {
		t.Fatalf("ssh as %s: %v\n%s", user, err, p.logs.String())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// verifyOnce posts one verification; it never calls t.Fatal, for use
// from load goroutines.
func verifyOnce(c *http.Client, base, secret, body string) (int, []byte, error) {
	req, err := http.NewRequest("POST", base+"/v1/keys/verify", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// requireTools fails the test unless every named program is installed.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required for this end-to-end test (CI installs it): %v", tool, err)
		}
	}
}
