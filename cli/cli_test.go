package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/spf13/cobra"
)

// The acceptance flow, as a new user would type it.
func TestAcceptanceFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	r := e.ok("keys", "create", "--name", "ci-bot", "--scope", "coupons:read")
	tokens := tokenRE.FindAllString(r.stdout, -1)
	if len(tokens) != 1 {
		t.Fatalf("want the token exactly once on stdout, found %d: %s", len(tokens), r)
	}
	token := tokens[0]
	if !strings.Contains(r.stdout, "will not be shown again") {
		t.Errorf("create does not warn that the token is shown once:\n%s", r.stdout)
	}
	if !regexp.MustCompile(`(?m)^` + token + `$`).MatchString(r.stdout) {
		t.Errorf("the token is not on a line of its own:\n%s", r.stdout)
	}

	keys := e.keys()
	if len(keys) != 1 || keys[0].Name != "ci-bot" || keys[0].Role != "EDITOR" {
		t.Fatalf("keys list --json: %+v", keys)
	}
	id := keys[0].ID
	if keys[0].LastUsedAt != nil {
		t.Fatalf("last_used_at before any verify = %v, want null", keys[0].LastUsedAt)
	}
	if got := e.ok("keys", "list", "--json").stdout; !strings.Contains(got, `"last_used_at": null`) {
		t.Errorf("keys list --json does not print last_used_at as null:\n%s", got)
	}

	r = e.verify(token, "--scope", "coupons:read")
	if r.code != 0 || r.stdout != "VALID\n" {
		t.Fatalf("verify: %s", r)
	}
	// A later process sees the last use: Close flushed it.
	k := e.keys()[0]
	if k.LastUsedAt == nil || k.LastUsedFrom != "cli" {
		t.Fatalf("after verify: last_used_at=%v last_used_from=%q", k.LastUsedAt, k.LastUsedFrom)
	}
	if time.Since(*k.LastUsedAt) > time.Minute {
		t.Errorf("last_used_at %v is not recent", k.LastUsedAt)
	}

	e.ok("keys", "disable", id)
	expectCode(t, e.verify(token, "--scope", "coupons:read"), model.CodeDisabled)
	if r := e.verify(token, "--scope", "coupons:read"); r.stdout != "DISABLED: the key is disabled\n" {
		t.Errorf("human DISABLED line = %q", r.stdout)
	}

	e.ok("keys", "delete", id, "--yes")
	expectCode(t, e.verify(token, "--scope", "coupons:read"), model.CodeNotFound)
	if keys := e.keys(); len(keys) != 0 {
		t.Fatalf("keys left after delete: %+v", keys)
	}
}

// Every verification code is reachable through the CLI.
func TestVerifyCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reader := e.create("--name", "reader", "--scope", "coupons:read")
	shop := e.create("--name", "shop", "--scope", "coupons:read", "--resource", "web-shop")
	off := e.create("--name", "off", "--scope", "coupons:read")
	e.ok("keys", "disable", off.ID)

	e.ok("operators", "add", "bob", "--role", "admin")
	bobs := e.create("--as", "bob", "--name", "bobs-key", "--scope", "coupons:read")
	if bobs.CreatedBy != "bob" {
		t.Fatalf("created_by = %q, want bob", bobs.CreatedBy)
	}
	expectCode(t, e.verify(bobs.Token, "--scope", "coupons:read"), model.CodeValid)
	e.ok("operators", "disable", "bob") // as the bootstrap operator

	unknown, err := model.GenerateToken("")
	if err != nil {
		t.Fatal(err)
	}
	badSum := []byte(reader.Token)
	if badSum[len(badSum)-1] == 'A' {
		badSum[len(badSum)-1] = 'B'
	} else {
		badSum[len(badSum)-1] = 'A'
	}

	cases := []struct {
		name  string
		token string
		args  []string
		want  model.Code
	}{
		{"valid", reader.Token, []string{"--scope", "coupons:read"}, model.CodeValid},
		{"valid without scope", reader.Token, nil, model.CodeValid},
		{"valid on resource", shop.Token, []string{"--scope", "coupons:read", "--resource", "web-shop"}, model.CodeValid},
		{"garbage", "not-a-token", nil, model.CodeMalformed},
		{"checksum changed", string(badSum), nil, model.CodeMalformed},
		{"unknown token", unknown.String(), nil, model.CodeNotFound},
		{"disabled", off.Token, []string{"--scope", "coupons:read"}, model.CodeDisabled},
		{"insufficient scope", reader.Token, []string{"--scope", "coupons:write"}, model.CodeInsufficientScope},
		{"forbidden resource", shop.Token, []string{"--scope", "coupons:read", "--resource", "mobile-app"}, model.CodeForbiddenResource},
		{"creator disabled", bobs.Token, []string{"--scope", "coupons:read"}, model.CodeCreatorDisabled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectCode(t, e.verify(tc.token, tc.args...), tc.want)
			// The JSON form says the same.
			r := e.verify(tc.token, append(tc.args, "--json")...)
			res := decode[model.VerifyResult](t, r)
			if res.Code != tc.want || res.Valid != (tc.want == model.CodeValid) {
				t.Fatalf("--json: %+v", res)
			}
		})
	}
}

func TestVerifyExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	until := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	k := e.create("--name", "short-lived", "--scope", "coupons:read", "--expires", until.Format(time.RFC3339))
	if k.ExpiresAt == nil || !k.ExpiresAt.Equal(until) {
		t.Fatalf("expires_at = %v, want %v", k.ExpiresAt, until)
	}
	expectCode(t, e.verify(k.Token, "--scope", "coupons:read"), model.CodeValid)
	time.Sleep(time.Until(until) + 100*time.Millisecond)
	expectCode(t, e.verify(k.Token, "--scope", "coupons:read"), model.CodeExpired)
}

func TestVerifyInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.create("--name", "padded", "--scope", "coupons:read")
	// Surrounding whitespace (as from echo or a file) is trimmed.
	if r := e.run("  \t"+k.Token+"\r\n\n", "verify"); r.code != 0 {
		t.Fatalf("padded token: %s", r)
	}
	for name, in := range map[string]string{"empty": "", "blank": " \n ", "over 4 KiB": strings.Repeat("x", 4097)} {
		if r := e.run(in, "verify"); r.code != 2 || !strings.HasPrefix(r.stderr, "keyward: ") {
			t.Errorf("%s stdin: want usage error (exit 2), got %s", name, r)
		}
	}
	if r := e.run(k.Token, "verify", "extra"); r.code != 2 {
		t.Errorf("verify with an argument: %s", r)
	}
}

// Bad input gets a specific error naming the flag, exit 2, and nothing is
// written.
func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	existing := e.create("--name", "existing", "--scope", "coupons:read")
	before := e.ok("keys", "list", "--json").stdout
	auditBefore := e.auditLen()

	past := time.Now().AddDate(0, 0, -1).Format(time.DateOnly)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"empty name", []string{"keys", "create", "--name", "", "--scope", "coupons:read"}, "--name: name is required"},
		{"missing name", []string{"keys", "create", "--scope", "coupons:read"}, "--name is required"},
		{"65-character name", []string{"keys", "create", "--name", strings.Repeat("n", 65), "--scope", "coupons:read"}, "--name: name is 65 characters; the limit is 64"},
		{"escape in name", []string{"keys", "create", "--name", "evil\x1b]52;c;aGVsbG8=\x07", "--scope", "coupons:read"}, "--name: name contains a control or escape character"},
		{"taken name", []string{"keys", "create", "--name", "existing", "--scope", "coupons:read"}, "--name: name \"existing\" is already used"},
		{"unknown scope", []string{"keys", "create", "--name", "x", "--scope", "coupons:delete"}, `--scope: unknown scope "coupons:delete"`},
		{"unknown resource", []string{"keys", "create", "--name", "x", "--scope", "coupons:read", "--resource", "moon-base"}, `--resource: unknown resource "moon-base"`},
		{"no scope", []string{"keys", "create", "--name", "x"}, "--scope: choose at least one scope"},
		{"past expiry", []string{"keys", "create", "--name", "x", "--scope", "coupons:read", "--expires", past}, "--expires: expiry " + past + " 00:00 is not in the future"},
		{"unparsable expiry", []string{"keys", "create", "--name", "x", "--scope", "coupons:read", "--expires", "soon"}, `--expires: "soon" is not a date`},
		{"expiry past 2262", []string{"keys", "create", "--name", "x", "--scope", "coupons:read", "--expires", "2500-01-01"}, "--expires: expiry 2500-01-01 is more than 100 years away; choose no expiry (never) instead"},
		{"readonly with write scope", []string{"keys", "create", "--name", "x", "--role", "readonly", "--scope", "coupons:write"}, "--scope: READONLY keys may only have :read scopes"},
		{"global scope with resources", []string{"keys", "create", "--name", "x", "--scope", "analytics:read", "--resource", "web-shop"}, `--scope: scope "analytics:read" does not work per resource`},
		{"admin with scopes", []string{"keys", "create", "--name", "x", "--role", "admin", "--scope", "coupons:read"}, "--scope: ADMIN keys get every scope"},
		{"unknown role", []string{"keys", "create", "--name", "x", "--role", "owner", "--scope", "coupons:read"}, `--role: unknown role "owner"`},
		{"unknown flag", []string{"keys", "create", "--name", "x", "--scopes", "coupons:read"}, "unknown flag: --scopes"},
		{"delete without --yes", []string{"keys", "delete", existing.ID}, "refusing to delete key " + existing.ID + " without --yes"},
		{"edit with nothing", []string{"keys", "edit", existing.ID}, "nothing to change"},
		{"edit bad scope", []string{"keys", "edit", existing.ID, "--scope", "nope:read"}, `--scope: unknown scope "nope:read"`},
		{"bad grace", []string{"keys", "regenerate", existing.ID, "--grace", "forever"}, `--grace: "forever" is not a duration`},
		{"unknown subcommand", []string{"keys", "frobnicate"}, `unknown command "frobnicate" for "keyward keys"`},
		{"missing id", []string{"keys", "show"}, "keyward keys show needs ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.run("", tc.args...)
			if r.code != 2 {
				t.Fatalf("want exit 2, got %s", r)
			}
			if !strings.HasPrefix(r.stderr, "keyward: "+tc.want) {
				t.Fatalf("stderr should start with %q:\n%s", "keyward: "+tc.want, r.stderr)
			}
			if strings.ContainsAny(r.stderr, "\x1b\x07") {
				t.Fatalf("stderr holds raw control characters: %q", r.stderr)
			}
			if r.stdout != "" {
				t.Fatalf("stdout should be empty on error: %q", r.stdout)
			}
		})
	}
	if after := e.ok("keys", "list", "--json").stdout; after != before {
		t.Errorf("keys changed:\nbefore %s\nafter %s", before, after)
	}
	if n := e.auditLen(); n != auditBefore {
		t.Errorf("audit grew from %d to %d events", auditBefore, n)
	}
}

