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

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/spf13/cobra"
)

// The acceptance flow, as a new user would type it.
func TestAcceptanceFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	r := e.OK("keys", "create", "--name", "ci-bot", "--scope", "coupons:read")
	tokens := tokenRE.FindAllString(r.Stdout, -1)
	if len(tokens) != 1 {
		t.Fatalf("want the token exactly once on stdout, found %d: %s", len(tokens), r)
	}
	token := tokens[0]
	if !strings.Contains(r.Stdout, "will not be shown again") {
		t.Errorf("create does not warn that the token is shown once:\n%s", r.Stdout)
	}
	if !regexp.MustCompile(`(?m)^` + token + `$`).MatchString(r.Stdout) {
		t.Errorf("the token is not on a line of its own:\n%s", r.Stdout)
	}

	keys := e.Keys()
	if len(keys) != 1 || keys[0].Name != "ci-bot" || keys[0].Role != "EDITOR" {
		t.Fatalf("keys list --json: %+v", keys)
	}
	id := keys[0].ID
	if keys[0].LastUsedAt != nil {
		t.Fatalf("last_used_at before any verify = %v, want null", keys[0].LastUsedAt)
	}
	if got := e.OK("keys", "list", "--json").Stdout; !strings.Contains(got, `"last_used_at": null`) {
		t.Errorf("keys list --json does not print last_used_at as null:\n%s", got)
	}

	r = e.verify(token, "--scope", "coupons:read")
	if r.Code != 0 || r.Stdout != "VALID\n" {
		t.Fatalf("verify: %s", r)
	}
	// A later process sees the last use: Close flushed it.
	k := e.Keys()[0]
	if k.LastUsedAt == nil || k.LastUsedFrom != "cli" {
		t.Fatalf("after verify: last_used_at=%v last_used_from=%q", k.LastUsedAt, k.LastUsedFrom)
	}
	if time.Since(*k.LastUsedAt) > time.Minute {
		t.Errorf("last_used_at %v is not recent", k.LastUsedAt)
	}

	e.OK("keys", "disable", id)
	expectCode(t, e.verify(token, "--scope", "coupons:read"), model.CodeDisabled)
	if r := e.verify(token, "--scope", "coupons:read"); r.Stdout != "DISABLED: the key is disabled\n" {
		t.Errorf("human DISABLED line = %q", r.Stdout)
	}

	e.OK("keys", "delete", id, "--yes")
	expectCode(t, e.verify(token, "--scope", "coupons:read"), model.CodeNotFound)
	if keys := e.Keys(); len(keys) != 0 {
		t.Fatalf("keys left after delete: %+v", keys)
	}
}

// Every verification code is reachable through the CLI.
func TestVerifyCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reader := e.Create("--name", "reader", "--scope", "coupons:read")
	shop := e.Create("--name", "shop", "--scope", "coupons:read", "--resource", "web-shop")
	off := e.Create("--name", "off", "--scope", "coupons:read")
	e.OK("keys", "disable", off.ID)

	e.OK("operators", "add", "bob", "--role", "admin")
	bobs := e.Create("--as", "bob", "--name", "bobs-key", "--scope", "coupons:read")
	if bobs.CreatedBy != "bob" {
		t.Fatalf("created_by = %q, want bob", bobs.CreatedBy)
	}
	expectCode(t, e.verify(bobs.Token, "--scope", "coupons:read"), model.CodeValid)
	e.OK("operators", "disable", "bob") // as the bootstrap operator

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
			res := testkit.Decode[model.VerifyResult](t, r)
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
	k := e.Create("--name", "short-lived", "--scope", "coupons:read", "--expires", until.Format(time.RFC3339))
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
	k := e.Create("--name", "padded", "--scope", "coupons:read")
	// Surrounding whitespace (as from echo or a file) is trimmed.
	if r := e.Run("  \t"+k.Token+"\r\n\n", "verify"); r.Code != 0 {
		t.Fatalf("padded token: %s", r)
	}
	for name, in := range map[string]string{"empty": "", "blank": " \n ", "over 4 KiB": strings.Repeat("x", 4097)} {
		if r := e.Run(in, "verify"); r.Code != 2 || !strings.HasPrefix(r.Stderr, "keyward: ") {
			t.Errorf("%s stdin: want usage error (exit 2), got %s", name, r)
		}
	}
	if r := e.Run(k.Token, "verify", "extra"); r.Code != 2 {
		t.Errorf("verify with an argument: %s", r)
	}
}

