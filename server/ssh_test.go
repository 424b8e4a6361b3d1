package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// dialSSH connects as user with the given auth methods, checking the
// server's host key against the one Serve wrote.
func dialSSH(t *testing.T, env *testEnv, r *running, user string, auth ...gossh.AuthMethod) (*gossh.Client, error) {
	t.Helper()
	return testkit.DialSSH(t, r.sshAddr, filepath.Join(env.dir, "hostkeys", HostKeyFile), user, auth...)
}

func mustDial(t *testing.T, env *testEnv, r *running, user string, k testkit.SSHKey) *gossh.Client {
	t.Helper()
	c, err := dialSSH(t, env, r, user, gossh.PublicKeys(k.Signer))
	if err != nil {
		t.Fatalf("ssh as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantAuthRefused(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: connection was accepted", what)
	}
	if !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("%s: want an authentication failure, got %v", what, err)
	}
}

func TestSSHUnknownKeyRefused(t *testing.T) {
	env := newEnv(t)
	env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	stranger := testkit.NewSSHKey(t)
	_, err := dialSSH(t, env, srv, "alice", gossh.PublicKeys(stranger.Signer))
	wantAuthRefused(t, err, "unknown key")
	_, err = dialSSH(t, env, srv, "root", gossh.PublicKeys(stranger.Signer))
	wantAuthRefused(t, err, "unknown key for the bootstrap operator (who has no key)")
	testkit.WaitFor(t, 2*time.Second, "refusal logged", func() bool {
		return strings.Contains(srv.logs.String(), "ssh auth refused user=alice key="+gossh.FingerprintSHA256(stranger.Signer.PublicKey()))
	})
}

// TestSSHOnlyPublicKeyAuth: password, keyboard-interactive and "none"
// are all refused, even with a registered user name.
func TestSSHOnlyPublicKeyAuth(t *testing.T) {
	env := newEnv(t)
	env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	_, err := dialSSH(t, env, srv, "alice", gossh.Password("alice"))
	wantAuthRefused(t, err, "password")
	_, err = dialSSH(t, env, srv, "alice", gossh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
		return []string{"alice"}, nil
	}))
	wantAuthRefused(t, err, "keyboard-interactive")
	_, err = dialSSH(t, env, srv, "alice")
	wantAuthRefused(t, err, "no auth (none method)")
}

func TestSSHDisabledOperatorRefused(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("alice", model.OperatorAdmin)
	if _, err := env.st.SetOperatorDisabled(rootOp, "alice", true); err != nil {
		t.Fatal(err)
	}
	srv := env.serve(Config{HTTPAddr: "-"})
	_, err := dialSSH(t, env, srv, "alice", gossh.PublicKeys(k.Signer))
	wantAuthRefused(t, err, "disabled operator")
}