// A token is printed once, on stdout, by create and regenerate, and
// nowhere else: not on stderr, not in the audit log, not in the file.
func TestTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var tokens []string
	var noise string // everything except the one stdout that carries each token

	for _, args := range [][]string{
		{"keys", "create", "--name", "human", "--scope", "coupons:read"},
		{"keys", "create", "--name", "forever", "--role", "admin", "--expires", "never"},
	} {
		r := e.ok(args...)
		found := tokenRE.FindAllString(r.stdout, -1)
		if len(found) != 1 {
			t.Fatalf("%v: want one token on stdout, got %d:\n%s", args, len(found), r)
		}
		tokens = append(tokens, found[0])
		noise += r.stderr
	}
	if !strings.Contains(noise, "never expires") {
		t.Errorf("--expires never gave no warning on stderr: %q", noise)
	}

	k := e.create("--name", "json", "--scope", "coupons:read")
	tokens = append(tokens, k.Token)
	r := e.ok("keys", "regenerate", k.ID, "--grace", "1h")
	found := tokenRE.FindAllString(r.stdout, -1)
	if len(found) != 1 || found[0] == k.Token {
		t.Fatalf("regenerate: want one new token on stdout:\n%s", r)
	}
	tokens = append(tokens, found[0])
	noise += r.stderr
	// During the grace period both tokens verify.
	expectCode(t, e.verify(k.Token), model.CodeValid)
	expectCode(t, e.verify(found[0]), model.CodeValid)
	rj := decode[cliKey](t, e.ok("keys", "regenerate", k.ID, "--json"))
	tokens = append(tokens, rj.Token)
	expectCode(t, e.verify(found[0]), model.CodeNotFound)

	for _, args := range [][]string{
		{"audit"}, {"audit", "--json"}, {"keys", "list"}, {"keys", "list", "--json"},
		{"keys", "show", k.ID}, {"keys", "show", k.ID, "--json"},
	} {
		r := e.ok(args...)
		noise += r.stdout + r.stderr
	}
	db, err := os.ReadFile(e.db)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if strings.Contains(noise, tok) {
			t.Errorf("token %s… appears outside its one stdout", tok[:7])
		}
		if bytes.Contains(db, []byte(tok)) {
			t.Errorf("token %s… appears in the database file", tok[:7])
		}
	}
}