// Bad input gets a specific error naming the flag, exit 2, and nothing is
// written.
func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	existing := e.Create("--name", "existing", "--scope", "coupons:read")
	before := e.OK("keys", "list", "--json").Stdout
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
			r := e.Run("", tc.args...)
			if r.Code != 2 {
				t.Fatalf("want exit 2, got %s", r)
			}
			if !strings.HasPrefix(r.Stderr, "keyward: "+tc.want) {
				t.Fatalf("stderr should start with %q:\n%s", "keyward: "+tc.want, r.Stderr)
			}
			if strings.ContainsAny(r.Stderr, "\x1b\x07") {
				t.Fatalf("stderr holds raw control characters: %q", r.Stderr)
			}
			if r.Stdout != "" {
				t.Fatalf("stdout should be empty on error: %q", r.Stdout)
			}
		})
	}
	if after := e.OK("keys", "list", "--json").Stdout; after != before {
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
		r := e.OK(args...)
		found := tokenRE.FindAllString(r.Stdout, -1)
		if len(found) != 1 {
			t.Fatalf("%v: want one token on stdout, got %d:\n%s", args, len(found), r)
		}
		tokens = append(tokens, found[0])
		noise += r.Stderr
	}
	if !strings.Contains(noise, "never expires") {
		t.Errorf("--expires never gave no warning on stderr: %q", noise)
	}

	k := e.Create("--name", "json", "--scope", "coupons:read")
	tokens = append(tokens, k.Token)
	r := e.OK("keys", "regenerate", k.ID, "--grace", "1h")
	found := tokenRE.FindAllString(r.Stdout, -1)
	if len(found) != 1 || found[0] == k.Token {
		t.Fatalf("regenerate: want one new token on stdout:\n%s", r)
	}
	tokens = append(tokens, found[0])
	noise += r.Stderr
	// During the grace period both tokens verify.
	expectCode(t, e.verify(k.Token), model.CodeValid)
	expectCode(t, e.verify(found[0]), model.CodeValid)
	rj := testkit.Decode[cliKey](t, e.OK("keys", "regenerate", k.ID, "--json"))
	tokens = append(tokens, rj.Token)
	expectCode(t, e.verify(found[0]), model.CodeNotFound)

	for _, args := range [][]string{
		{"audit"}, {"audit", "--json"}, {"keys", "list"}, {"keys", "list", "--json"},
		{"keys", "show", k.ID}, {"keys", "show", k.ID, "--json"},
	} {
		r := e.OK(args...)
		noise += r.Stdout + r.Stderr
	}
	db, err := os.ReadFile(e.DB)
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
	k := e.Create("--name", "slow-pipe", "--scope", "coupons:read")
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() { done <- e.Exec(pr, "verify") }()
	time.Sleep(300 * time.Millisecond)
	e.OK("keys", "disable", k.ID)
	pw.Write([]byte(k.Token + "\n"))
	pw.Close()
	select {
	case r := <-done:
		if r.Code != 1 || r.Stdout != "DISABLED: the key is disabled\n" {
			t.Fatalf("verify: %s", r)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("verify never returned")
	}
}

