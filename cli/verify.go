package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/charmbracelet/x/term"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

// maxTokenInput bounds what verify reads from stdin.
const maxTokenInput = 4 << 10

// verifySource is recorded as last_used_from for CLI verifications.
const verifySource = "cli"

func (a *app) verifyCmd() *cobra.Command {
	var scope, resource string
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify [--scope S] [--resource R]",
		Short: "Check a token read from stdin",
		Long: `Check a token, read from stdin (never from the command line, where it would
show in the process list and shell history). Prints the result code:

  VALID               the key may do this
  MALFORMED           not a keyward token (bad prefix, length or checksum)
  NOT_FOUND           no live key has this token
  DISABLED            the key is disabled
  EXPIRED             the key's expiry has passed
  CREATOR_DISABLED    the operator who created the key is disabled or deleted
  INSUFFICIENT_SCOPE  the key lacks --scope
  FORBIDDEN_RESOURCE  the key is limited to other resources

  STALE               (etcd) this process is not in touch with the cluster,
                      so it cannot know the key is still live: no answer

Exit status: 0 VALID, 1 refused, 2 usage, 3 STALE (try again; no answer is
not a refusal). A successful verification is recorded as the key's last
use (from "cli").`,
		Example: `  echo "$TOKEN" | keyward verify
  keyward verify --scope coupons:read --resource web-shop < token.txt
  printf %s "$TOKEN" | keyward verify --scope coupons:write --json`,
		Args: tokenFromStdin,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Read first: a verify waiting on a slow pipe must not hold
			// the database.
			token, err := a.readToken()
			if err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				if err := st.Stale(); err != nil {
					return a.printStale(err, asJSON)
				}
				res := st.Verify(token, scope, resource, verifySource)
				if asJSON {
					if err := writeJSON(a.stdout, res); err != nil {
						return err
					}
				} else if res.Reason != "" && !res.Valid {
					fmt.Fprintf(a.stdout, "%s: %s\n", res.Code, model.Sanitize(res.Reason))
				} else {
					fmt.Fprintln(a.stdout, res.Code)
				}
				if !res.Valid {
					return &exitError{code: exitFailure}
				}
				return nil
			})
		},
	}
	c.Flags().StringVar(&scope, "scope", "", "scope the caller needs, e.g. coupons:read (empty: check the key only)")
	c.Flags().StringVar(&resource, "resource", "", "resource the request is for, e.g. web-shop")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}

// readToken reads the token from stdin: hidden input from a terminal,
// otherwise everything up to EOF (at most 4 KiB), trimmed.
func (a *app) readToken() (string, error) {
	var data []byte
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(f.Fd()) {
		fmt.Fprint(a.stderr, "Token (input hidden): ")
		b, err := term.ReadPassword(f.Fd())
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("reading the token: %w", err)
		}
		data = b
	} else {
		b, err := io.ReadAll(io.LimitReader(a.stdin, maxTokenInput+1))
		if err != nil {
			return "", fmt.Errorf("reading the token from stdin: %w", err)
		}
		data = b
	}
	if len(data) > maxTokenInput {
		return "", usageErrorf("stdin holds more than 4 KiB; pipe in only the token")
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", usageErrorf("no token on stdin; pipe it in, e.g. echo \"$TOKEN\" | keyward verify")
	}
	return token, nil
}

// tokenFromStdin refuses a positional argument to verify, saying where the
// token goes: the argument is almost always the token itself, pasted where
// it shows in the process list and shell history (the error path shows it
// as its hint only).
func tokenFromStdin(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s reads the token from standard input, not from an argument (got %q): arguments show in the process list and shell history. Run: printf %%s \"$TOKEN\" | %s",
			cmd.CommandPath(), args[0], cmd.CommandPath())
	}
	return nil
}

// staleCode is verify's answer when the store cannot vouch for its memory
// (store.ErrStale): not a refusal, no answer at all.
const staleCode = "STALE"

// printStale reports a verify the store could not answer, and exits 3.
func (a *app) printStale(err error, asJSON bool) error {
	if asJSON {
		if werr := writeJSON(a.stdout, struct {
			Valid  bool   `json:"valid"`
			Code   string `json:"code"`
			Reason string `json:"reason"`
		}{false, staleCode, err.Error()}); werr != nil {
			return werr
		}
	} else {
		fmt.Fprintf(a.stdout, "%s: %s\n", staleCode, model.Sanitize(err.Error()))
	}
	return &exitError{code: exitStale}
}