// verify reads its token before opening the database, so one waiting on
// stdin does not lock other commands out.
func TestVerifyWaitingDoesNotHoldTheDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.create("--name", "slow-pipe", "--scope", "coupons:read")
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() { done <- e.runFrom(pr, "verify") }()
	time.Sleep(300 * time.Millisecond)
	e.ok("keys", "disable", k.ID)
	pw.Write([]byte(k.Token + "\n"))
	pw.Close()
	select {
	case r := <-done:
		if r.code != 1 || r.stdout != "DISABLED: the key is disabled\n" {
			t.Fatalf("verify: %s", r)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("verify never returned")
	}
}

func TestJSONShapes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.create("--name", "root-key", "--role", "admin", "--description", "all powerful")
	raw := e.ok("keys", "show", admin.ID, "--json").stdout
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"id", "name", "description", "role", "scopes", "resources", "status",
		"created_at", "created_by", "expires_at", "last_used_at", "last_used_from"} {
		if _, ok := m[field]; !ok {
			t.Errorf("keys show --json lacks %q:\n%s", field, raw)
		}
	}
	if _, ok := m["token"]; ok {
		t.Errorf("keys show --json must not hold a token")
	}
	for _, list := range []string{"scopes", "resources"} {
		if v, ok := m[list].([]any); !ok || len(v) != 0 {
			t.Errorf("%s = %#v, want []", list, m[list])
		}
	}
	if m["status"] != "active" || m["role"] != "ADMIN" {
		t.Errorf("status/role = %v/%v", m["status"], m["role"])
	}
	// Default expiry: a year from now.
	exp := admin.ExpiresAt
	if exp == nil || exp.Sub(time.Now()) < model.DefaultLifetime-time.Minute || exp.Sub(time.Now()) > model.DefaultLifetime {
		t.Errorf("default expires_at = %v, want about now + 365 days", exp)
	}
	// YYYY-MM-DD means 00:00 UTC that day.
	next := time.Now().UTC().AddDate(0, 2, 0).Format(time.DateOnly)
	dated := e.create("--name", "dated", "--scope", "coupons:read", "--expires", next, "--inactive")
	if got := dated.ExpiresAt.UTC().Format(time.RFC3339); got != next+"T00:00:00Z" {
		t.Errorf("--expires %s gave %s", next, got)
	}
	if dated.Status != "disabled" {
		t.Errorf("--inactive gave status %q", dated.Status)
	}
	never := e.create("--name", "never", "--scope", "coupons:read", "--expires", "never")
	if never.ExpiresAt != nil || !strings.Contains(e.ok("keys", "show", never.ID, "--json").stdout, `"expires_at": null`) {
		t.Errorf("--expires never: expires_at = %v", never.ExpiresAt)
	}

	// (An unknown --key is now an error, not an empty list: match nothing.)
	if got := e.ok("audit", "--grep", "no-event-matches-this", "--json").stdout; strings.TrimSpace(got) != "[]" {
		t.Errorf("empty audit --json = %q, want []", got)
	}

	// The shared secret: show --json has exactly the documented fields, and
	// the secret never reaches the audit log or the database file.
	sraw := e.ok("secret", "show", "--json").stdout
	var sm map[string]any
	if err := json.Unmarshal([]byte(sraw), &sm); err != nil {
		t.Fatal(err)
	}
	secret, _ := sm["secret"].(string)
	if len(sm) != 3 || !strings.HasPrefix(secret, "kws_") || sm["created_at"] == nil {
		t.Fatalf("secret show --json = %s", sraw)
	}
	if _, ok := sm["rotated_at"]; !ok {
		t.Fatalf("secret show --json lacks rotated_at: %s", sraw)
	}
	if again := e.ok("secret", "show", "--json").stdout; again != sraw {
		t.Errorf("secret show changed the secret:\n%s\n%s", sraw, again)
	}
	info := e.ok("secret", "info").stdout
	rot := decode[map[string]any](t, e.ok("secret", "rotate", "--json"))
	if rot["secret"] == secret || rot["rotated_at"] == nil {
		t.Errorf("secret rotate: %v", rot)
	}
	audit := e.ok("audit").stdout + e.ok("audit", "--json").stdout
	db, _ := os.ReadFile(e.db)
	for _, s := range []string{secret, rot["secret"].(string)} {
		if strings.Contains(audit, s) || strings.Contains(info, s) || bytes.Contains(db, []byte(s)) {
			t.Errorf("shared secret %s… leaked into the audit log, secret info or the database", s[:8])
		}
	}
	if fi, err := os.Stat(e.db + ".masterkey"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("master key file: %v %v", fi, err)
	}
}

