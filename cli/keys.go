package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func (a *app) keysCmd() *cobra.Command {
	return group("keys", "List, create, edit, disable, regenerate and delete API keys",
		`Manage API keys. A command that takes a key takes its id (key_ + 12
characters, as "keyward keys list" shows) or its name (names are unique,
compared case-insensitively).`,
		`  keyward keys list
  keyward keys create --name ci-bot --scope coupons:read
  keyward keys disable key_abcdefghijkl`,
		a.keysListCmd(), a.keysCreateCmd(), a.keysShowCmd(), a.keysEditCmd(),
		a.keysSetActiveCmd(false), a.keysSetActiveCmd(true),
		a.keysRegenerateCmd(), a.keysDeleteCmd())
}

func (a *app) keysListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List every key",
		Long: `List every key, oldest first. The STATUS column says what verify answers
for the key (before any question of scope): ACTIVE, EXPIRING (within 14 days,
still verifies), EXPIRED, DISABLED, or CREATOR_DISABLED (the key is active but
the operator who created it is disabled or deleted, so verify refuses it).`,
		Example: `  keyward keys list
  keyward keys list --json | jq -r '.[] | select(.last_used_at == null) | .id'`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				keys := st.Keys()
				sort.Slice(keys, func(i, j int) bool {
					if !keys[i].CreatedAt.Equal(keys[j].CreatedAt) {
						return keys[i].CreatedAt.Before(keys[j].CreatedAt)
					}
					return keys[i].Name < keys[j].Name // a seeded batch shares one time
				})
				now := st.Now()
				ops := map[string]*model.Operator{}
				for _, op := range st.Operators() {
					ops[op.Name] = &op
				}
				status := func(k *model.Key) model.DisplayStatus { return model.StatusOf(k, ops[k.CreatedBy], now) }
				if asJSON {
					out := make([]keyJSON, len(keys))
					for i, k := range keys {
						out[i] = toKeyJSON(k, status(k))
					}
					return writeJSON(a.stdout, out)
				}
				if len(keys) == 0 {
					fmt.Fprintln(a.stdout, `No keys yet. Create one with: keyward keys create --name NAME --scope SCOPE`)
					return nil
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "ID\tNAME\tROLE\tSTATUS\tEXPIRES\tLAST USED\tCREATED BY")
				for _, k := range keys {
					row(tw, k.ID, k.Name, string(k.Role), string(status(k)),
						model.FormatDate(k.ExpiresAt, "never"), model.FormatTime(k.LastUsedAt, "Never"), k.CreatedBy)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) warnNever(exp *time.Time) {
	if exp == nil {
		fmt.Fprintln(a.stderr, "keyward: warning: this key never expires; prefer an expiry date and regenerate the key before it")
	}
}

func (a *app) keysCreateCmd() *cobra.Command {
	var f keyFlags
	var inactive, asJSON bool
	c := &cobra.Command{
		Use:   "create --name NAME [flags]",
		Short: "Create a key and print its token once",
		Long: `Create a key and print its token exactly once. keyward keeps only a SHA-256
hash of the token: store it now, it cannot be shown again (regenerate the
key if it is lost).

The role defaults to editor. An EDITOR or READONLY key needs at least one
--scope; READONLY allows only :read scopes. With --resource the key is
limited to those resources and only per-resource scopes are allowed;
without it the key applies to every resource. ADMIN keys have every scope
on every resource and take no --scope or --resource.

The expiry defaults to 365 days from now.`,
		Example: `  keyward keys create --name ci-bot --scope coupons:read
  keyward keys create --name shop-sync --scope coupons:read,coupons:write --resource web-shop --expires 90d
  keyward keys create --name reporting --role readonly --scope analytics:read --expires 2030-01-31
  keyward keys create --name ops --role admin --expires never
  TOKEN=$(keyward keys create --name deploy --scope campaigns:write --json | jq -r .token)`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("name") {
				return usageErrorf("--name is required")
			}
			role, err := parseRoleFlag(f.role)
			if err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				now := st.Now()
				exp := now.UTC().Add(model.DefaultLifetime)
				expires := &exp
				if cmd.Flags().Changed("expires") {
					if expires, err = parseExpiry(f.expires, now); err != nil {
						return err
					}
				}
				spec := model.KeySpec{
					Name: f.name, Description: f.description, Role: role,
					Scopes: f.scopes, Resources: f.resources, ExpiresAt: expires, Active: !inactive,
				}
				k, token, err := st.CreateKey(a.actor, spec)
				if err != nil {
					return err
				}
				a.warnNever(k.ExpiresAt)
				if asJSON {
					return writeJSON(a.stdout, keyWithToken{toKeyJSON(k, statusOf(st, k, now)), token})
				}
				fmt.Fprintf(a.stdout, "Created key %s (%s), role %s, expires %s.\n",
					k.ID, model.Sanitize(k.Name), k.Role, model.FormatTime(k.ExpiresAt, "never"))
				a.noteInactive(k)
				a.printToken(token)
				return nil
			})
		},
	}
	f.register(c.Flags(), "editor")
	c.Flags().BoolVar(&inactive, "inactive", false, "create the key disabled (enable it later with keys enable)")
	c.Flags().BoolVar(&asJSON, "json", false, `print JSON, including "token"`)
	return c
}