// TestSSHLoginNameMustBeOperator: a registered key only logs in under its
// operator's name.
func TestSSHLoginNameMustBeOperator(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("alice", model.OperatorAdmin)
	env.addOperator("bob", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	for _, user := range []string{"bob", "root", "Alice", "alice ", "admin"} {
		_, err := dialSSH(t, env, srv, user, gossh.PublicKeys(k.Signer))
		wantAuthRefused(t, err, "alice's key as "+user)
	}
}

// badSigner offers a registered public key but signs with another private
// key: the server accepts the offer (the key is known) but the signature
// fails, which is exactly the CVE-2024-45337 shape.
type badSigner struct {
	pub   gossh.PublicKey
	other gossh.Signer
}

func (b badSigner) PublicKey() gossh.PublicKey { return b.pub }
func (b badSigner) Sign(r io.Reader, data []byte) (*gossh.Signature, error) {
	return b.other.Sign(r, data)
}

// TestSSHOfferedKeyIsNotEnough: offering alice's key (which the server
// says it would accept) and then authenticating with nothing valid must
// not log in as alice; and a session's identity comes from the key that
// signed, not an earlier offer.
func TestSSHOfferedKeyIsNotEnough(t *testing.T) {
	env := newEnv(t)
	alice := env.addOperator("alice", model.OperatorAdmin)
	bob := env.addOperator("bob", model.OperatorReadonly)
	srv := env.serve(Config{HTTPAddr: "-"})
	mallory := testkit.NewSSHKey(t)
	forged := badSigner{pub: alice.Signer.PublicKey(), other: mallory.Signer}

	// x/crypto ends the handshake on a bad signature; either way: no login.
	if c, err := dialSSH(t, env, srv, "alice", gossh.PublicKeys(forged, mallory.Signer)); err == nil {
		c.Close()
		t.Fatal("alice's key offered, signed by another key: logged in")
	}
	if c, err := dialSSH(t, env, srv, "alice", gossh.PublicKeys(mallory.Signer, forged)); err == nil {
		c.Close()
		t.Fatal("unknown key, then alice's key with a bad signature: logged in")
	}

	// As bob: alice's key is offered first (refused: wrong user), then bob's
	// key signs. The session must be bob's, READONLY.
	c, err := dialSSH(t, env, srv, "bob", gossh.PublicKeys(forged, bob.Signer))
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	sess.Stdout, sess.Stderr = &testkit.LockedWriter{Mu: &mu, W: &out}, &testkit.LockedWriter{Mu: &mu, W: &out}
	_ = sess.Run("") // no PTY: refused, after authorisation, naming the operator
	testkit.WaitFor(t, 2*time.Second, "session refusal logged", func() bool {
		return strings.Contains(srv.logs.String(), "ssh session refused user=bob role=READONLY key="+gossh.FingerprintSHA256(bob.Signer.PublicKey()))
	})
	ops, _ := env.st.Operator("alice")
	if ops.LastLoginAt != nil {
		t.Fatalf("alice recorded as logged in")
	}
	if strings.Contains(srv.logs.String(), "session start user=alice") {
		t.Fatalf("a session started as alice:\n%s", srv.logs.String())
	}
}

// TestSSHSessionRechecksOperator: an operator disabled (or deleted) after
// the handshake is refused when the session starts.
func TestSSHSessionRechecksOperator(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	if _, err := env.st.SetOperatorDisabled(rootOp, "alice", true); err != nil {
		t.Fatal(err)
	}
	v := testkit.OpenTerm(t, c)
	err := v.WaitExit(5 * time.Second)
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
		t.Fatalf("want exit status 1, got %v", err)
	}
	if !strings.Contains(v.ErrText(), "access denied") {
		t.Fatalf("stderr %q lacks access denied", v.ErrText())
	}
	if strings.Contains(v.Text(), "Name") {
		t.Fatalf("a disabled operator saw the UI:\n%s", v.Text())
	}
	testkit.WaitFor(t, 2*time.Second, "refusal logged", func() bool {
		return strings.Contains(srv.logs.String(), "ssh session refused user=alice")
	})
	if op, _ := env.st.Operator("alice"); op.LastLoginAt != nil {
		t.Fatal("refused session recorded a login")
	}
}

func TestSSHRequiresPTY(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.CombinedOutput("keys list")
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 || !strings.Contains(string(out), "Requires an active PTY") {
		t.Fatalf("no-PTY session: %v %q", err, out)
	}
}

// TestSSHUserNamesSanitisedInLogs: a login name full of escapes reaches
// the log only in escaped form.
func TestSSHUserNamesSanitisedInLogs(t *testing.T) {
	env := newEnv(t)
	env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	evil := "alice\x1b]52;c;ZXZpbA==\x07\x1b[2J\u202e\nfake line"
	_, err := dialSSH(t, env, srv, evil, gossh.PublicKeys(testkit.NewSSHKey(t).Signer))
	wantAuthRefused(t, err, "evil user name")
	testkit.WaitFor(t, 2*time.Second, "refusal logged", func() bool { return strings.Contains(srv.logs.String(), "ssh auth refused") })
	logs := srv.logs.String()
	for _, r := range logs {
		if r != '\n' && (r < 0x20 || r == 0x7f || r == 0x202e) {
			t.Fatalf("log holds control character %U:\n%q", r, logs)
		}
	}
	if strings.Contains(logs, "\nfake line") {
		t.Fatalf("user name injected a log line:\n%s", logs)
	}
}