func TestEditIsPartial(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.create("--name", "shop-sync", "--description", "syncs the shop", "--scope", "coupons:read,coupons:write", "--resource", "web-shop", "--expires", "90d")

	e.ok("keys", "edit", k.ID, "--name", "shop-sync-2")
	got := e.key(k.ID)
	if got.Name != "shop-sync-2" || len(got.Scopes) != 2 || len(got.Resources) != 1 || !got.ExpiresAt.Equal(*k.ExpiresAt) {
		t.Fatalf("edit --name changed more than the name: %+v", got)
	}
	e.ok("keys", "edit", k.ID, "--scope", "campaigns:read")
	if got := e.key(k.ID); strings.Join(got.Scopes, ",") != "campaigns:read" || len(got.Resources) != 1 {
		t.Fatalf("--scope should replace the scopes only: %+v", got)
	}
	e.ok("keys", "edit", k.ID, "--clear-resources", "--scope", "analytics:read")
	if got := e.key(k.ID); len(got.Resources) != 0 || strings.Join(got.Scopes, ",") != "analytics:read" {
		t.Fatalf("--clear-resources: %+v", got)
	}
	e.ok("keys", "edit", k.ID, "--role", "admin")
	if got := e.key(k.ID); got.Role != "ADMIN" || len(got.Scopes) != 0 {
		t.Fatalf("--role admin should drop the scopes: %+v", got)
	}
	if r := e.ok("keys", "edit", k.ID, "--role", "admin"); !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("a no-op edit should say so: %s", r)
	}
	e.ok("keys", "edit", k.ID, "--expires", "never")
	if got := e.key(k.ID); got.ExpiresAt != nil {
		t.Fatalf("--expires never: %+v", got)
	}
	evs := decode[[]model.AuditEvent](t, e.ok("audit", "--key", k.ID, "--json"))
	if len(evs) != 6 || evs[0].Action != model.ActKeyEdit || evs[len(evs)-1].Action != model.ActKeyCreate {
		t.Errorf("audit for the key: %+v", evs)
	}
	if r := e.ok("audit", "--grep", "shop-sync-2", "--limit", "1"); strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("audit --grep --limit 1:\n%s", r.stdout)
	}

	// Disabling twice says so and writes nothing the second time.
	e.ok("keys", "disable", k.ID)
	if r := e.ok("keys", "disable", k.ID); !strings.Contains(r.stdout, "already disabled") {
		t.Errorf("second disable: %s", r)
	}
	if evs := decode[[]model.AuditEvent](t, e.ok("audit", "--key", k.ID, "--json")); len(evs) != 7 {
		t.Errorf("want 7 audit events after one real disable, got %d", len(evs))
	}
}

func TestOperators(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ops := decode[[]model.Operator](t, e.ok("operators", "list", "--json"))
	if len(ops) != 1 || ops[0].Role != model.OperatorAdmin {
		t.Fatalf("a new database has one ADMIN operator: %+v", ops)
	}
	me := ops[0].Name
	pub := testPublicKey(t) + " alice@laptop"
	e.ok("operators", "add", "alice", "--role", "readonly", "--key", pub)
	if r := e.run("", "operators", "add", "carol"); r.code != 2 || !strings.Contains(r.stderr, "--role is required") {
		t.Errorf("add without --role: %s", r)
	}
	if r := e.run("", "operators", "add", "Bad Name", "--role", "admin"); r.code != 2 {
		t.Errorf("bad operator name: %s", r)
	}
	// READONLY operators may look but not change.
	e.ok("--as", "alice", "keys", "list")
	if r := e.run("", "--as", "alice", "keys", "create", "--name", "x", "--scope", "coupons:read"); r.code != 1 || !strings.Contains(r.stderr, "READONLY") {
		t.Errorf("READONLY operator created a key: %s", r)
	}
	e.ok("operators", "role", "alice", "admin")
	e.ok("--as", "alice", "keys", "create", "--name", "x", "--scope", "coupons:read")
	e.ok("operators", "disable", "alice")
	e.ok("operators", "enable", "alice")
	if r := e.run("", "operators", "delete", "alice"); r.code != 2 {
		t.Errorf("delete without --yes: %s", r)
	}
	e.ok("operators", "delete", "alice", "--yes")
	if r := e.run("", "operators", "disable", me); r.code != 1 || !strings.Contains(r.stderr, "no active ADMIN") {
		t.Errorf("disabling the last ADMIN: %s", r)
	}
	list := e.ok("operators", "list").stdout
	if !strings.Contains(list, me) || strings.Contains(list, "alice") {
		t.Errorf("operators list:\n%s", list)
	}
}

