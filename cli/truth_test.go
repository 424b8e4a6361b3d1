package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// TestTokenArgumentsAreMasked: a token pasted onto the command line by
// mistake is never echoed back, whichever error path reports it: cobra's
// unknown command, a stray argument, a bad flag value, a flag=value, a
// "not found". It is shown as its hint.
func TestTokenArgumentsAreMasked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok, err := model.GenerateToken("")
	if err != nil {
		t.Fatal(err)
	}
	token := tok.String()
	other := "sk_" + strings.Repeat("AbCd1234", 6) // another product's token shape
	hint := tok.Hint() + "…"
	for _, args := range [][]string{
		{"verify", token},
		{token},
		{"keys", token},
		{"keys", "list", token},
		{"keys", "show", token},
		{"keys", "delete", token},
		{"audit", "--limit", token},
		{"audit", "--limit=" + token},
		{"keys", "create", "--name", "x", "--scope=" + token},
		{"keys", "list", other},
	} {
		r := e.Run("", args...)
		if r.Code == 0 {
			t.Errorf("keyward %v succeeded: %s", args, r)
		}
		out := r.Stdout + r.Stderr
		if strings.Contains(out, token) || strings.Contains(out, tok.Body) || strings.Contains(out, other) {
			t.Errorf("keyward %v echoed the token: %s", args, r)
		}
		if args[len(args)-1] != other && !strings.Contains(r.Stderr, hint) {
			t.Errorf("keyward %v: the error does not show the token as its hint %q: %s", args, hint, r)
		}
	}
	// verify says where the token goes instead.
	if r := e.Run("", "verify", token); r.Code != 2 || !strings.Contains(r.Stderr, "reads the token from standard input") {
		t.Errorf("keyward verify TOKEN: %s; want exit 2 naming standard input", r)
	}
}

// TestKeysTakeNameOrID: every command that takes a key takes its id or
// its unique name; an unknown one is an error that suggests keys, never
// an empty result.
func TestKeysTakeNameOrID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bot := e.Create("--name", "ci-bot", "--scope", "coupons:read")
	worker := e.Create("--name", "ci-worker", "--scope", "coupons:read")

	if k := e.Key("CI-Bot"); k.ID != bot.ID {
		t.Fatalf("keys show by name found %s, want %s", k.ID, bot.ID)
	}
	e.OK("keys", "edit", "ci-bot", "--description", "renamed by name")
	e.OK("keys", "disable", "ci-bot")
	e.OK("keys", "enable", "ci-bot")
	if k := testkit.Decode[cliKey](t, e.OK("keys", "regenerate", "ci-bot", "--json")); k.ID != bot.ID || k.Token == "" {
		t.Fatalf("regenerate by name: %+v", k)
	}
	type event struct{ Action, Target string }
	evs := testkit.Decode[[]event](t, e.OK("audit", "--key", "ci-bot", "--json"))
	if len(evs) != 5 {
		t.Fatalf("audit --key by name: want 5 events (create, edit, disable, enable, regenerate), got %+v", evs)
	}
	for _, ev := range evs {
		if ev.Target != bot.ID {
			t.Fatalf("audit --key ci-bot shows %+v", ev)
		}
	}

	for _, args := range [][]string{{"keys", "show", "ci-"}, {"keys", "edit", "ci-", "--name", "x"},
		{"keys", "disable", "ci-"}, {"keys", "regenerate", "ci-"}, {"keys", "delete", "ci-", "--yes"}, {"audit", "--key", "ci-"}} {
		r := e.Run("", args...)
		if r.Code != 1 || !strings.Contains(r.Stderr, `no key with id or name "ci-"; did you mean`) ||
			!strings.Contains(r.Stderr, bot.ID+" (ci-bot)") || !strings.Contains(r.Stderr, worker.ID+" (ci-worker)") {
			t.Errorf("keyward %v: %s", args, r)
		}
	}
	if r := e.Run("", "audit", "--key", "ro-shop"); r.Code != 1 || !strings.Contains(r.Stderr, `no key with id or name "ro-shop"`) {
		t.Errorf("audit --key of an unknown name: %s", r)
	}
	// Targets that are not live keys keep working: an operator, a deleted key.
	e.OK("keys", "delete", "ci-worker", "--yes")
	if evs := testkit.Decode[[]event](t, e.OK("audit", "--key", worker.ID, "--json")); len(evs) != 2 {
		t.Errorf("audit of a deleted key: %+v", evs)
	}
	if r := e.OK("audit", "--key", "secret"); !strings.Contains(r.Stdout, "TIME") {
		t.Errorf("audit --key secret: %s", r)
	}
}