func TestSSHHostKeyGeneratedOnce(t *testing.T) {
	env := newEnv(t)
	path := filepath.Join(env.dir, "hostkeys", HostKeyFile)
	srv := env.serve(Config{HTTPAddr: "-"})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("host key mode %04o, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("host key dir mode %04o, want 0700", di.Mode().Perm())
	}
	key := testkit.ReadHostKey(t, path)
	if key.Type() != gossh.KeyAlgoED25519 {
		t.Errorf("host key type %s", key.Type())
	}
	fp := gossh.FingerprintSHA256(key)
	testkit.WaitFor(t, 2*time.Second, "fingerprint printed at start", func() bool {
		return strings.Contains(srv.logs.String(), "ssh host key "+fp+" "+path+" (generated)")
	})
	before, _ := os.ReadFile(path)
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	srv2 := env.serve(Config{HTTPAddr: "-"})
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Errorf("host key changed across restarts")
	}
	testkit.WaitFor(t, 2*time.Second, "the reloaded key's fingerprint in the log", func() bool {
		return strings.Contains(srv2.logs.String(), fp+" "+path+" (loaded)")
	})
	// The client sees that same key (dialSSH pins it).
	k := env.addOperator("alice", model.OperatorAdmin)
	mustDial(t, env, srv2, "alice", k)
	if err := srv2.stop(t); err != nil {
		t.Fatal(err)
	}

	// A key others can read is refused, as sshd refuses it.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	err = Serve(t.Context(), Config{Store: env.st, SSHAddr: "127.0.0.1:0", HostKeyPath: path, Log: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable host key: %v", err)
	}
}

// TestSSHHostKeyDefaultName: with no host key path, serve keeps its host
// key as ssh_host_ed25519 beside the database, the one name the CLI and
// the README have always used, so an install keeps its key whichever
// layer picks the default.
func TestSSHHostKeyDefaultName(t *testing.T) {
	env := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Store: env.st, SSHAddr: "127.0.0.1:0", Log: io.Discard,
			Ready: func(string, string) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not get ready")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(filepath.Dir(env.st.Path()), "ssh_host_ed25519")
	if _, err := os.Stat(want); err != nil {
		t.Fatalf("host key not at the default path: %v", err)
	}
	if _, err := os.Stat(want + "_key"); err == nil {
		t.Fatalf("a second host key name was created: %s_key", want)
	}
}

func TestHostKeyRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", HostKeyFile)
	var wg sync.WaitGroup
	fps := make([]string, 8)
	for i := range fps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _, err := loadOrCreateHostKey(path, nil)
			if err != nil {
				t.Error(err)
				return
			}
			fps[i] = gossh.FingerprintSHA256(s.PublicKey())
		}()
	}
	wg.Wait()
	for _, fp := range fps {
		if fp != fps[0] {
			t.Fatalf("concurrent starts made different host keys: %v", fps)
		}
	}
}

// TestSSHAdminSeesKeysTable: an ADMIN's PTY session renders the TUI's
// keys table, the login is recorded, and ctrl+c ends the session.
func TestSSHAdminSeesKeysTable(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	env.createKey(model.KeySpec{Name: "checkout-service"})
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	v := testkit.OpenTerm(t, c)
	v.WaitText(10*time.Second, 0, "Name", "checkout-service")
	if !strings.Contains(v.Raw(), "\x1b[?1049h") {
		t.Errorf("the TUI did not switch to the alternate screen")
	}
	op, _ := env.st.Operator("alice")
	if op.LastLoginAt == nil {
		t.Errorf("login not recorded")
	}
	ev, _ := env.st.Audit(store.AuditFilter{Target: "alice"})
	if len(ev) == 0 || ev[0].Action != model.ActLogin || !strings.Contains(ev[0].Detail, "127.0.0.1") {
		t.Errorf("login not audited with the remote address: %+v", ev)
	}
	v.Send("\x03")
	if err := v.WaitExit(5 * time.Second); err != nil {
		t.Fatalf("ctrl+c: session ended with %v", err)
	}
}