func TestCatalogAndBackup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	exported := e.ok("catalog", "export", "-").stdout
	cat, err := model.ParseCatalog([]byte(exported))
	if err != nil || len(cat.Scopes) != 10 {
		t.Fatalf("export of the demo catalog: %v\n%s", err, exported)
	}
	cat.Scopes = append(cat.Scopes, model.Scope{Name: "vouchers:read", Description: "Read vouchers", PerResource: true})
	data, _ := json.Marshal(cat)
	r := e.run(string(data), "catalog", "import", "-")
	if r.code != 0 {
		t.Fatal(r)
	}
	e.create("--name", "vouchers", "--scope", "vouchers:read")
	file := filepath.Join(e.dir, "cat.json")
	e.ok("catalog", "export", file)
	if got, _ := os.ReadFile(file); !strings.Contains(string(got), "vouchers:read") {
		t.Errorf("exported file lacks the new scope")
	}
	if r := e.run("{not json", "catalog", "import", "-"); r.code != 2 {
		t.Errorf("importing garbage: %s", r)
	}
	// Dropping a scope a key uses is refused.
	if r := e.run(exported, "catalog", "import", "-"); r.code != 1 || !strings.Contains(r.stderr, "vouchers:read") {
		t.Errorf("dropping a granted scope: %s", r)
	}

	backup := filepath.Join(e.dir, "backup.db")
	e.ok("backup", backup)
	if r := e.run("", "backup", backup); r.code != 2 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("backup over an existing file: %s", r)
	}
	e.ok("backup", backup, "--force")
	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	// The backup is a working database with the same keys.
	restored := &env{t: t, dir: e.dir, db: backup}
	if keys := restored.keys(); len(keys) != 1 || keys[0].Name != "vouchers" {
		t.Errorf("keys in the backup: %+v", keys)
	}
	if left, _ := filepath.Glob(filepath.Join(e.dir, ".backup.db.tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestDevSeed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.ok("dev", "seed", "--keys", "250", "--seed", "3")
	if !strings.Contains(r.stdout, "Seeded 250 keys in") {
		t.Errorf("seed output: %s", r)
	}
	e.ok("dev", "seed", "--keys", "50") // a second run adds, without name clashes
	type seededKey struct {
		cliKey
		CreatedAt     time.Time           `json:"created_at"`
		DisplayStatus model.DisplayStatus `json:"display_status"`
	}
	keys := decode[[]seededKey](t, e.ok("keys", "list", "--json"))
	if len(keys) != 300 {
		t.Fatalf("want 300 keys, got %d", len(keys))
	}
	roles := map[string]int{}
	disabled := 0
	shown := map[model.DisplayStatus]int{}
	var never, neverUsed, stale int
	now := time.Now()
	for _, k := range keys {
		roles[k.Role]++
		if k.Status == "disabled" {
			disabled++
		}
		shown[k.DisplayStatus]++
		if k.ExpiresAt == nil {
			never++
		} else if time.Until(*k.ExpiresAt) > 731*24*time.Hour || !k.ExpiresAt.After(k.CreatedAt) {
			t.Fatalf("expiry out of range: %+v", k)
		}
		switch {
		case k.LastUsedAt == nil:
			neverUsed++
		case k.LastUsedAt.Before(k.CreatedAt) || k.LastUsedAt.After(now):
			t.Fatalf("last used out of range: %+v", k)
		case now.Sub(*k.LastUsedAt) > 90*24*time.Hour:
			stale++
		}
	}
	if len(roles) != 3 || disabled == 0 || disabled == len(keys) {
		t.Errorf("seed is not varied: roles %v, %d disabled", roles, disabled)
	}
	// The operator who seeds a new database was made just now, and a key
	// older than its creator's account is refused by verify
	// (CREATOR_DISABLED): so no key is older than the account, and none
	// can be unused for 90 days yet.
	if shown[model.ShowCreatorDisabled] != 0 {
		t.Errorf("seeded keys that verify would refuse as CREATOR_DISABLED: %v", shown)
	}
	if len(shown) != 4 || never == 0 || neverUsed == 0 || neverUsed+stale == len(keys) {
		t.Errorf("seed is not varied: statuses %v, %d never expire, %d never used, %d unused 90 days", shown, never, neverUsed, stale)
	}
	if r := e.run("", "dev", "seed"); r.code != 2 {
		t.Errorf("seed without --keys: %s", r)
	}
}

// Every command explains itself with examples, and --help works without
// touching a database.
func TestHelp(t *testing.T) {
	t.Parallel()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" || c.Example == "" {
			t.Errorf("%q needs a short description and examples", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk((&app{}).rootCmd())

	e := newEnv(t)
	for _, args := range [][]string{{"--help"}, {"keys", "create", "--help"}, {"verify", "--help"}, {"keys"}} {
		r := e.run("", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Example") {
			t.Errorf("keyward %v: %s", args, r)
		}
	}
	if _, err := os.Stat(e.db); err == nil {
		t.Errorf("--help created the database")
	}
}

// TestTUINeedsATerminal: `keyward` with no terminal (a pipe, cron, CI)
// says how to script it instead of bubbletea's raw TTY error, exits 2,
// and does not create or lock the database.
func TestTUINeedsATerminal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.run("")
	if r.code != 2 || !strings.Contains(r.stderr, "the TUI needs a terminal") || !strings.Contains(r.stderr, "keyward keys list --json") {
		t.Fatalf("keyward without a terminal: %s", r)
	}
	if strings.Contains(r.stderr, "/dev/tty") {
		t.Errorf("raw TTY error leaked: %s", r)
	}
	if _, err := os.Stat(e.db); err == nil {
		t.Errorf("refusing to start the TUI still created the database")
	}
}

// TestOperatorKeysCLI (issue 12.7, 12.4): `operators keys list|add|remove`
// manage an existing operator's SSH keys, the bootstrap ADMIN included;
// keys are validated and unique; every change is audited; disabling and
// deleting name the keys that stop verifying; no one disables, demotes or
// deletes themself.
func TestOperatorKeysCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	me := decode[[]model.Operator](t, e.ok("operators", "list", "--json"))[0].Name
	if r := e.ok("operators", "keys", "list", me); !strings.Contains(r.stdout, "no SSH key") {
		t.Errorf("keys list of the bootstrap ADMIN: %s", r)
	}
	if keys := decode[[]map[string]string](t, e.ok("operators", "keys", "list", me, "--json")); len(keys) != 0 {
		t.Errorf("keys list --json: %v", keys)
	}
	pub := testPublicKey(t)
	// Counts are spelt out properly (it said "1 SSH key(s)").
	other := testPublicKey(t)
	if r := e.ok("operators", "keys", "add", me, "--key", other); !strings.Contains(r.stdout, "(1 SSH key).") {
		t.Errorf("keys add output: %s", r)
	}
	if r := e.ok("operators", "keys", "remove", me, other); !strings.Contains(r.stdout, "(0 SSH keys left)") {
		t.Errorf("keys remove output: %s", r)
	}
	added := decode[map[string]string](t, e.ok("operators", "keys", "add", me, "--key", pub+" me@laptop", "--json"))
	if !strings.HasPrefix(added["fingerprint"], "SHA256:") || added["comment"] != "me@laptop" || added["type"] != "ssh-ed25519" {
		t.Fatalf("keys add --json: %v", added)
	}
	keys := decode[[]map[string]string](t, e.ok("operators", "keys", "list", me, "--json"))
	if len(keys) != 1 || keys[0]["fingerprint"] != added["fingerprint"] {
		t.Fatalf("keys list after add: %v", keys)
	}
	if r := e.ok("operators", "keys", "list", me); !strings.Contains(r.stdout, added["fingerprint"]) {
		t.Errorf("keys list table: %s", r)
	}
	// Refusals: no --key, a bad line, a key already registered (to anyone).
	e.ok("operators", "add", "bob", "--role", "admin")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"operators", "keys", "add", me}, 2, "--key is required"},
		{[]string{"operators", "keys", "add", me, "--key", "ssh-ed25519 \x1b[2Jnot-base64"}, 2, "base64"},
		{[]string{"operators", "keys", "add", "bob", "--key", pub}, 2, "already belongs"},
		{[]string{"operators", "keys", "add", "nobody", "--key", testPublicKey(t)}, 1, "not found"},
		{[]string{"operators", "keys", "remove", "bob", added["fingerprint"]}, 1, "no SSH key"},
		{[]string{"operators", "keys", "list"}, 2, "NAME"},
	} {
		r := e.run("", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || strings.Contains(r.stderr, "\x1b") {
			t.Errorf("keyward %q: %s; want exit %d and %q", c.args, r, c.code, c.want)
		}
	}
	// bob creates two keys; disabling him says they stop verifying.
	for _, n := range []string{"b1", "b2"} {
		e.ok("--as", "bob", "keys", "create", "--name", n, "--scope", "coupons:read")
	}
	if r := e.ok("operators", "disable", "bob"); !strings.Contains(r.stdout, "2 keys created by bob stop verifying (CREATOR_DISABLED)") {
		t.Errorf("disable output: %s", r)
	}
	e.ok("operators", "enable", "bob")
	// No one disables, demotes or deletes themself, even with another ADMIN.
	for _, args := range [][]string{{"operators", "disable", me}, {"operators", "role", me, "readonly"}, {"operators", "delete", me, "--yes"}} {
		if r := e.run("", args...); r.code != 1 || !strings.Contains(r.stderr, "your own operator account") {
			t.Errorf("keyward %q: %s; want a refusal", args, r)
		}
	}
	// Another ADMIN may.
	if r := e.ok("--as", "bob", "operators", "role", me, "readonly"); !strings.Contains(r.stdout, "READONLY") {
		t.Errorf("bob demoting %s: %s", me, r)
	}
	e.ok("--as", "bob", "operators", "role", me, "admin")
	removed := decode[map[string]any](t, e.ok("operators", "keys", "remove", me, pub, "--json"))
	if removed["removed"] != added["fingerprint"] || removed["keys_left"] != float64(0) {
		t.Errorf("keys remove --json: %v", removed)
	}
	var add, del int
	for _, ev := range decode[[]model.AuditEvent](t, e.ok("audit", "--json")) {
		switch ev.Action {
		case model.ActOperatorKeyAdd:
			add++
		case model.ActOperatorKeyDel:
			del++
		}
	}
	if add != 2 || del != 2 {
		t.Errorf("audit: %d key additions and %d removals, want 2 and 2", add, del)
	}
	if r := e.ok("operators", "keys", "--help"); !strings.Contains(r.stdout, `keyward operators keys add "$USER"`) {
		t.Errorf("operators keys --help lacks the bootstrap line:\n%s", r.stdout)
	}
}

