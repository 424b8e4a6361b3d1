package main

import (
	"strings"
	"testing"

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
		r := e.run("", args...)
		if r.code == 0 {
			t.Errorf("keyward %v succeeded: %s", args, r)
		}
		out := r.stdout + r.stderr
		if strings.Contains(out, token) || strings.Contains(out, tok.Body) || strings.Contains(out, other) {
			t.Errorf("keyward %v echoed the token: %s", args, r)
		}
		if args[len(args)-1] != other && !strings.Contains(r.stderr, hint) {
			t.Errorf("keyward %v: the error does not show the token as its hint %q: %s", args, hint, r)
		}
	}
}