// noteInactive says so when a key just issued a token is disabled: the
// token will be refused until the key is enabled.
func (a *app) noteInactive(k *model.Key) {
	if k.Status == model.StatusDisabled {
		fmt.Fprintf(a.stdout, "The key is INACTIVE (disabled): its token is refused until you run: keyward keys enable %s\n", k.ID)
	}
}

// printToken prints a freshly issued token, once, on a line of its own.
func (a *app) printToken(token string) {
	fmt.Fprintf(a.stdout, "\nThe token is shown only this once; it will not be shown again. Store it now:\n\n%s\n\n", token)
}

func (a *app) keysShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show ID|NAME",
		Short: "Show one key",
		Long: `Show every field of one key. Status says what verify answers for the key
(before any question of scope), as in keys list: ACTIVE, EXPIRING, EXPIRED,
DISABLED or CREATOR_DISABLED (its creator is disabled or deleted).`,
		Example: `  keyward keys show key_abcdefghijkl
  keyward keys show key_abcdefghijkl --json`,
		Args: exactArgs("ID|NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				k, err := st.ResolveKey(args[0])
				if err != nil {
					return err
				}
				return a.printKey(k, statusOf(st, k, st.Now()), st.Now(), asJSON)
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// printKey prints k; status is its displayed status (statusOf).
func (a *app) printKey(k *model.Key, status model.DisplayStatus, now time.Time, asJSON bool) error {
	if asJSON {
		return writeJSON(a.stdout, toKeyJSON(k, status))
	}
	scopes := strings.Join(k.Scopes, ", ")
	if k.Role == model.RoleAdmin {
		scopes = "all (ADMIN)"
	}
	resources := strings.Join(k.Resources, ", ")
	if k.AllResources() {
		resources = "all"
	}
	lastUsed := model.FormatTime(k.LastUsedAt, "Never")
	if k.LastUsedAt != nil && k.LastUsedFrom != "" {
		lastUsed += " from " + k.LastUsedFrom
	}
	tw := newTable(a.stdout)
	row(tw, "ID", k.ID)
	row(tw, "Name", k.Name)
	row(tw, "Description", k.Description)
	row(tw, "Role", string(k.Role))
	row(tw, "Scopes", scopes)
	row(tw, "Resources", resources)
	row(tw, "Status", string(status))
	row(tw, "Created", model.FormatTime(&k.CreatedAt, "")+" by "+k.CreatedBy)
	row(tw, "Expires", model.FormatTime(k.ExpiresAt, "never"))
	row(tw, "Last used", lastUsed)
	row(tw, "Token hint", k.Hint+"…")
	if k.GraceUntil != nil && now.Before(*k.GraceUntil) {
		row(tw, "Previous token", "valid until "+model.FormatTime(k.GraceUntil, ""))
	}
	row(tw, "Version", strconv.FormatUint(k.Version, 10))
	return tw.Flush()
}

func (a *app) keysEditCmd() *cobra.Command {
	var f keyFlags
	var clearResources, asJSON bool
	c := &cobra.Command{
		Use:   "edit ID|NAME [flags]",
		Short: "Change a key's name, description, role, scopes, resources or expiry",
		Long: `Change only the fields whose flags are given; everything else is kept.

--scope replaces the whole scope list, and --resource the whole resource
list. --clear-resources makes the key apply to every resource again.
Changing the role to admin drops the scopes and resources (ADMIN has all).
An expiry that has already passed may be kept, but a new one must be in the
future.`,
		Example: `  keyward keys edit key_abcdefghijkl --name billing-sync
  keyward keys edit key_abcdefghijkl --scope coupons:read --scope campaigns:read
  keyward keys edit key_abcdefghijkl --clear-resources --expires 2030-01-31
  keyward keys edit key_abcdefghijkl --role readonly --scope coupons:read`,
		Args: exactArgs("ID|NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			e := keyEdit{f: &f, fl: cmd.Flags(), clearResources: clearResources}
			if err := e.check(); err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error { return a.editKey(st, args[0], &e, asJSON) })
		},
	}
	f.register(c.Flags(), "")
	c.Flags().BoolVar(&clearResources, "clear-resources", false, "remove the resource limit: the key applies to every resource")
	c.Flags().BoolVar(&asJSON, "json", false, "print the updated key as JSON")
	return c
}