func TestJSONShapes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.Create("--name", "root-key", "--role", "admin", "--description", "all powerful")
	raw := e.OK("keys", "show", admin.ID, "--json").Stdout
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
	dated := e.Create("--name", "dated", "--scope", "coupons:read", "--expires", next, "--inactive")
	if got := dated.ExpiresAt.UTC().Format(time.RFC3339); got != next+"T00:00:00Z" {
		t.Errorf("--expires %s gave %s", next, got)
	}
	if dated.Status != "disabled" {
		t.Errorf("--inactive gave status %q", dated.Status)
	}
	never := e.Create("--name", "never", "--scope", "coupons:read", "--expires", "never")
	if never.ExpiresAt != nil || !strings.Contains(e.OK("keys", "show", never.ID, "--json").Stdout, `"expires_at": null`) {
		t.Errorf("--expires never: expires_at = %v", never.ExpiresAt)
	}

	// (An unknown --key is now an error, not an empty list: match nothing.)
	if got := e.OK("audit", "--grep", "no-event-matches-this", "--json").Stdout; strings.TrimSpace(got) != "[]" {
		t.Errorf("empty audit --json = %q, want []", got)
	}

	// The shared secret: show --json has exactly the documented fields, and
	// the secret never reaches the audit log or the database file.
	sraw := e.OK("secret", "show", "--json").Stdout
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
	if again := e.OK("secret", "show", "--json").Stdout; again != sraw {
		t.Errorf("secret show changed the secret:\n%s\n%s", sraw, again)
	}
	info := e.OK("secret", "info").Stdout
	rot := testkit.Decode[map[string]any](t, e.OK("secret", "rotate", "--json"))
	if rot["secret"] == secret || rot["rotated_at"] == nil {
		t.Errorf("secret rotate: %v", rot)
	}
	audit := e.OK("audit").Stdout + e.OK("audit", "--json").Stdout
	db, _ := os.ReadFile(e.DB)
	for _, s := range []string{secret, rot["secret"].(string)} {
		if strings.Contains(audit, s) || strings.Contains(info, s) || bytes.Contains(db, []byte(s)) {
			t.Errorf("shared secret %s… leaked into the audit log, secret info or the database", s[:8])
		}
	}
	if fi, err := os.Stat(e.DB + ".masterkey"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("master key file: %v %v", fi, err)
	}
}

func TestEditIsPartial(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.Create("--name", "shop-sync", "--description", "syncs the shop", "--scope", "coupons:read,coupons:write", "--resource", "web-shop", "--expires", "90d")

	e.OK("keys", "edit", k.ID, "--name", "shop-sync-2")
	got := e.Key(k.ID)
	if got.Name != "shop-sync-2" || len(got.Scopes) != 2 || len(got.Resources) != 1 || !got.ExpiresAt.Equal(*k.ExpiresAt) {
		t.Fatalf("edit --name changed more than the name: %+v", got)
	}
	e.OK("keys", "edit", k.ID, "--scope", "campaigns:read")
	if got := e.Key(k.ID); strings.Join(got.Scopes, ",") != "campaigns:read" || len(got.Resources) != 1 {
		t.Fatalf("--scope should replace the scopes only: %+v", got)
	}
	e.OK("keys", "edit", k.ID, "--clear-resources", "--scope", "analytics:read")
	if got := e.Key(k.ID); len(got.Resources) != 0 || strings.Join(got.Scopes, ",") != "analytics:read" {
		t.Fatalf("--clear-resources: %+v", got)
	}
	e.OK("keys", "edit", k.ID, "--role", "admin")
	if got := e.Key(k.ID); got.Role != "ADMIN" || len(got.Scopes) != 0 {
		t.Fatalf("--role admin should drop the scopes: %+v", got)
	}
	if r := e.OK("keys", "edit", k.ID, "--role", "admin"); !strings.Contains(r.Stdout, "unchanged") {
		t.Errorf("a no-op edit should say so: %s", r)
	}
	e.OK("keys", "edit", k.ID, "--expires", "never")
	if got := e.Key(k.ID); got.ExpiresAt != nil {
		t.Fatalf("--expires never: %+v", got)
	}
	evs := testkit.Decode[[]model.AuditEvent](t, e.OK("audit", "--key", k.ID, "--json"))
	if len(evs) != 6 || evs[0].Action != model.ActKeyEdit || evs[len(evs)-1].Action != model.ActKeyCreate {
		t.Errorf("audit for the key: %+v", evs)
	}
	if r := e.OK("audit", "--grep", "shop-sync-2", "--limit", "1"); strings.Count(r.Stdout, "\n") != 2 {
		t.Errorf("audit --grep --limit 1:\n%s", r.Stdout)
	}

	// Disabling twice says so and writes nothing the second time.
	e.OK("keys", "disable", k.ID)
	if r := e.OK("keys", "disable", k.ID); !strings.Contains(r.Stdout, "already disabled") {
		t.Errorf("second disable: %s", r)
	}
	if evs := testkit.Decode[[]model.AuditEvent](t, e.OK("audit", "--key", k.ID, "--json")); len(evs) != 7 {
		t.Errorf("want 7 audit events after one real disable, got %d", len(evs))
	}
}