// TestGraceRule: --grace takes what its help says, 0 to 30 days, for keys
// and for the shared secret alike (secret rotate took 1000 weeks).
func TestGraceRule(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Create("--name", "g", "--scope", "coupons:read")
	for _, g := range []string{"0", "90m", "3h", "1d", "2w", "30d"} {
		e.OK("keys", "regenerate", "g", "--grace", g)
	}
	e.OK("secret", "rotate", "--grace", "30d")
	for _, args := range [][]string{{"secret", "rotate", "--grace", "31d"}, {"secret", "rotate", "--grace", "1000w"},
		{"secret", "rotate", "--grace", "-1h"}, {"keys", "regenerate", "g", "--grace", "5w"}, {"keys", "regenerate", "g", "--grace", "soon"}} {
		if r := e.Run("", args...); r.Code != 2 || !strings.Contains(r.Stderr, "0 to 30 days") {
			t.Errorf("keyward %v: %s", args, r)
		}
	}
	for _, cmd := range [][]string{{"keys", "regenerate", "--help"}, {"secret", "rotate", "--help"}} {
		if r := e.OK(cmd...); !strings.Contains(r.Stdout, "0 to 30 days") {
			t.Errorf("keyward %v does not state the rule: %s", cmd, r)
		}
	}
}

// TestCreateInactiveSaysSo: keys create --inactive (and a regenerate of a
// disabled key) says the token is refused until the key is enabled.
func TestCreateInactiveSaysSo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.OK("keys", "create", "--name", "dormant", "--scope", "coupons:read", "--inactive")
	if !strings.Contains(r.Stdout, "INACTIVE") || !strings.Contains(r.Stdout, "keyward keys enable key_") {
		t.Fatalf("create --inactive does not say so: %s", r)
	}
	if r := e.OK("keys", "regenerate", "dormant"); !strings.Contains(r.Stdout, "INACTIVE") {
		t.Fatalf("regenerating a disabled key does not say so: %s", r)
	}
	if r := e.OK("keys", "create", "--name", "awake", "--scope", "coupons:read"); strings.Contains(r.Stdout, "INACTIVE") {
		t.Fatalf("an active key is called inactive: %s", r)
	}
}

// TestDocsMatchBehaviour: the README and --help say what keyward does
// where they used to promise otherwise: dev seed makes expired keys on
// purpose, and operators add --key refuses authorized_keys options.
func TestDocsMatchBehaviour(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, seedDoc, _ := strings.Cut(string(readme), "### `keyward dev seed")
	seedDoc, _, _ = strings.Cut(seedDoc, "\n## ")
	if strings.Contains(seedDoc, "expiries 20 days to 2 years away") || !strings.Contains(seedDoc, "already expired") {
		t.Errorf("README's dev seed section does not say that some seeded keys have expired:\n%s", seedDoc)
	}
	e := newEnv(t)
	e.OK("dev", "seed", "--keys", "100", "--seed", "5")
	expired := 0
	for _, k := range e.Keys() {
		if k.ExpiresAt != nil && k.ExpiresAt.Before(time.Now()) {
			expired++
		}
	}
	if expired == 0 {
		t.Errorf("dev seed made no expired key, as its docs now say it does")
	}

	if strings.Contains(string(readme), "each `--key` is an authorized_keys line") {
		t.Errorf("README still says --key takes any authorized_keys line")
	}
	if r := e.OK("operators", "add", "--help"); !strings.Contains(r.Stdout, "options in") {
		t.Errorf("operators add --help does not say options are refused: %s", r)
	}
	line := testPublicKey(t)
	if r := e.Run("", "operators", "add", "opt", "--role", "readonly", "--key", `from="10.0.0.1" `+line); r.Code == 0 {
		t.Errorf("an authorized_keys line with options was accepted: %s", r)
	}
	e.OK("operators", "add", "plain", "--role", "readonly", "--key", line)
}

// TestCatalogImportRefusals: through the binary, an empty or ambiguous
// catalog is a usage error, and one that would leave a key invalid is
// refused naming the key; nothing changes either way.
func TestCatalogImportRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	k := e.Create("--name", "shop", "--scope", "coupons:read", "--resource", "web-shop")
	before := e.OK("catalog", "export", "-").Stdout
	for _, in := range []string{"null", "{}", `{"scopes":[]}`, `{"scopes":[{"name":"a:read"}],"scopes":[{"name":"b:read"}]}`} {
		if r := e.Run(in, "catalog", "import", "-"); r.Code != 2 {
			t.Errorf("import %s: %s", in, r)
		}
	}
	flipped := strings.Replace(before, `"name": "coupons:read",
      "description": "List and read coupons",
      "per_resource": true`, `"name": "coupons:read",
      "description": "List and read coupons",
      "per_resource": false`, 1)
	if flipped == before {
		t.Fatalf("test setup: could not flip coupons:read in\n%s", before)
	}
	if r := e.Run(flipped, "catalog", "import", "-"); r.Code != 1 || !strings.Contains(r.Stderr, k.ID) || !strings.Contains(r.Stderr, "coupons:read") {
		t.Errorf("import making a used scope account-wide: %s", r)
	}
	if after := e.OK("catalog", "export", "-").Stdout; after != before {
		t.Errorf("a refused import changed the catalog")
	}
	e.OK("keys", "edit", "shop", "--description", "still editable")
}
