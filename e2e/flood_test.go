package e2e

// Floods against the built `keyward serve` under an open-files limit:
// pre-auth SSH connections, and idle HTTP keep-alive connections.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
)

// fdCount is the number of open file descriptors of pid.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("counting fds of %d: %v", pid, err)
	}
	return len(ents)
}

// serveUnderFDLimit starts the built keyward serve through bash with its
// open-file limit (soft and hard) set to nofile.
func (k *kwInstall) serveUnderFDLimit(nofile int, extra ...string) *serveProcess {
	k.t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		k.t.Fatalf("bash is needed to set the open-file limit: %v", err)
	}
	p := k.newServeProcess()
	args := append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), k.bin,
		"--db", k.db, "serve", "--ssh", p.sshAddr, "--http", p.httpAddr, "--host-key", p.hostKey}, extra...)
	p.cmd = exec.Command(bash, args...)
	k.start(p)
	testkit.WaitFor(k.t, 20*time.Second, "serve listening", func() bool {
		return strings.Contains(p.logs.String(), "http listening") && strings.Contains(p.logs.String(), "ssh listening")
	})
	return p
}

// TestSSHPreAuthFlood: idle and trickling connections that never log in,
// from 8 source addresses (127.0.0.1 among them, as the operator), a few
// thousand in all, against serve limited to 256 open files. Serve drops
// them at its caps and after the login grace, its fd count stays
// bounded, and meanwhile /healthz, a verification and an operator's SSH
// login all succeed. Before, nothing closed them before the 30-minute
// idle timeout (a byte every 2 s held one forever), and they took every
// fd, HTTP's included.
func TestSSHPreAuthFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the real binary; skipped with -short")
	}
	k := newInstall(t)
	var js struct{ Token string }
	out := k.ok("keys", "create", "--json", "--name", "svc", "--role", "admin")
	if m := regexp.MustCompile(`"token":\s*"([^"]+)"`).FindStringSubmatch(out); m != nil {
		js.Token = m[1]
	} else {
		t.Fatalf("no token in %s", out)
	}
	sec := secretRE.FindString(k.ok("secret", "show"))
	op := testkit.NewSSHKey(t)
	k.ok("operators", "add", "op", "--role", "admin", "--key", op.Line)
	const grace, maxStartups, perSource = time.Second, 32, 8
	p := k.serveUnderFDLimit(512, "--login-grace", grace.String(), "--max-startups", fmt.Sprint(maxStartups),
		"--max-startups-per-source", fmt.Sprint(perSource))
	pid := p.cmd.Process.Pid
	base := fdCount(t, pid)

	// The flood: 8 sources × 40 workers; half idle, half sending a byte
	// every 150 ms. Each redials when serve drops it; it ends after 4 s or
	// 3,000 connections.
	var dials, dropped atomic.Int64
	var wg sync.WaitGroup
	floodEnd := time.Now().Add(4 * time.Second)
	for src := 1; src <= 8; src++ {
		for w := 0; w < 40; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: time.Second}
				time.Sleep(time.Duration(src*40+w) * 400 * time.Millisecond / 360) // spread the workers' first dials
				for time.Now().Before(floodEnd) && dials.Add(1) <= 3000 {
					next := time.Now().Add(400 * time.Millisecond) // ~800 new connections a second in all
					c, err := d.Dial("tcp", p.sshAddr)
					if err != nil {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					_ = c.SetDeadline(floodEnd)
					if w%2 == 0 {
						_, _ = c.Read(make([]byte, 4096)) // serve's version line
						_, _ = io.Copy(io.Discard, c)     // then wait to be dropped
					} else {
						for time.Now().Before(floodEnd) {
							if _, err := c.Write([]byte{'x'}); err != nil {
								break
							}
							time.Sleep(150 * time.Millisecond)
						}
					}
					if time.Now().Before(floodEnd) {
						dropped.Add(1)
					}
					c.Close()
					time.Sleep(time.Until(next))
				}
			}()
		}
	}
	defer wg.Wait()

	// During the flood (past a grace period, so expiry is at work too).
	time.Sleep(1500 * time.Millisecond)
	d0 := dials.Load()
	peak := 0
	sample := func() { peak = max(peak, fdCount(t, pid)) }
	sample()
	hc := &http.Client{Timeout: 2 * time.Second} // the flood lasts 4 s in all
	t0 := time.Now()
	resp, err := hc.Get("http://" + p.httpAddr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz during the flood: %v %v\n%s", resp, err, testkit.Tail(p.logs.String(), 3000))
	}
	resp.Body.Close()
	t.Logf("healthz during the flood took %s", time.Since(t0))
	sample()
	code, body, err := verifyOnce(hc, "http://"+p.httpAddr, sec, `{"key":"`+js.Token+`","scope":"coupons:read"}`)
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), `"valid":true`) {
		t.Fatalf("verify during the flood: %d %s %v", code, body, err)
	}
	sample()
	// At a cap serve drops the pending connection that has sent least,
	// and a starved 2-core box can leave a real login among the least
	// for a moment (as OpenSSH's MaxStartups drops at random): an
	// operator may have to try again, as a person would. Three tries.
	t0 = time.Now()
	var c *gossh.Client
	for try := 1; c == nil; try++ {
		c, err = testkit.DialSSH(t, p.sshAddr, p.hostKey, "op", gossh.PublicKeys(op.Signer))
		if err != nil {
			t.Logf("SSH login try %d during the flood: %v", try, err)
			if try == 3 {
				t.Fatalf("no SSH login in 3 tries during the flood\n%s", testkit.Tail(p.logs.String(), 3000))
			}
		}
	}
	t.Cleanup(func() { c.Close() })
	v := testkit.OpenTerm(t, c)
	v.WaitText(10*time.Second, 0, "Name")
	t.Logf("SSH login and the TUI's first frame during the flood took %s", time.Since(t0))
	sample()
	checked := time.Now()
	// Serve's fds: the baseline, the pre-auth cap, the operator's
	// connection, and HTTP's few.
	if limit := base + maxStartups + 16; peak > limit {
		t.Errorf("serve held %d fds during the flood (baseline %d), want at most %d", peak, base, limit)
	}
	if d1 := dials.Load(); checked.After(floodEnd) || d1 >= 3000 {
		t.Fatalf("the flood was over before the checks ended (%d then %d connections, %s left); too slow to prove anything", d0, d1, floodEnd.Sub(checked))
	}
	wg.Wait()
	t.Logf("flood: %d connections, %d dropped by serve before the flood ended; serve fds baseline %d, peak %d", min(dials.Load(), 3000), dropped.Load(), base, peak)
	if dropped.Load() < 100 {
		t.Errorf("only %d flood connections were dropped by serve", dropped.Load())
	}
	// After the flood, serve is back to its baseline (plus the session).
	testkit.WaitFor(t, 2*grace+2*time.Second, "serve's fds back to baseline", func() bool { return fdCount(t, pid) <= base+4 })

	// Under the caps, the login grace alone ends idle and trickling
	// connections (a byte every 200 ms used to hold one forever).
	var gwg sync.WaitGroup
	for i := 0; i < 6; i++ {
		gwg.Add(1)
		go func() {
			defer gwg.Done()
			c, err := net.Dial("tcp", p.sshAddr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			start := time.Now()
			_ = c.SetDeadline(start.Add(grace + 3*time.Second))
			if i%2 == 0 {
				_, err = io.Copy(io.Discard, c)
			} else {
				for err == nil {
					time.Sleep(200 * time.Millisecond)
					_, err = c.Write([]byte{'x'})
				}
			}
			if d := time.Since(start); d < grace*9/10 || d > grace+time.Second || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("pre-auth connection %d (trickling: %v) ended after %s (%v), want about %s", i, i%2 == 1, d, err, grace)
			}
		}()
	}
	gwg.Wait()
	logs := p.logs.String()
	for _, want := range []string{"ssh login grace expired", "ssh pre-auth connection dropped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if n := strings.Count(logs, "\n"); n > 60 {
		t.Errorf("%d log lines for the flood; want them folded:\n%s", n, testkit.Tail(logs, 3000))
	}
}