// keys list and keys show (text and JSON) say what verify answers: a key
// whose creator is disabled or deleted is CREATOR_DISABLED there too, not
// ACTIVE (issue 12.3). "status" stays the stored value.
func TestCLIKeyStatusFollowsCreator(t *testing.T) {
	e := newEnv(t)
	e.ok("operators", "add", "bob", "--role", "admin")
	e.ok("operators", "add", "carol", "--role", "admin")
	bobs := e.create("--as", "bob", "--name", "bobs-key", "--scope", "coupons:read")
	carols := e.create("--as", "carol", "--name", "carols-key", "--scope", "coupons:read")
	mine := e.create("--name", "mine", "--scope", "coupons:read")
	e.ok("operators", "disable", "bob")
	e.ok("operators", "delete", "carol", "--yes")

	type shown struct {
		ID            string `json:"id"`
		Status        string `json:"status"`
		DisplayStatus string `json:"display_status"`
	}
	want := map[string]string{bobs.ID: "CREATOR_DISABLED", carols.ID: "CREATOR_DISABLED", mine.ID: "ACTIVE"}
	for _, k := range []cliKey{bobs, carols, mine} {
		code := model.Code(want[k.ID])
		if want[k.ID] == "ACTIVE" {
			code = model.CodeValid
		}
		expectCode(t, e.verify(k.Token, "--scope", "coupons:read"), code)

		s := decode[shown](t, e.ok("keys", "show", k.ID, "--json"))
		if s.DisplayStatus != want[k.ID] || s.Status != "active" {
			t.Errorf("keys show %s --json: status %q display_status %q, want active / %s", k.Name, s.Status, s.DisplayStatus, want[k.ID])
		}
		out := e.ok("keys", "show", k.ID).stdout
		if !regexp.MustCompile(`(?m)^Status\s+` + want[k.ID] + `$`).MatchString(out) {
			t.Errorf("keys show %s: want Status %s in\n%s", k.Name, want[k.ID], out)
		}
	}
	for _, s := range decode[[]shown](t, e.ok("keys", "list", "--json")) {
		if s.DisplayStatus != want[s.ID] {
			t.Errorf("keys list --json: %s display_status %q, want %s", s.ID, s.DisplayStatus, want[s.ID])
		}
	}
	list := e.ok("keys", "list").stdout
	for _, k := range []cliKey{bobs, carols, mine} {
		if !regexp.MustCompile(`(?m)^` + k.ID + `\s+` + k.Name + `\s+\S+\s+` + want[k.ID] + `\s`).MatchString(list) {
			t.Errorf("keys list: want %s %s in\n%s", k.Name, want[k.ID], list)
		}
	}
	// Enabling the creator again makes the key verify, and show so.
	e.ok("operators", "enable", "bob")
	expectCode(t, e.verify(bobs.Token, "--scope", "coupons:read"), model.CodeValid)
	if s := decode[shown](t, e.ok("keys", "show", bobs.ID, "--json")); s.DisplayStatus != "ACTIVE" {
		t.Errorf("after enabling bob: display_status %q, want ACTIVE", s.DisplayStatus)
	}
}