// keyEdit is one keys edit: the flags given, checked and then applied
// to the key's current spec.
type keyEdit struct {
	f              *keyFlags
	fl             *pflag.FlagSet
	clearResources bool
	role           model.Role // --role, parsed by check
}

// check refuses an edit that changes nothing or contradicts itself, and
// parses --role, before the database is opened.
func (e *keyEdit) check() error {
	fl := e.fl
	changed := false
	for _, n := range []string{"name", "description", "role", "scope", "resource", "expires", "clear-resources"} {
		changed = changed || fl.Changed(n)
	}
	if !changed {
		return usageErrorf("nothing to change: give at least one of --name, --description, --role, --scope, --resource, --clear-resources, --expires")
	}
	if fl.Changed("resource") && e.clearResources {
		return usageErrorf("--resource and --clear-resources contradict each other")
	}
	if fl.Changed("role") {
		r, err := parseRoleFlag(e.f.role)
		if err != nil {
			return err
		}
		e.role = r
	}
	return nil
}

// apply changes spec where a flag was given.
func (e *keyEdit) apply(spec *model.KeySpec, now time.Time) error {
	fl, f := e.fl, e.f
	if fl.Changed("name") {
		spec.Name = f.name
	}
	if fl.Changed("description") {
		spec.Description = f.description
	}
	if fl.Changed("role") {
		spec.Role = e.role
		if e.role == model.RoleAdmin && !fl.Changed("scope") && !fl.Changed("resource") {
			spec.Scopes, spec.Resources = nil, nil
		}
	}
	if fl.Changed("scope") {
		spec.Scopes = f.scopes
	}
	if fl.Changed("resource") {
		spec.Resources = f.resources
	}
	if e.clearResources {
		spec.Resources = nil
	}
	if fl.Changed("expires") {
		var err error
		if spec.ExpiresAt, err = parseExpiry(f.expires, now); err != nil {
			return err
		}
	}
	return nil
}

// editKey applies e to the key ref names and prints the result.
func (a *app) editKey(st *store.Store, ref string, e *keyEdit, asJSON bool) error {
	cur, err := st.ResolveKey(ref)
	if err != nil {
		return err
	}
	now := st.Now()
	spec := model.SpecOf(cur)
	if err := e.apply(&spec, now); err != nil {
		return err
	}
	k, err := st.EditKey(a.actor, cur.ID, cur.Version, spec)
	if err != nil {
		return err
	}
	// No change means no write: the key keeps its version. (The
	// store reports that as nil or as the unchanged key.)
	if k == nil || k.Version == cur.Version {
		k = cur
		if !asJSON {
			fmt.Fprintf(a.stdout, "Key %s is unchanged: the values given are the ones it has.\n", k.ID)
			return nil
		}
	} else if e.fl.Changed("expires") {
		a.warnNever(k.ExpiresAt)
	}
	if asJSON {
		return writeJSON(a.stdout, toKeyJSON(k, statusOf(st, k, now)))
	}
	fmt.Fprintf(a.stdout, "Updated key %s.\n\n", k.ID)
	return a.printKey(k, statusOf(st, k, now), now, false)
}