// TestServeHTTPFloodUnderFDLimit drives the real binary under an
// open-files limit of 600 (soft and hard, so Go cannot raise it). serve
// derives its HTTP cap from it (172) and logs both. A flood of 1000 idle
// keep-alive connections then leaves SSH logins, /healthz and verify on
// new connections working; before, the flood took every descriptor and
// both listeners' accepts failed with EMFILE. An explicit cap that does
// not fit the limit is refused at start with a clear message.
func TestServeHTTPFloodUnderFDLimit(t *testing.T) {
	k := newInstall(t)
	script := filepath.Join(k.dir, "keyward-ulimit")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nulimit -n 600 || exit 97\nexec "+k.bin+" \"$@\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	k.bin = script
	key := testkit.NewSSHKey(t)
	k.ok("operators", "add", "flood", "--role", "admin", "--key", key.Line+" flood@test")
	var sec struct{ Secret string }
	if err := json.Unmarshal([]byte(k.ok("secret", "show", "--json")), &sec); err != nil {
		t.Fatal(err)
	}
	var created struct{ Token string }
	if err := json.Unmarshal([]byte(k.ok("keys", "create", "--name", "gw", "--role", "admin", "--json")), &created); err != nil {
		t.Fatal(err)
	}

	_, errOut, code := k.cli("", "serve", "--ssh", "", "--http", testkit.FreeAddr(t), "--http-max-conns", "1000")
	if code == 0 || !strings.Contains(errOut, "--http-max-conns 1000 needs an open-files limit of at least 2256") {
		t.Errorf("serve --http-max-conns 1000 under ulimit -n 600: exit %d, %s", code, errOut)
	}

	p := k.serve()
	testkit.WaitFor(t, 5*time.Second, "serve's log to state the open-files limit and the HTTP cap", func() bool {
		logs := p.logs.String()
		return strings.Contains(logs, "open files limit 600") && strings.Contains(logs, "at most 172 connections")
	})
	ok, conns, closeAll := testkit.Flood(p.httpAddr, 1000, 32)
	defer closeAll()
	t.Logf("flood: %d connected, %d answered", len(conns), ok)
	if ok != 1000 {
		t.Errorf("flood: %d of 1000 answered; want all (idle ones make room)", ok)
	}
	cl := p.dial(t, "flood", key) // fails the test if the login fails
	cl.Close()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + p.httpAddr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz during the flood: %v %v", resp, err)
	}
	resp.Body.Close()
	st, b, err := verifyOnce(hc, "http://"+p.httpAddr, sec.Secret, `{"key":"`+created.Token+`"}`)
	if err != nil || st != 200 || !bytes.Contains(b, []byte(`"VALID"`)) {
		t.Fatalf("verify during the flood: %d %s %v", st, b, err)
	}
	p.stop(t)
}