// TestSSHDroppedSessionReleasesFeed: a connection that drops without a quit
// key must not leave its TUI subscribed to the store's change feed.
func TestSSHDroppedSessionReleasesFeed(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	env.createKey(model.KeySpec{Name: "checkout-service"})
	srv := env.serve(Config{HTTPAddr: "-"})
	base := env.st.Subscribers()
	c := mustDial(t, env, srv, "alice", k)
	v := testkit.OpenTerm(t, c)
	v.WaitText(10*time.Second, 0, "checkout-service")
	if n := env.st.Subscribers(); n != base+1 {
		t.Fatalf("subscribers with one session open: %d, want %d", n, base+1)
	}
	c.Close() // drop the connection: no q, no ctrl+c
	deadline := time.Now().Add(5 * time.Second)
	for env.st.Subscribers() != base {
		if time.Now().After(deadline) {
			t.Fatalf("subscribers after the session dropped: %d, want %d", env.st.Subscribers(), base)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSSHReadonlyCannotCreate: the store refuses a READONLY operator's
// create, and in its SSH session `n` does not open the create form.
func TestSSHReadonlyCannotCreate(t *testing.T) {
	env := newEnv(t)
	k := env.addOperator("reader", model.OperatorReadonly)
	_, _, err := env.st.CreateKey("reader", model.KeySpec{Name: "sneaky", Role: model.RoleAdmin, Active: true})
	if !errors.Is(err, store.ErrForbidden) {
		t.Fatalf("store.CreateKey as READONLY: %v, want ErrForbidden", err)
	}
	requireTUI(t, env.st)
	env.createKey(model.KeySpec{Name: "existing-key"})
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "reader", k)
	v := testkit.OpenTerm(t, c)
	v.WaitText(10*time.Second, 0, "existing-key")
	m := v.Mark()
	v.Send("n")
	time.Sleep(700 * time.Millisecond)
	if got := v.Since(m); strings.Contains(strings.ToLower(got), "new key") || strings.Contains(got, "Description") {
		t.Fatalf("READONLY operator's `n` opened the create form:\n%s", got)
	}
	if n := env.st.KeyCount(); n != 1 {
		t.Fatalf("%d keys after a READONLY session, want 1", n)
	}
}

// TestSSHShutdownEndsSessions: cancelling Serve quits running TUIs with a
// message, and Serve returns promptly.
func TestSSHShutdownEndsSessions(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-"})
	c := mustDial(t, env, srv, "alice", k)
	v := testkit.OpenTerm(t, c)
	v.WaitText(10*time.Second, 0, "Name")
	start := time.Now()
	if err := srv.stop(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s", d)
	}
	v.WaitExit(5 * time.Second)
	if !strings.Contains(v.ErrText(), "shutting down") {
		t.Errorf("no shutdown message on stderr: %q", v.ErrText())
	}
	if strings.Contains(v.Raw()[len(v.Raw())-min(len(v.Raw()), 200):], "\x1b[?1049h") {
		t.Errorf("alternate screen not left")
	}
}

// TestSSHIdleTimeout: a session with no input ends after IdleTimeout.
func TestSSHIdleTimeout(t *testing.T) {
	env := newEnv(t)
	requireTUI(t, env.st)
	k := env.addOperator("alice", model.OperatorAdmin)
	srv := env.serve(Config{HTTPAddr: "-", IdleTimeout: 1500 * time.Millisecond})
	c := mustDial(t, env, srv, "alice", k)
	v := testkit.OpenTerm(t, c)
	v.WaitText(5*time.Second, 0, "Name")
	start := time.Now()
	v.WaitExit(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("idle session ended after %s", d)
	}
	if !strings.Contains(v.ErrText(), "idle") {
		t.Errorf("stderr %q lacks the idle message", v.ErrText())
	}
}

// TestHostKeyPlantedSymlink (issue 11.6): a host key path that is a
// symbolic link is refused, even to a 0600 key this user owns (someone
// who planted it would know the key the server then presents); the link's
// target is neither used nor written, and a dangling link is not created
// through.
func TestHostKeyPlantedSymlink(t *testing.T) {
	dir := t.TempDir()
	known, err := newHostKey()
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "planted_key")
	if err := os.WriteFile(target, known, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, HostKeyFile)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateHostKey(path, nil); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlinked host key: %v", err)
	}
	if b, _ := os.ReadFile(target); !bytes.Equal(b, known) {
		t.Fatal("the link's target was changed")
	}
	ghost := filepath.Join(dir, "ghost")
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(ghost, dangling); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateHostKey(dangling, nil); err == nil {
		t.Fatal("a dangling host key link was accepted")
	}
	if _, err := os.Lstat(ghost); err == nil {
		t.Fatal("a key was written through a dangling link")
	}
	// A private directory gives no warning; a 0755 one does.
	var warned []string
	priv := filepath.Join(dir, "priv", HostKeyFile)
	if _, _, err := loadOrCreateHostKey(priv, func(w string) { warned = append(warned, w) }); err != nil || len(warned) != 0 {
		t.Fatalf("new key in a private dir: %v %v", err, warned)
	}
	if err := os.Chmod(filepath.Dir(priv), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadOrCreateHostKey(priv, func(w string) { warned = append(warned, w) }); err != nil || len(warned) != 1 || !strings.Contains(warned[0], "0755") {
		t.Fatalf("key in a 0755 dir: %v %v", err, warned)
	}
}
