package server

// Helpers for the fault and security tests that drive the real keyward
// binary: build it once, run CLI commands, start and kill `keyward serve`,
// and talk to it over SSH and HTTP from goroutines that must not call
// t.Fatal.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

var kwBin struct {
	once sync.Once
	path string
	err  error
}

// keywardBinary builds ../ once per test process (into a temp directory:
// the package has no TestMain to remove it, and it is one small file).
func keywardBinary(t *testing.T) string {
	t.Helper()
	kwBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "keyward-server-fault-")
		if err != nil {
			kwBin.err = err
			return
		}
		kwBin.path = filepath.Join(dir, "keyward")
		out, err := exec.Command("go", "build", "-o", kwBin.path, "..").CombinedOutput()
		if err != nil {
			kwBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if kwBin.err != nil {
		t.Fatalf("building keyward: %v", kwBin.err)
	}
	return kwBin.path
}

// kwInstall is one database and its files, driven through the binary.
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
	return &kwInstall{t: t, bin: keywardBinary(t), dir: dir, db: filepath.Join(dir, "data", "keyward.db")}
}

func (k *kwInstall) env() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "KEYWARD_") || name == "HOME" || name == "XDG_DATA_HOME" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+k.dir, "KEYWARD_OPERATOR=root", "NO_COLOR=1")
}

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
	logs     *syncBuffer
	done     chan error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serve starts keyward serve on free 127.0.0.1 ports and waits until both
// listeners accept.
func (k *kwInstall) serve(extra ...string) *serveProcess {
	k.t.Helper()
	p := &serveProcess{sshAddr: freeAddr(k.t), httpAddr: freeAddr(k.t), hostKey: filepath.Join(k.dir, "hostkey", HostKeyFile),
		logs: &syncBuffer{}, done: make(chan error, 1)}
	args := append([]string{"--db", k.db, "serve", "--ssh", p.sshAddr, "--http", p.httpAddr, "--host-key", p.hostKey}, extra...)
	p.cmd = exec.Command(k.bin, args...)
	p.cmd.Env = k.env()
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	k.t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done; p.done <- nil })
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

// dial logs in over SSH as user, pinning the host key serve wrote.
func (p *serveProcess) dial(t *testing.T, user string, key sshKey) *gossh.Client {
	t.Helper()
	c, err := gossh.Dial("tcp", p.sshAddr, &gossh.ClientConfig{
		User: user, Auth: []gossh.AuthMethod{gossh.PublicKeys(key.signer)},
		HostKeyCallback: gossh.FixedHostKey(readHostKey(t, p.hostKey)), Timeout: 5 * time.Second,
	})
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

// waitOut polls v's output since mark for want, until d passes or stop
// closes; it reports instead of failing.
func waitOut(v *vt, from int, d time.Duration, stop <-chan struct{}, want func(string) bool) (string, bool) {
	deadline := time.Now().Add(d)
	for {
		s := v.since(from)
		if want(s) {
			return s, true
		}
		select {
		case <-stop:
			return s, false
		case <-v.done:
			return s, false
		default:
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// typeKeys sends keys paced as a person types (huh moves between fields
// through commands); false if the session is gone.
func typeKeys(v *vt, keys ...string) bool {
	for _, k := range keys {
		time.Sleep(90 * time.Millisecond)
		if _, err := io.WriteString(v.stdin, k); err != nil {
			return false
		}
	}
	return true
}