func TestOperators(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ops := testkit.Decode[[]model.Operator](t, e.OK("operators", "list", "--json"))
	if len(ops) != 1 || ops[0].Role != model.OperatorAdmin {
		t.Fatalf("a new database has one ADMIN operator: %+v", ops)
	}
	me := ops[0].Name
	pub := testPublicKey(t) + " alice@laptop"
	e.OK("operators", "add", "alice", "--role", "readonly", "--key", pub)
	if r := e.Run("", "operators", "add", "carol"); r.Code != 2 || !strings.Contains(r.Stderr, "--role is required") {
		t.Errorf("add without --role: %s", r)
	}
	if r := e.Run("", "operators", "add", "Bad Name", "--role", "admin"); r.Code != 2 {
		t.Errorf("bad operator name: %s", r)
	}
	// READONLY operators may look but not change.
	e.OK("--as", "alice", "keys", "list")
	if r := e.Run("", "--as", "alice", "keys", "create", "--name", "x", "--scope", "coupons:read"); r.Code != 1 || !strings.Contains(r.Stderr, "READONLY") {
		t.Errorf("READONLY operator created a key: %s", r)
	}
	e.OK("operators", "role", "alice", "admin")
	e.OK("--as", "alice", "keys", "create", "--name", "x", "--scope", "coupons:read")
	e.OK("operators", "disable", "alice")
	e.OK("operators", "enable", "alice")
	if r := e.Run("", "operators", "delete", "alice"); r.Code != 2 {
		t.Errorf("delete without --yes: %s", r)
	}
	e.OK("operators", "delete", "alice", "--yes")
	if r := e.Run("", "operators", "disable", me); r.Code != 1 || !strings.Contains(r.Stderr, "no active ADMIN") {
		t.Errorf("disabling the last ADMIN: %s", r)
	}
	list := e.OK("operators", "list").Stdout
	if !strings.Contains(list, me) || strings.Contains(list, "alice") {
		t.Errorf("operators list:\n%s", list)
	}
}

