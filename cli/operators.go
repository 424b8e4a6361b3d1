package cli

import (
	"fmt"
	"strconv"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

func (a *app) operatorsCmd() *cobra.Command {
	return group("operators", "Manage the operators who administer keys",
		`Operators are the people who administer keyward, locally (--as, default the
OS user) or over SSH (by their registered public keys). ADMIN operators may
change anything; READONLY operators may only look. One active ADMIN must
always remain, and no operator may disable, demote or delete themself (they
could not undo it; another ADMIN must). Keys created by an operator who is
later disabled or deleted verify as CREATOR_DISABLED.

An SSH session acts as the operator account and the key it logged in with:
deleting, disabling or demoting the operator, or removing that key, ends
the session.`,
		`  keyward operators list
  keyward operators add alice --role admin --key "$(cat ~/.ssh/id_ed25519.pub)"
  keyward operators keys add "$USER" --key "$(cat ~/.ssh/id_ed25519.pub)"
  keyward operators disable alice`,
		a.operatorsListCmd(), a.operatorsAddCmd(), a.operatorsSetDisabledCmd(true),
		a.operatorsSetDisabledCmd(false), a.operatorsDeleteCmd(), a.operatorsRoleCmd(),
		a.operatorKeysCmd())
}

// operatorKeys: `keyward operators keys list|add|remove NAME`.
func (a *app) operatorKeysCmd() *cobra.Command {
	return group("keys", "Manage an operator's SSH public keys",
		`List, add and remove the SSH public keys an operator logs in to
"keyward serve" with. A key belongs to one operator at most; an operator may
have up to 32. Every change is audited (operator.key.add, .remove).
Removing a key ends the SSH sessions that logged in with it.

The bootstrap ADMIN (the OS user who created the database) has no key at
first; give it one to use "keyward serve" over SSH:

  keyward operators keys add "$USER" --key "$(cat ~/.ssh/id_ed25519.pub)"`,
		`  keyward operators keys list alice --json
  keyward operators keys add alice --key "$(cat ~/.ssh/id_ed25519.pub)"
  keyward operators keys remove alice SHA256:abc...`,
		a.operatorKeysListCmd(), a.operatorKeysAddCmd(), a.operatorKeysRemoveCmd())
}

// opKeyJSON is one operator SSH key in --json output.
type opKeyJSON struct {
	Fingerprint string `json:"fingerprint"`
	Type        string `json:"type"`
	Comment     string `json:"comment"`
	PublicKey   string `json:"public_key"`
}

func opKeyOf(pk model.PublicKey) opKeyJSON {
	return opKeyJSON{Fingerprint: pk.Fingerprint(), Type: pk.Type, Comment: pk.Comment, PublicKey: pk.String()}
}

func (a *app) operatorKeysListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list NAME [--json]",
		Short:   "List an operator's SSH keys",
		Example: `  keyward operators keys list alice --json`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				op, err := st.Operator(args[0])
				if err != nil {
					return err
				}
				keys := []opKeyJSON{}
				for _, line := range op.PublicKeys {
					if pk, err := model.ParsePublicKey(line); err == nil {
						keys = append(keys, opKeyOf(pk))
					}
				}
				if asJSON {
					return writeJSON(a.stdout, keys)
				}
				if len(keys) == 0 {
					fmt.Fprintf(a.stdout, "Operator %s has no SSH key (it can only work locally). Add one with: keyward operators keys add %s --key \"$(cat ~/.ssh/id_ed25519.pub)\"\n", op.Name, op.Name)
					return nil
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "FINGERPRINT\tTYPE\tCOMMENT")
				for _, k := range keys {
					row(tw, k.Fingerprint, k.Type, k.Comment)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) operatorKeysAddCmd() *cobra.Command {
	var asJSON bool
	var line string
	c := &cobra.Command{
		Use:   "add NAME --key PUBKEY [--json]",
		Short: "Add an SSH public key to an operator",
		Long: `Add an SSH public key (one authorized_keys line) to an operator, who can
then log in to "keyward serve" with it. The key must not belong to any
operator yet.`,
		Example: `  keyward operators keys add "$USER" --key "$(cat ~/.ssh/id_ed25519.pub)"`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("key") {
				return usageErrorf(`--key is required ("ssh-ed25519 AAAA... comment")`)
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				op, pk, err := st.AddOperatorKey(a.actor, args[0], line)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, opKeyOf(pk))
				}
				fmt.Fprintf(a.stdout, "Added key %s to operator %s (%s).\n", pk.Fingerprint(), op.Name, model.Count(len(op.PublicKeys), "SSH key", ""))
				return nil
			})
		},
	}
	c.Flags().StringVar(&line, "key", "", `SSH public key, "ssh-ed25519 AAAA... comment"`)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) operatorKeysRemoveCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "remove NAME FINGERPRINT|PUBKEY [--json]",
		Short: "Remove an SSH public key from an operator",
		Long: `Remove one of an operator's SSH keys, named by its fingerprint (as
"keyward operators keys list" shows it) or by its whole public key line.
SSH sessions that logged in with that key end at once.`,
		Example: `  keyward operators keys remove alice SHA256:abc...
  keyward operators keys remove alice "$(cat old_laptop.pub)"`,
		Args: exactArgs("NAME", "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				op, fp, err := st.RemoveOperatorKey(a.actor, args[0], args[1])
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, map[string]any{"operator": op.Name, "removed": fp, "keys_left": len(op.PublicKeys)})
				}
				fmt.Fprintf(a.stdout, "Removed key %s from operator %s (%s left); SSH sessions that logged in with it end.\n", fp, op.Name, model.Count(len(op.PublicKeys), "SSH key", ""))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) operatorsListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Short:   "List operators",
		Example: `  keyward operators list --json`,
		Args:    a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				ops := st.Operators()
				if asJSON {
					for i := range ops {
						if ops[i].PublicKeys == nil {
							ops[i].PublicKeys = []string{}
						}
					}
					return writeJSON(a.stdout, ops)
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "NAME\tROLE\tSTATUS\tSSH KEYS\tCREATED BY\tLAST LOGIN")
				for _, op := range ops {
					status := "active"
					if op.Disabled {
						status = "disabled"
					}
					row(tw, op.Name, string(op.Role), status, strconv.Itoa(len(op.PublicKeys)),
						op.CreatedBy, model.FormatTime(op.LastLoginAt, "Never"))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) operatorsAddCmd() *cobra.Command {
	var role string
	var keys []string
	c := &cobra.Command{
		Use:   "add NAME --role admin|readonly [--key PUBKEY]...",
		Short: "Register an operator",
		Long: `Register an operator. NAME is 1-32 characters of a-z, 0-9, '.', '_' and '-'.
Each --key is one SSH public key as ssh-keygen writes it, "TYPE BASE64
[comment]" (the contents of a .pub file); the operator logs in to
"keyward serve" over SSH with it. An authorized_keys line with options in
front (from=, command=, no-pty, ...) is refused: keyward does not apply
them, so it does not accept them.`,
		Example: `  keyward operators add alice --role admin --key "$(cat ~/.ssh/id_ed25519.pub)"
  keyward operators add auditor --role readonly`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("role") {
				return usageErrorf("--role is required (admin or readonly)")
			}
			r, err := parseOperatorRole(role)
			if err != nil {
				return usageErrorf("--role: %v", err)
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				op, err := st.AddOperator(a.actor, args[0], r, keys)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Added operator %s (%s) with %s.\n", op.Name, op.Role, model.Count(len(op.PublicKeys), "SSH key", ""))
				return nil
			})
		},
	}
	c.Flags().StringVar(&role, "role", "", "admin or readonly")
	c.Flags().StringArrayVar(&keys, "key", nil, `SSH public key, "ssh-ed25519 AAAA... comment", without authorized_keys options (repeatable)`)
	return c
}

