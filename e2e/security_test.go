package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/keyward/keyward/internal/testkit"
)

var secretRE = regexp.MustCompile(`kws_[0-9A-Za-z]{20,}`)

// TestSecurityNoSecretsAtRest: after a full scenario (CLI creates,
// regenerates and rotates; serve answers HTTP verifications, good and bad;
// an SSH operator creates a key through the form and reveals the shared
// secret), no token and no shared secret, whole or without its prefix, is
// in the database file, the backup, serve's log, the audit log (JSON and
// text) or the lock file.
func TestSecurityNoSecretsAtRest(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the real binary; skipped with -short")
	}
	k := newInstall(t)
	var secrets []string // every token and shared secret issued
	tok := func(out string) string {
		t.Helper()
		m := tokenRE.FindString(out)
		if m == "" {
			t.Fatalf("no token in %q", out)
		}
		secrets = append(secrets, m)
		return m
	}
	human := tok(k.ok("keys", "create", "--name", "human", "--scope", "coupons:read"))
	var js struct{ ID, Token string }
	if err := json.Unmarshal([]byte(k.ok("keys", "create", "--json", "--name", "scripted", "--role", "admin")), &js); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, js.Token)
	graceTok := tok(k.ok("keys", "regenerate", js.ID, "--grace", "1h"))
	first := secretRE.FindString(k.ok("secret", "show"))
	rotated := secretRE.FindString(k.ok("secret", "rotate", "--grace", "1h"))
	if first == "" || rotated == "" || first == rotated {
		t.Fatalf("secrets: %q %q", first, rotated)
	}
	secrets = append(secrets, first, rotated)
	op := testkit.NewSSHKey(t)
	k.ok("operators", "add", "sec", "--role", "admin", "--key", op.Line+" sec@test")

	srv := k.serve("--flush-interval", "200ms")
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + srv.httpAddr
	for _, tc := range []struct{ bearer, body string }{
		{rotated, `{"key":"` + human + `","scope":"coupons:read"}`},
		{first, `{"key":"` + js.Token + `","scope":"coupons:read"}`},   // previous secret, previous token: both in grace
		{rotated, `{"key":"` + graceTok + `","scope":"coupons:read"}`}, // the current token
		{human, `{"key":"` + rotated + `"}`},                           // a token as bearer, the secret as key
		{rotated, `{"key":"` + human[:len(human)-1] + `x"}`},           // bad checksum
		{rotated, `{"key":"` + human + `","scope":"` + human + `"}`},   // a token where a scope goes
	} {
		if _, _, err := verifyOnce(c, base, tc.bearer, tc.body); err != nil {
			t.Fatal(err)
		}
	}
	v := testkit.OpenTerm(t, srv.dial(t, "sec", op))
	v.WaitText(10*time.Second, 0, "Name")
	secrets = append(secrets, v.CreateViaForm("over-ssh"))
	m := v.Mark()
	v.Keys(keyEnter)
	v.WaitText(5*time.Second, m, "Stored it?")
	m = v.Mark()
	v.Keys("y")
	v.WaitText(5*time.Second, m, "over-ssh")
	m = v.Mark()
	v.Keys("s")
	v.WaitText(5*time.Second, m, "hared secret")
	m = v.Mark()
	v.Keys("v", "y")
	var shown string
	testkit.WaitFor(t, 5*time.Second, "the shared secret revealed over SSH", func() bool {
		shown = secretRE.FindString(v.Since(m))
		return shown != ""
	})
	if shown != rotated {
		t.Fatalf("SSH revealed %q, want the current secret", shown)
	}
	lockFile, err := os.ReadFile(k.db + ".lock")
	if err != nil {
		t.Fatalf("lock file while serving: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // a last-used flush
	srv.stop(t)

	backup := filepath.Join(k.dir, "kw.bak")
	k.ok("backup", backup)
	files := map[string][]byte{"lock file": lockFile, "serve log": []byte(srv.logs.String())}
	for name, p := range map[string]string{"database": k.db, "backup": backup} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	files["audit --json"] = []byte(k.ok("audit", "--json"))
	files["audit"] = []byte(k.ok("audit"))
	files["keys list --json"] = []byte(k.ok("keys", "list", "--json"))
	if len(files["audit --json"]) < 200 || !strings.Contains(string(files["audit --json"]), "sec") {
		t.Fatalf("the audit log is suspiciously small:\n%s", files["audit --json"])
	}
	for _, s := range secrets {
		_, body, _ := strings.Cut(s, "_")
		for name, b := range files {
			for _, needle := range []string{s, body} {
				if strings.Contains(string(b), needle) {
					t.Errorf("%s holds a secret (%s…, %d bytes)", name, needle[:6], len(needle))
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("serve log:\n%s", srv.logs.String())
	}
}

// Escape-injection payloads: OSC 52 (clipboard write), OSC 8 (hyperlink),
// CSI clear screen, C1 CSI (U+009B) and a bidi override (U+202E). Each
// carries a marker so that its arrival, even with the ESC stripped, shows.
var injections = []string{
	"a\x1b]52;c;aGk=\x07",
	"b\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",
	"c\x1b[2Jzap",
	"d\u009b2Jzip",
	"e\u202eslf.exe",
}

// markers are what must never reach a terminal raw. Injected text may
// arrive sanitised (ESC shown as a visible replacement), so the checks are
// on the control characters plus their payload.
var injectionMarkers = []string{"\x1b]52;c;aGk=", "52;c;aGk=\x07", "\x1b]8;;http://evil", "\x1b[2Jzap", "\u009b2Jzip", "\u202e", "\u009b"}

func assertNoInjection(t *testing.T, where, out string) {
	t.Helper()
	for _, m := range injectionMarkers {
		if strings.Contains(out, m) {
			t.Errorf("%s: raw injected control sequence %q reached the output", where, m)
		}
	}
}

// assertPlain: CLI output under NO_COLOR has no control bytes at all.
func assertPlain(t *testing.T, where, out string) {
	t.Helper()
	for _, r := range out {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Errorf("%s: control character %U in the output: %q", where, r, out)
			return
		}
	}
}

// TestSecurityEscapeInjection sends the payloads through every way in:
// CLI flags, operators add, catalog import, the SSH login name, typing
// into the TUI form over SSH, and the verify body over HTTP. Nothing raw
// reaches CLI output, serve's log or the TUI's frames.
func TestSecurityEscapeInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the real binary; skipped with -short")
	}
	k := newInstall(t)
	good := k.ok("keys", "create", "--json", "--name", "good", "--role", "admin")
	var gk struct{ ID, Token string }
	if err := json.Unmarshal([]byte(good), &gk); err != nil {
		t.Fatal(err)
	}
	cat := k.ok("catalog", "export", "-")
	for i, p := range injections {
		for _, args := range [][]string{
			{"keys", "create", "--name", p, "--scope", "coupons:read"},
			{"keys", "create", "--name", fmt.Sprintf("ok-%d", i), "--description", p, "--scope", "coupons:read"},
			{"keys", "edit", gk.ID, "--description", p},
			{"operators", "add", p, "--role", "admin", "--key", testkit.NewSSHKey(t).Line},
			{"operators", "add", "op" + fmt.Sprint(i), "--role", "admin", "--key", testkit.NewSSHKey(t).Line + " " + p},
		} {
			out, errs, code := k.cli("", args...)
			assertPlain(t, strings.Join(args[:2], " ")+" stdout", out)
			assertPlain(t, strings.Join(args[:2], " ")+" stderr", errs)
			if code == 0 && args[0] == "keys" {
				t.Errorf("%s accepted %q", strings.Join(args[:2], " "), p)
			}
		}
		// catalog import: a scope description and a resource name.
		pj, _ := json.Marshal(p)
		for _, doc := range []string{
			strings.Replace(cat, `"List and read coupons"`, string(pj), 1),
			strings.Replace(cat, `"Web shop"`, string(pj), 1),
		} {
			if doc == cat {
				t.Fatalf("catalog export changed shape; the test cannot inject into it:\n%s", cat)
			}
			out, errs, _ := k.cli(doc, "catalog", "import", "-")
			assertPlain(t, "catalog import stdout", out)
			assertPlain(t, "catalog import stderr", errs)
		}
	}
	for _, args := range [][]string{{"keys", "list"}, {"keys", "list", "--json"}, {"keys", "show", gk.ID}, {"operators", "list"}, {"audit"}, {"audit", "--json"}, {"catalog", "export", "-"}} {
		out, errs, code := k.cli("", args...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, errs)
		}
		assertPlain(t, strings.Join(args, " "), out+errs)
	}

	op := testkit.NewSSHKey(t)
	k.ok("operators", "add", "inj", "--role", "admin", "--key", op.Line)
	sec := secretRE.FindString(k.ok("secret", "show"))
	srv := k.serve("--flush-interval", "200ms")

	// HTTP: payloads in scope and resource (JSON-escaped, as a client
	// would send them).
	c := &http.Client{Timeout: 5 * time.Second}
	for _, p := range injections {
		pj, _ := json.Marshal(p)
		for _, body := range []string{
			`{"key":"` + gk.Token + `","scope":` + string(pj) + `}`,
			`{"key":"` + gk.Token + `","scope":"coupons:read","resource":` + string(pj) + `}`,
			`{"key":` + string(pj) + `}`,
		} {
			code, resp, err := verifyOnce(c, "http://"+srv.httpAddr, sec, body)
			if err != nil {
				t.Fatal(err)
			}
			assertNoInjection(t, fmt.Sprintf("HTTP response (%d)", code), string(resp))
		}
	}
	// SSH: the payload as the login name, then typed into the form.
	for _, p := range injections {
		if cl, err := dialAs(srv, p, op); err == nil {
			cl.Close()
			t.Errorf("login as %q accepted", p)
		}
	}
	v := testkit.OpenTerm(t, srv.dial(t, "inj", op))
	v.WaitText(10*time.Second, 0, "Name")
	for _, p := range injections {
		m := v.Mark()
		v.Keys("n")
		v.WaitText(5*time.Second, m, "New key")
		v.Keys(p, keyEnter, "desc"+p, keyEnter)
		time.Sleep(300 * time.Millisecond)
		v.Keys(keyEsc, keyEsc, keyEsc) // leave whatever is open
		time.Sleep(300 * time.Millisecond)
	}
	// Typed payloads are dropped at the TUI's root before any text field
	// sees them, so not even the typist's own terminal gets them back.
	assertNoInjection(t, "TUI frames over SSH", v.Raw())
	time.Sleep(400 * time.Millisecond)
	srv.stop(t)
	assertNoInjection(t, "serve log", srv.logs.String())
	assertPlain(t, "serve log", srv.logs.String())
	for _, args := range [][]string{{"keys", "list"}, {"keys", "list", "--json"}, {"keys", "show", gk.ID, "--json"}, {"audit"}} {
		out, errs, _ := k.cli("", args...)
		assertPlain(t, strings.Join(args, " ")+" after serve", out+errs)
	}
}

func dialAs(p *serveProcess, user string, key testkit.SSHKey) (*gossh.Client, error) {
	return gossh.Dial("tcp", p.sshAddr, &gossh.ClientConfig{
		User: user, Auth: []gossh.AuthMethod{gossh.PublicKeys(key.Signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second, //nolint:gosec // test against our own server
	})
}
