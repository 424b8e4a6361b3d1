package cli

import (
	"fmt"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

func (a *app) secretCmd() *cobra.Command {
	return group("secret", "Show, rotate or describe the HTTP API's shared secret",
		`The shared secret authenticates callers of the HTTP verification API
(Authorization: Bearer <secret>). It is stored encrypted (AES-256-GCM) with
a master key kept in <db>.masterkey beside the database, or in the file
--master-key names (on etcd: ~/.config/keyward/master.key by default; every
node needs the same file). It is generated on first use. Revealing and
rotating it need an ADMIN operator and are audited.

The secret's record carries a check of the master key it was sealed with:
a node holding another master key is told so, and refuses to reveal or
rotate the secret (rotating would re-seal it under a key the other nodes
lack). Checking HTTP callers needs only the secret's hash and works on
every node regardless.`,
		`  keyward secret info
  keyward secret show --json
  keyward secret rotate --grace 24h`,
		a.secretShowCmd(), a.secretRotateCmd(), a.secretInfoCmd())
}

type secretJSON struct {
	Secret    string     `json:"secret"`
	CreatedAt *time.Time `json:"created_at"`
	RotatedAt *time.Time `json:"rotated_at"`
}

func (a *app) printSecret(secret string, meta store.SecretMeta, asJSON bool) error {
	if asJSON {
		return writeJSON(a.stdout, secretJSON{Secret: secret, CreatedAt: meta.CreatedAt, RotatedAt: meta.RotatedAt})
	}
	fmt.Fprintf(a.stdout, "Shared secret (created %s, rotated %s). Keep it private:\n\n%s\n\n",
		model.FormatTime(meta.CreatedAt, "now"), model.FormatTime(meta.RotatedAt, "never"), secret)
	if meta.PreviousValidUntil != nil {
		fmt.Fprintf(a.stdout, "The previous secret keeps working until %s.\n", model.FormatTime(meta.PreviousValidUntil, ""))
	}
	return nil
}

func (a *app) secretShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show",
		Short: "Reveal the shared secret (generating it on first use)",
		Example: `  keyward secret show
  SECRET=$(keyward secret show --json | jq -r .secret)`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				secret, meta, err := st.RevealSecret(a.actor)
				if err != nil {
					return err
				}
				return a.printSecret(secret, meta, asJSON)
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, `print {"secret", "created_at", "rotated_at"}`)
	return c
}

func (a *app) secretRotateCmd() *cobra.Command {
	var grace string
	var asJSON bool
	c := &cobra.Command{
		Use:   "rotate",
		Short: "Replace the shared secret and print the new one",
		Long: `Replace the shared secret and print the new one. With --grace the previous
secret keeps authenticating HTTP callers for that long. --grace takes
` + graceHelp + `.`,
		Example: `  keyward secret rotate
  keyward secret rotate --grace 24h --json`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := parseGrace(grace)
			if err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				secret, meta, err := st.RotateSecret(a.actor, g)
				if err != nil {
					return err
				}
				return a.printSecret(secret, meta, asJSON)
			})
		},
	}
	c.Flags().StringVar(&grace, "grace", "0", "how long the previous secret keeps working, "+graceHelp)
	c.Flags().BoolVar(&asJSON, "json", false, `print {"secret", "created_at", "rotated_at"}`)
	return c
}

func (a *app) secretInfoCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "info",
		Short:   "Show the shared secret's metadata without revealing it",
		Example: `  keyward secret info --json`,
		Args:    a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				meta, err := st.SecretInfo()
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, meta)
				}
				if !meta.Exists {
					fmt.Fprintln(a.stdout, "No shared secret yet; keyward secret show generates one.")
					return nil
				}
				tw := newTable(a.stdout)
				row(tw, "Hint", meta.Hint+"…")
				row(tw, "Created", model.FormatTime(meta.CreatedAt, ""))
				row(tw, "Rotated", model.FormatTime(meta.RotatedAt, "never"))
				if meta.PreviousValidUntil != nil {
					row(tw, "Previous valid until", model.FormatTime(meta.PreviousValidUntil, ""))
				}
				row(tw, "Master key", st.MasterKeyPath())
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