func (a *app) operatorsSetDisabledCmd(disabled bool) *cobra.Command {
	use, short, past := "enable", "Re-enable an operator", "enabled"
	long := "Re-enable an operator: it may log in again, and the keys it created verify again."
	if disabled {
		use, short, past = "disable", "Disable an operator (its keys then verify as CREATOR_DISABLED)", "disabled"
		long = `Disable an operator: the keys it created stop verifying (CREATOR_DISABLED)
until it is enabled again, and its SSH sessions end. The output says how
many keys that is. No one may disable themself, and one active ADMIN must
remain.`
	}
	return &cobra.Command{
		Use:     use + " NAME",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf("  keyward operators %s alice", use),
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				n := st.KeysCreatedBy(args[0])
				if _, err := st.SetOperatorDisabled(a.actor, args[0], disabled); err != nil {
					return err
				}
				name := model.Sanitize(args[0])
				if disabled {
					fmt.Fprintf(a.stdout, "Operator %s is disabled: %s until it is enabled, and its SSH sessions end.\n", name, model.CreatorConsequence(n, name))
					return nil
				}
				fmt.Fprintf(a.stdout, "Operator %s is %s.\n", name, past)
				return nil
			})
		},
	}
}

func (a *app) operatorsDeleteCmd() *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "delete NAME --yes",
		Short: "Delete an operator",
		Long: `Delete an operator. Keys it created then verify as CREATOR_DISABLED, for
good (a new operator of the same name does not revive them), and its SSH
sessions end. The last active ADMIN cannot be deleted, and no one may
delete themself.`,
		Example: `  keyward operators delete alice --yes`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("refusing to delete operator %s without --yes (keys it created will stop verifying)", args[0])
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				n := st.KeysCreatedBy(args[0])
				if err := st.DeleteOperator(a.actor, args[0]); err != nil {
					return err
				}
				name := model.Sanitize(args[0])
				fmt.Fprintf(a.stdout, "Deleted operator %s: %s.\n", name, model.CreatorConsequence(n, name))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	return c
}

func (a *app) operatorsRoleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "role NAME admin|readonly",
		Short: "Change an operator's role",
		Long: `Change an operator's role. Demoting an ADMIN to READONLY ends its SSH
sessions. No one may demote themself, and one active ADMIN must remain.`,
		Example: `  keyward operators role alice readonly`,
		Args:    exactArgs("NAME", "ROLE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseOperatorRole(args[1])
			if err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				op, err := st.SetOperatorRole(a.actor, args[0], r)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Operator %s is %s.\n", op.Name, op.Role)
				return nil
			})
		},
	}
}