func (a *app) keysSetActiveCmd(active bool) *cobra.Command {
	use, short, past := "disable", "Disable a key; it is refused from the next verification on", "disabled"
	if active {
		use, short, past = "enable", "Re-enable a disabled key", "enabled"
	}
	var asJSON bool
	c := &cobra.Command{
		Use:     use + " ID|NAME",
		Short:   short,
		Example: fmt.Sprintf("  keyward keys %s key_abcdefghijkl", use),
		Args:    exactArgs("ID|NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				cur, err := st.ResolveKey(args[0])
				if err != nil {
					return err
				}
				k, err := st.SetKeyActive(a.actor, cur.ID, active)
				if err != nil {
					return err
				}
				msg := "Key %s (%s) %s.\n"
				if k == nil || k.Version == cur.Version { // already in that state
					k, msg = cur, "Key %s (%s) was already %s.\n"
				}
				if asJSON {
					return writeJSON(a.stdout, toKeyJSON(k, statusOf(st, k, st.Now())))
				}
				fmt.Fprintf(a.stdout, msg, k.ID, model.Sanitize(k.Name), past)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the key as JSON")
	return c
}

func (a *app) keysRegenerateCmd() *cobra.Command {
	var grace string
	var asJSON bool
	c := &cobra.Command{
		Use:   "regenerate ID|NAME",
		Short: "Issue a new token for a key and print it once",
		Long: `Issue a new token for a key and print it exactly once. The key keeps its id,
name, role, scopes and expiry.

With --grace the previous token keeps verifying for that long, so clients
can be moved over; with the default 0 it stops at once. --grace takes
` + graceHelp + `.`,
		Example: `  keyward keys regenerate key_abcdefghijkl
  keyward keys regenerate key_abcdefghijkl --grace 24h
  keyward keys regenerate key_abcdefghijkl --json | jq -r .token`,
		Args: exactArgs("ID|NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := parseGrace(grace)
			if err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				cur, err := st.ResolveKey(args[0])
				if err != nil {
					return err
				}
				k, token, err := st.RegenerateKey(a.actor, cur.ID, g)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, keyWithToken{toKeyJSON(k, statusOf(st, k, st.Now())), token})
				}
				fmt.Fprintf(a.stdout, "Regenerated key %s (%s).\n", k.ID, model.Sanitize(k.Name))
				if k.GraceUntil != nil {
					fmt.Fprintf(a.stdout, "The previous token keeps working until %s.\n", model.FormatTime(k.GraceUntil, ""))
				} else {
					fmt.Fprintln(a.stdout, "The previous token no longer works.")
				}
				a.noteInactive(k)
				a.printToken(token)
				return nil
			})
		},
	}
	c.Flags().StringVar(&grace, "grace", "0", "how long the previous token keeps working, "+graceHelp)
	c.Flags().BoolVar(&asJSON, "json", false, `print JSON, including "token"`)
	return c
}

func (a *app) keysDeleteCmd() *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "delete ID|NAME --yes",
		Short: "Delete a key permanently",
		Long: `Delete a key permanently; its token stops verifying at once (NOT_FOUND).
The audit log keeps the record. To stop a key reversibly, use keys disable.`,
		Example: `  keyward keys delete key_abcdefghijkl --yes`,
		Args:    exactArgs("ID|NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("refusing to delete key %s without --yes (this cannot be undone; keys disable is reversible)", args[0])
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				k, err := st.ResolveKey(args[0])
				if err != nil {
					return err
				}
				if err := st.DeleteKey(a.actor, k.ID); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Deleted key %s (%s).\n", k.ID, model.Sanitize(k.Name))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	return c
}