func TestCatalogAndBackup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	exported := e.OK("catalog", "export", "-").Stdout
	cat, err := model.ParseCatalog([]byte(exported))
	if err != nil || len(cat.Scopes) != 10 {
		t.Fatalf("export of the demo catalog: %v\n%s", err, exported)
	}
	cat.Scopes = append(cat.Scopes, model.Scope{Name: "vouchers:read", Description: "Read vouchers", PerResource: true})
	data, _ := json.Marshal(cat)
	r := e.Run(string(data), "catalog", "import", "-")
	if r.Code != 0 {
		t.Fatal(r)
	}
	e.Create("--name", "vouchers", "--scope", "vouchers:read")
	file := filepath.Join(e.Dir, "cat.json")
	e.OK("catalog", "export", file)
	if got, _ := os.ReadFile(file); !strings.Contains(string(got), "vouchers:read") {
		t.Errorf("exported file lacks the new scope")
	}
	if r := e.Run("{not json", "catalog", "import", "-"); r.Code != 2 {
		t.Errorf("importing garbage: %s", r)
	}
	// Dropping a scope a key uses is refused.
	if r := e.Run(exported, "catalog", "import", "-"); r.Code != 1 || !strings.Contains(r.Stderr, "vouchers:read") {
		t.Errorf("dropping a granted scope: %s", r)
	}

	backup := filepath.Join(e.Dir, "backup.db")
	e.OK("backup", backup)
	if r := e.Run("", "backup", backup); r.Code != 2 || !strings.Contains(r.Stderr, "already exists") {
		t.Errorf("backup over an existing file: %s", r)
	}
	e.OK("backup", backup, "--force")
	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	// The backup is a working database with the same keys.
	restored := &env{testkit.NewCLIAt(t, e.Dir, backup, runInProcess)}
	if keys := restored.Keys(); len(keys) != 1 || keys[0].Name != "vouchers" {
		t.Errorf("keys in the backup: %+v", keys)
	}
	if left, _ := filepath.Glob(filepath.Join(e.Dir, ".backup.db.tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestDevSeed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.OK("dev", "seed", "--keys", "250", "--seed", "3")
	if !strings.Contains(r.Stdout, "Seeded 250 keys in") {
		t.Errorf("seed output: %s", r)
	}
	e.OK("dev", "seed", "--keys", "50") // a second run adds, without name clashes
	type seededKey struct {
		cliKey
		CreatedAt     time.Time           `json:"created_at"`
		DisplayStatus model.DisplayStatus `json:"display_status"`
	}
	keys := testkit.Decode[[]seededKey](t, e.OK("keys", "list", "--json"))
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
	if r := e.Run("", "dev", "seed"); r.Code != 2 {
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
		r := e.Run("", args...)
		if r.Code != 0 || !strings.Contains(r.Stdout, "Example") {
			t.Errorf("keyward %v: %s", args, r)
		}
	}
	if _, err := os.Stat(e.DB); err == nil {
		t.Errorf("--help created the database")
	}
}

// TestTUINeedsATerminal: `keyward` with no terminal (a pipe, cron, CI)
// says how to script it instead of bubbletea's raw TTY error, exits 2,
// and does not create or lock the database.
func TestTUINeedsATerminal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.Run("")
	if r.Code != 2 || !strings.Contains(r.Stderr, "the TUI needs a terminal") || !strings.Contains(r.Stderr, "keyward keys list --json") {
		t.Fatalf("keyward without a terminal: %s", r)
	}
	if strings.Contains(r.Stderr, "/dev/tty") {
		t.Errorf("raw TTY error leaked: %s", r)
	}
	if _, err := os.Stat(e.DB); err == nil {
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
	me := testkit.Decode[[]model.Operator](t, e.OK("operators", "list", "--json"))[0].Name
	if r := e.OK("operators", "keys", "list", me); !strings.Contains(r.Stdout, "no SSH key") {
		t.Errorf("keys list of the bootstrap ADMIN: %s", r)
	}
	if keys := testkit.Decode[[]map[string]string](t, e.OK("operators", "keys", "list", me, "--json")); len(keys) != 0 {
		t.Errorf("keys list --json: %v", keys)
	}
	pub := testPublicKey(t)
	// Counts are spelt out properly (it said "1 SSH key(s)").
	other := testPublicKey(t)
	if r := e.OK("operators", "keys", "add", me, "--key", other); !strings.Contains(r.Stdout, "(1 SSH key).") {
		t.Errorf("keys add output: %s", r)
	}
	if r := e.OK("operators", "keys", "remove", me, other); !strings.Contains(r.Stdout, "(0 SSH keys left)") {
		t.Errorf("keys remove output: %s", r)
	}
	added := testkit.Decode[map[string]string](t, e.OK("operators", "keys", "add", me, "--key", pub+" me@laptop", "--json"))
	if !strings.HasPrefix(added["fingerprint"], "SHA256:") || added["comment"] != "me@laptop" || added["type"] != "ssh-ed25519" {
		t.Fatalf("keys add --json: %v", added)
	}
	keys := testkit.Decode[[]map[string]string](t, e.OK("operators", "keys", "list", me, "--json"))
	if len(keys) != 1 || keys[0]["fingerprint"] != added["fingerprint"] {
		t.Fatalf("keys list after add: %v", keys)
	}
	if r := e.OK("operators", "keys", "list", me); !strings.Contains(r.Stdout, added["fingerprint"]) {
		t.Errorf("keys list table: %s", r)
	}
	// Refusals: no --key, a bad line, a key already registered (to anyone).
	e.OK("operators", "add", "bob", "--role", "admin")
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
		r := e.Run("", c.args...)
		if r.Code != c.code || !strings.Contains(r.Stderr, c.want) || strings.Contains(r.Stderr, "\x1b") {
			t.Errorf("keyward %q: %s; want exit %d and %q", c.args, r, c.code, c.want)
		}
	}
	// bob creates two keys; disabling him says they stop verifying.
	for _, n := range []string{"b1", "b2"} {
		e.OK("--as", "bob", "keys", "create", "--name", n, "--scope", "coupons:read")
	}
	if r := e.OK("operators", "disable", "bob"); !strings.Contains(r.Stdout, "2 keys created by bob stop verifying (CREATOR_DISABLED)") {
		t.Errorf("disable output: %s", r)
	}
	e.OK("operators", "enable", "bob")
	// No one disables, demotes or deletes themself, even with another ADMIN.
	for _, args := range [][]string{{"operators", "disable", me}, {"operators", "role", me, "readonly"}, {"operators", "delete", me, "--yes"}} {
		if r := e.Run("", args...); r.Code != 1 || !strings.Contains(r.Stderr, "your own operator account") {
			t.Errorf("keyward %q: %s; want a refusal", args, r)
		}
	}
	// Another ADMIN may.
	if r := e.OK("--as", "bob", "operators", "role", me, "readonly"); !strings.Contains(r.Stdout, "READONLY") {
		t.Errorf("bob demoting %s: %s", me, r)
	}
	e.OK("--as", "bob", "operators", "role", me, "admin")
	removed := testkit.Decode[map[string]any](t, e.OK("operators", "keys", "remove", me, pub, "--json"))
	if removed["removed"] != added["fingerprint"] || removed["keys_left"] != float64(0) {
		t.Errorf("keys remove --json: %v", removed)
	}
	var add, del int
	for _, ev := range testkit.Decode[[]model.AuditEvent](t, e.OK("audit", "--json")) {
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
	if r := e.OK("operators", "keys", "--help"); !strings.Contains(r.Stdout, `keyward operators keys add "$USER"`) {
		t.Errorf("operators keys --help lacks the bootstrap line:\n%s", r.Stdout)
	}
}

// keys list and keys show (text and JSON) say what verify answers: a key
// whose creator is disabled or deleted is CREATOR_DISABLED there too, not
// ACTIVE (issue 12.3). "status" stays the stored value.
func TestCLIKeyStatusFollowsCreator(t *testing.T) {
	e := newEnv(t)
	e.OK("operators", "add", "bob", "--role", "admin")
	e.OK("operators", "add", "carol", "--role", "admin")
	bobs := e.Create("--as", "bob", "--name", "bobs-key", "--scope", "coupons:read")
	carols := e.Create("--as", "carol", "--name", "carols-key", "--scope", "coupons:read")
	mine := e.Create("--name", "mine", "--scope", "coupons:read")
	e.OK("operators", "disable", "bob")
	e.OK("operators", "delete", "carol", "--yes")

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

		s := testkit.Decode[shown](t, e.OK("keys", "show", k.ID, "--json"))
		if s.DisplayStatus != want[k.ID] || s.Status != "active" {
			t.Errorf("keys show %s --json: status %q display_status %q, want active / %s", k.Name, s.Status, s.DisplayStatus, want[k.ID])
		}
		out := e.OK("keys", "show", k.ID).Stdout
		if !regexp.MustCompile(`(?m)^Status\s+` + want[k.ID] + `$`).MatchString(out) {
			t.Errorf("keys show %s: want Status %s in\n%s", k.Name, want[k.ID], out)
		}
	}
	for _, s := range testkit.Decode[[]shown](t, e.OK("keys", "list", "--json")) {
		if s.DisplayStatus != want[s.ID] {
			t.Errorf("keys list --json: %s display_status %q, want %s", s.ID, s.DisplayStatus, want[s.ID])
		}
	}
	list := e.OK("keys", "list").Stdout
	for _, k := range []cliKey{bobs, carols, mine} {
		if !regexp.MustCompile(`(?m)^` + k.ID + `\s+` + k.Name + `\s+\S+\s+` + want[k.ID] + `\s`).MatchString(list) {
			t.Errorf("keys list: want %s %s in\n%s", k.Name, want[k.ID], list)
		}
	}
	// Enabling the creator again makes the key verify, and show so.
	e.OK("operators", "enable", "bob")
	expectCode(t, e.verify(bobs.Token, "--scope", "coupons:read"), model.CodeValid)
	if s := testkit.Decode[shown](t, e.OK("keys", "show", bobs.ID, "--json")); s.DisplayStatus != "ACTIVE" {
		t.Errorf("after enabling bob: display_status %q, want ACTIVE", s.DisplayStatus)
	}
}
