// Command keyward manages API keys from the terminal: a TUI, a scripting
// CLI and a server, all over one bbolt file. This file is wiring only:
// flags, subcommands, opening the store, output formatting, and handing
// over to the tui and server packages.
package main

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/x/term"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/server"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/tui"
)

// demoCatalog is loaded into every new database.
//
//go:embed testdata/catalog.json
var demoCatalog []byte

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed or verification refused the key
	exitUsage   = 2 // the command line or an input value was wrong; nothing was written
)

// maxTokenInput bounds what verify reads from stdin.
const maxTokenInput = 4 << 10

// verifySource is recorded as last_used_from for CLI verifications.
const verifySource = "cli"

// exitError carries an exit code. An empty message means the command has
// already said everything (verify's refusals).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// app holds the global flags and the process's streams.
type app struct {
	dbPath string
	actor  string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	var fe *model.FieldError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &fe):
		code = exitUsage
	}
	if msg := describeError(cmd, err); msg != "" {
		fmt.Fprintln(stderr, "keyward: "+model.Sanitize(msg))
		if code == exitUsage && cmd != nil {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
	}
	return code
}

// describeError names the flag behind a validation error, so
// "--name: name is 65 characters; the limit is 64" says what to fix.
func describeError(cmd *cobra.Command, err error) string {
	msg := err.Error()
	if errors.Is(err, store.ErrForbidden) {
		return msg + " (changes are made as --as, $KEYWARD_OPERATOR or the OS user; see keyward operators list)"
	}
	var fe *model.FieldError
	if cmd == nil || !errors.As(err, &fe) || fe.Msg != msg {
		return msg
	}
	for _, name := range []string{fe.Field, strings.TrimSuffix(fe.Field, "s")} {
		if cmd.Flags().Lookup(name) != nil {
			return "--" + name + ": " + msg
		}
	}
	return msg
}

// ---------------------------------------------------------------------------
// Store access

// open opens the database for cmd. The lock file names the command path
// ("keyward keys list"), never argument values.
func (a *app) open(cmd *cobra.Command, tune func(*store.Options)) (*store.Store, error) {
	opts := store.Options{
		DefaultCatalog: demoCatalog,
		Lock:           store.LockInfo{Command: cmd.CommandPath()},
	}
	if tune != nil {
		tune(&opts)
	}
	return store.Open(a.dbPath, opts)
}

// withStore opens the database, runs fn and closes it, which flushes
// buffered last-used data. A close failure is reported if fn succeeded.
func (a *app) withStore(cmd *cobra.Command, tune func(*store.Options), fn func(st *store.Store) error) (err error) {
	st, err := a.open(cmd, tune)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing database: %w", cerr)
		}
	}()
	return fn(st)
}

// peekRows is how many keys the TUI's first frame shows before the whole
// database is loaded: a screenful on any sensible terminal.
const peekRows = 200

// runTUI runs the TUI. It first peeks at the database (the first keys in
// name order and the key count, read in O(page) without loading it), so
// the table paints at once, and opens the store meanwhile in the
// background: with a million keys that takes a second or two. When the
// peek is not possible (a new database, one from before the name index,
// a lock held by a server) it opens the store first, as every other
// command does, which also gives the precise error.
func (a *app) runTUI(cmd *cobra.Command) error {
	first, err := store.Peek(a.dbPath, peekRows, store.Options{})
	if errors.Is(err, store.ErrLocked) {
		return err // a server or another TUI has it; opening would wait again
	}
	if err != nil || first.Total == 0 {
		return a.withStore(cmd, nil, func(st *store.Store) error {
			return tui.Run(tui.Options{Store: st, Actor: a.actor})
		})
	}
	// The open starts now, beside the program's start-up, and is always
	// waited for: quitting while it runs still closes the store (flushes,
	// unlocks) before keyward exits.
	var st *store.Store
	var openErr error
	opened := make(chan struct{})
	go func() {
		defer close(opened)
		st, openErr = a.open(cmd, nil)
	}()
	err = tui.Run(tui.Options{
		Actor: a.actor, First: first.Keys, FirstTotal: first.Total,
		Open: func() (*store.Store, error) {
			<-opened
			return st, openErr
		},
	})
	<-opened
	if st != nil {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing database: %w", cerr)
		}
	}
	return err
}

// ---------------------------------------------------------------------------
// Commands

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "keyward",
		Short: "Manage API keys from the terminal",
		Long: `keyward manages API keys: a keyboard-driven TUI, a scripting CLI and a
server (SSH TUI and an HTTP verification API), all over one bbolt file.

Run with no subcommand to open the TUI on the database.

The database is --db, else $KEYWARD_DB, else ~/.local/share/keyward/keyward.db
(or $XDG_DATA_HOME/keyward/keyward.db). A new database gets a demo catalog
of scopes and resources, and the local OS user as its first ADMIN operator.

Exit codes: 0 success, 1 failure (or a refused key for verify),
2 usage error or invalid input (nothing was written).`,
		Example: `  keyward                                   # open the TUI
  keyward keys create --name ci-bot --scope coupons:read
  keyward keys list --json
  echo "$TOKEN" | keyward verify --scope coupons:read`,
		Args:          a.noArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.resolveGlobals()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.needTerminal(); err != nil {
				return err
			}
			return a.runTUI(cmd)
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageErrorf("%v", err)
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.dbPath, "db", "", "database file (default $KEYWARD_DB, else the OS data dir + keyward/keyward.db)")
	pf.StringVar(&a.actor, "as", "", "operator every change is attributed to (default $KEYWARD_OPERATOR, else the local OS user)")

	root.AddCommand(a.keysCmd(), a.verifyCmd(), a.secretCmd(), a.operatorsCmd(),
		a.auditCmd(), a.catalogCmd(), a.backupCmd(), a.serveCmd(), a.devCmd())
	return root
}

func (a *app) resolveGlobals() error {
	if a.dbPath == "" {
		p, err := store.DefaultPath() // honours $KEYWARD_DB
		if err != nil {
			return err
		}
		a.dbPath = p
	}
	if a.actor == "" {
		a.actor = os.Getenv("KEYWARD_OPERATOR")
	}
	if a.actor == "" {
		a.actor = store.LocalOperatorName()
	}
	return nil
}

// noArgs refuses stray arguments, including unknown subcommands, as a
// usage error.
func (a *app) noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// exactArgs wants the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf("%s needs %s; got %d argument(s)", cmd.CommandPath(), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// group returns a command that only holds subcommands: with no argument it
// prints help, with an unknown one it is a usage error.
func group(use, short, long, example string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		},
	}
	c.AddCommand(subs...)
	return c
}

// ---------------------------------------------------------------------------
// keys

func (a *app) keysCmd() *cobra.Command {
	return group("keys", "List, create, edit, disable, regenerate and delete API keys",
		`Manage API keys. Keys are named by their id (key_ + 12 characters), as shown
by "keyward keys list".`,
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
		Long: `List every key, oldest first. The STATUS column combines the stored status
with the clock: ACTIVE, EXPIRING (within 14 days), EXPIRED or DISABLED.`,
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
				if asJSON {
					out := make([]keyJSON, len(keys))
					for i, k := range keys {
						out[i] = toKeyJSON(k, now)
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
					row(tw, k.ID, k.Name, string(k.Role), string(k.Display(now)),
						fmtDate(k.ExpiresAt, "never"), fmtTime(k.LastUsedAt, "Never"), k.CreatedBy)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// keyFlags are the editable fields shared by create and edit.
type keyFlags struct {
	name, description, role, expires string
	scopes, resources                []string
}

func (f *keyFlags) register(fs *pflag.FlagSet, roleDefault string) {
	fs.StringVar(&f.name, "name", "", "name, 1-64 printable characters, unique among keys")
	fs.StringVar(&f.description, "description", "", "free-text description (up to 256 characters)")
	fs.StringVar(&f.role, "role", roleDefault, "admin (every scope on every resource), editor or readonly (only :read scopes)")
	fs.StringSliceVar(&f.scopes, "scope", nil, "scope to grant, e.g. coupons:read (repeat or comma-separate)")
	fs.StringSliceVar(&f.resources, "resource", nil, "resource to limit the key to, e.g. web-shop (repeat or comma-separate; none means all)")
	fs.StringVar(&f.expires, "expires", "", `expiry: YYYY-MM-DD (00:00 UTC), an RFC 3339 time, a duration (30d, 90d, 1y) or "never"`)
}

func parseRoleFlag(s string) (model.Role, error) {
	r, err := model.ParseRole(s)
	if err != nil {
		return "", usageErrorf("--role: %v", err)
	}
	return r, nil
}

var relExpiry = regexp.MustCompile(`^([0-9]{1,6})([hdwy])$`)

// parseExpiry turns an --expires value into a time (nil for never).
func parseExpiry(s string, now time.Time) (*time.Time, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "never") {
		return nil, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return &t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		t = t.UTC()
		return &t, nil
	}
	if m := relExpiry.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour}[m[2]]
		if time.Duration(n) > 100*365*24*time.Hour/unit {
			return nil, usageErrorf("--expires: %q is more than 100 years away; use \"never\" instead", s)
		}
		t := now.UTC().Add(time.Duration(n) * unit)
		return &t, nil
	}
	return nil, usageErrorf(`--expires: %q is not a date (YYYY-MM-DD), an RFC 3339 time, a duration such as 30d, 90d or 1y, or "never"`, s)
}

// parseGrace accepts 0, Go durations (1h, 24h) and days/weeks (7d, 2w).
func parseGrace(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if m := relExpiry.FindStringSubmatch(s); m != nil && m[2] != "y" {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		if n > 1000 {
			return 0, usageErrorf("--grace: %q is too long", s)
		}
		return time.Duration(n) * unit, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usageErrorf("--grace: %q is not a duration such as 0, 1h, 24h or 7d", s)
	}
	return d, nil
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
					return writeJSON(a.stdout, keyWithToken{toKeyJSON(k, now), token})
				}
				fmt.Fprintf(a.stdout, "Created key %s (%s), role %s, expires %s.\n",
					k.ID, model.Sanitize(k.Name), k.Role, fmtTime(k.ExpiresAt, "never"))
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

// printToken prints a freshly issued token, once, on a line of its own.
func (a *app) printToken(token string) {
	fmt.Fprintf(a.stdout, "\nThe token is shown only this once; it will not be shown again. Store it now:\n\n%s\n\n", token)
}

func (a *app) keysShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show one key",
		Example: `  keyward keys show key_abcdefghijkl
  keyward keys show key_abcdefghijkl --json`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				k, err := st.Key(args[0])
				if err != nil {
					return err
				}
				return a.printKey(k, st.Now(), asJSON)
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printKey(k *model.Key, now time.Time, asJSON bool) error {
	if asJSON {
		return writeJSON(a.stdout, toKeyJSON(k, now))
	}
	scopes := strings.Join(k.Scopes, ", ")
	if k.Role == model.RoleAdmin {
		scopes = "all (ADMIN)"
	}
	resources := strings.Join(k.Resources, ", ")
	if k.AllResources() {
		resources = "all"
	}
	lastUsed := fmtTime(k.LastUsedAt, "Never")
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
	row(tw, "Status", string(k.Display(now)))
	row(tw, "Created", fmtTime(&k.CreatedAt, "")+" by "+k.CreatedBy)
	row(tw, "Expires", fmtTime(k.ExpiresAt, "never"))
	row(tw, "Last used", lastUsed)
	row(tw, "Token hint", k.Hint+"…")
	if k.GraceUntil != nil && now.Before(*k.GraceUntil) {
		row(tw, "Previous token", "valid until "+fmtTime(k.GraceUntil, ""))
	}
	row(tw, "Version", strconv.FormatUint(k.Version, 10))
	return tw.Flush()
}

func (a *app) keysEditCmd() *cobra.Command {
	var f keyFlags
	var clearResources, asJSON bool
	c := &cobra.Command{
		Use:   "edit ID [flags]",
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
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			changed := false
			for _, n := range []string{"name", "description", "role", "scope", "resource", "expires", "clear-resources"} {
				changed = changed || fl.Changed(n)
			}
			if !changed {
				return usageErrorf("nothing to change: give at least one of --name, --description, --role, --scope, --resource, --clear-resources, --expires")
			}
			if fl.Changed("resource") && clearResources {
				return usageErrorf("--resource and --clear-resources contradict each other")
			}
			var role model.Role
			if fl.Changed("role") {
				r, err := parseRoleFlag(f.role)
				if err != nil {
					return err
				}
				role = r
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				cur, err := st.Key(args[0])
				if err != nil {
					return err
				}
				now := st.Now()
				spec := model.SpecOf(cur)
				if fl.Changed("name") {
					spec.Name = f.name
				}
				if fl.Changed("description") {
					spec.Description = f.description
				}
				if fl.Changed("role") {
					spec.Role = role
					if role == model.RoleAdmin && !fl.Changed("scope") && !fl.Changed("resource") {
						spec.Scopes, spec.Resources = nil, nil
					}
				}
				if fl.Changed("scope") {
					spec.Scopes = f.scopes
				}
				if fl.Changed("resource") {
					spec.Resources = f.resources
				}
				if clearResources {
					spec.Resources = nil
				}
				if fl.Changed("expires") {
					if spec.ExpiresAt, err = parseExpiry(f.expires, now); err != nil {
						return err
					}
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
				} else if fl.Changed("expires") {
					a.warnNever(k.ExpiresAt)
				}
				if asJSON {
					return writeJSON(a.stdout, toKeyJSON(k, now))
				}
				fmt.Fprintf(a.stdout, "Updated key %s.\n\n", k.ID)
				return a.printKey(k, now, false)
			})
		},
	}
	f.register(c.Flags(), "")
	c.Flags().BoolVar(&clearResources, "clear-resources", false, "remove the resource limit: the key applies to every resource")
	c.Flags().BoolVar(&asJSON, "json", false, "print the updated key as JSON")
	return c
}

func (a *app) keysSetActiveCmd(active bool) *cobra.Command {
	use, short, past := "disable", "Disable a key; it is refused from the next verification on", "disabled"
	if active {
		use, short, past = "enable", "Re-enable a disabled key", "enabled"
	}
	var asJSON bool
	c := &cobra.Command{
		Use:     use + " ID",
		Short:   short,
		Example: fmt.Sprintf("  keyward keys %s key_abcdefghijkl", use),
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				cur, err := st.Key(args[0])
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
					return writeJSON(a.stdout, toKeyJSON(k, st.Now()))
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
		Use:   "regenerate ID",
		Short: "Issue a new token for a key and print it once",
		Long: `Issue a new token for a key and print it exactly once. The key keeps its id,
name, role, scopes and expiry.

With --grace the previous token keeps verifying for that long (1h, 24h,
7d) so clients can be moved over; with the default 0 it stops at once.`,
		Example: `  keyward keys regenerate key_abcdefghijkl
  keyward keys regenerate key_abcdefghijkl --grace 24h
  keyward keys regenerate key_abcdefghijkl --json | jq -r .token`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := parseGrace(grace)
			if err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				k, token, err := st.RegenerateKey(a.actor, args[0], g)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, keyWithToken{toKeyJSON(k, st.Now()), token})
				}
				fmt.Fprintf(a.stdout, "Regenerated key %s (%s).\n", k.ID, model.Sanitize(k.Name))
				if k.GraceUntil != nil {
					fmt.Fprintf(a.stdout, "The previous token keeps working until %s.\n", fmtTime(k.GraceUntil, ""))
				} else {
					fmt.Fprintln(a.stdout, "The previous token no longer works.")
				}
				a.printToken(token)
				return nil
			})
		},
	}
	c.Flags().StringVar(&grace, "grace", "0", "how long the previous token keeps working: 0, 1h, 24h or 7d")
	c.Flags().BoolVar(&asJSON, "json", false, `print JSON, including "token"`)
	return c
}

func (a *app) keysDeleteCmd() *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "delete ID --yes",
		Short: "Delete a key permanently",
		Long: `Delete a key permanently; its token stops verifying at once (NOT_FOUND).
The audit log keeps the record. To stop a key reversibly, use keys disable.`,
		Example: `  keyward keys delete key_abcdefghijkl --yes`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("refusing to delete key %s without --yes (this cannot be undone; keys disable is reversible)", args[0])
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				k, err := st.Key(args[0])
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

// ---------------------------------------------------------------------------
// verify

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

Exit status: 0 VALID, 1 refused, 2 usage. A successful verification is
recorded as the key's last use (from "cli").`,
		Example: `  echo "$TOKEN" | keyward verify
  keyward verify --scope coupons:read --resource web-shop < token.txt
  printf %s "$TOKEN" | keyward verify --scope coupons:write --json`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Read first: a verify waiting on a slow pipe must not hold
			// the database.
			token, err := a.readToken()
			if err != nil {
				return err
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
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

// needTerminal refuses to start the TUI where there is no terminal to draw
// on (a pipe, cron, CI), which would otherwise end in bubbletea's raw
// "could not open a new TTY" error, and before the database is locked.
func (a *app) needTerminal() error {
	const hint = "; in scripts use the subcommands, e.g. \"keyward keys list --json\" (see keyward --help)"
	if out, ok := a.stdout.(*os.File); !ok || !term.IsTerminal(out.Fd()) {
		return usageErrorf("the TUI needs a terminal, and standard output is not one" + hint)
	}
	if in, ok := a.stdin.(*os.File); ok && term.IsTerminal(in.Fd()) {
		return nil
	}
	tty, err := os.Open("/dev/tty") // where bubbletea reads keys when stdin is redirected
	if err != nil {
		return usageErrorf("the TUI needs a terminal for keyboard input, and there is none" + hint)
	}
	return tty.Close()
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

// ---------------------------------------------------------------------------
// secret

func (a *app) secretCmd() *cobra.Command {
	return group("secret", "Show, rotate or describe the HTTP API's shared secret",
		`The shared secret authenticates callers of the HTTP verification API
(Authorization: Bearer <secret>). It is stored encrypted (AES-256-GCM) with
a master key kept in <db>.masterkey beside the database. It is generated on
first use. Revealing and rotating it need an ADMIN operator and are audited.`,
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
		fmtTime(meta.CreatedAt, "now"), fmtTime(meta.RotatedAt, "never"), secret)
	if meta.PreviousValidUntil != nil {
		fmt.Fprintf(a.stdout, "The previous secret keeps working until %s.\n", fmtTime(meta.PreviousValidUntil, ""))
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
secret keeps authenticating HTTP callers for that long.`,
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
	c.Flags().StringVar(&grace, "grace", "0", "how long the previous secret keeps working: 0, 1h, 24h or 7d")
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
				row(tw, "Created", fmtTime(meta.CreatedAt, ""))
				row(tw, "Rotated", fmtTime(meta.RotatedAt, "never"))
				if meta.PreviousValidUntil != nil {
					row(tw, "Previous valid until", fmtTime(meta.PreviousValidUntil, ""))
				}
				row(tw, "Master key", store.MasterKeyPath(st.Path()))
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// ---------------------------------------------------------------------------
// operators

func (a *app) operatorsCmd() *cobra.Command {
	return group("operators", "Manage the operators who administer keys",
		`Operators are the people who administer keyward, locally (--as, default the
OS user) or over SSH (by their registered public keys). ADMIN operators may
change anything; READONLY operators may only look. One active ADMIN must
always remain. Keys created by an operator who is later disabled or deleted
verify as CREATOR_DISABLED.`,
		`  keyward operators list
  keyward operators add alice --role admin --key "$(cat ~/.ssh/id_ed25519.pub)"
  keyward operators disable alice`,
		a.operatorsListCmd(), a.operatorsAddCmd(), a.operatorsSetDisabledCmd(true),
		a.operatorsSetDisabledCmd(false), a.operatorsDeleteCmd(), a.operatorsRoleCmd())
}

func parseOperatorRole(s string) (model.OperatorRole, error) {
	r, err := model.ParseOperatorRole(s)
	if err != nil {
		return "", usageErrorf("%v", err)
	}
	return r, nil
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
						op.CreatedBy, fmtTime(op.LastLoginAt, "Never"))
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
Each --key is an SSH public key in authorized_keys form; the operator logs
in to "keyward serve" over SSH with it.`,
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
				fmt.Fprintf(a.stdout, "Added operator %s (%s) with %d SSH key(s).\n", op.Name, op.Role, len(op.PublicKeys))
				return nil
			})
		},
	}
	c.Flags().StringVar(&role, "role", "", "admin or readonly")
	c.Flags().StringArrayVar(&keys, "key", nil, `SSH public key, "ssh-ed25519 AAAA... comment" (repeatable)`)
	return c
}

func (a *app) operatorsSetDisabledCmd(disabled bool) *cobra.Command {
	use, short, past := "enable", "Re-enable an operator", "enabled"
	if disabled {
		use, short, past = "disable", "Disable an operator (its keys then verify as CREATOR_DISABLED)", "disabled"
	}
	return &cobra.Command{
		Use:     use + " NAME",
		Short:   short,
		Example: fmt.Sprintf("  keyward operators %s alice", use),
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				if _, err := st.SetOperatorDisabled(a.actor, args[0], disabled); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Operator %s is %s.\n", model.Sanitize(args[0]), past)
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
		Long: `Delete an operator. Keys it created then verify as CREATOR_DISABLED. The
last active ADMIN cannot be deleted.`,
		Example: `  keyward operators delete alice --yes`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usageErrorf("refusing to delete operator %s without --yes (keys it created will stop verifying)", args[0])
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				if err := st.DeleteOperator(a.actor, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Deleted operator %s.\n", model.Sanitize(args[0]))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	return c
}

func (a *app) operatorsRoleCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "role NAME admin|readonly",
		Short:   "Change an operator's role",
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

// ---------------------------------------------------------------------------
// audit

func (a *app) auditCmd() *cobra.Command {
	var asJSON bool
	var target, grep string
	var limit int
	c := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log, newest first",
		Long: `Show the append-only audit log, newest first: who did what to which key,
operator, the shared secret or the catalog. It never holds a token or secret;
keys are named by id and a short token hint.`,
		Example: `  keyward audit --limit 20
  keyward audit --key key_abcdefghijkl
  keyward audit --grep disable --json`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usageErrorf("--limit must be 0 (all) or more")
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				evs, err := st.Audit(store.AuditFilter{Target: target, Query: grep, Limit: limit})
				if err != nil {
					return err
				}
				if asJSON {
					if evs == nil {
						evs = []model.AuditEvent{}
					}
					return writeJSON(a.stdout, evs)
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tTARGET\tDETAIL")
				for _, ev := range evs {
					row(tw, fmtTime(&ev.Time, ""), ev.Actor, ev.Action, ev.Target, ev.Detail)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&target, "key", "", `only events about this key id (or operator name, "secret", "catalog")`)
	c.Flags().IntVar(&limit, "limit", 0, "show at most N events (0: all)")
	c.Flags().StringVar(&grep, "grep", "", "only events whose actor, action, target or detail contain TEXT (case-insensitive)")
	return c
}

// ---------------------------------------------------------------------------
// catalog

func (a *app) catalogCmd() *cobra.Command {
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Replace the catalog of scopes and resources from a JSON file",
		Long: `Replace the catalog from a JSON file ("-" reads stdin), in the form that
catalog export writes. A scope or resource still granted to a key cannot be
dropped.`,
		Example: `  keyward catalog export catalog.json && $EDITOR catalog.json && keyward catalog import catalog.json
  keyward catalog import - < catalog.json`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := a.readInput(args[0], 1<<20)
			if err != nil {
				return err
			}
			cat, err := model.ParseCatalog(data)
			if err != nil {
				return usageErrorf("%s: %v", displayName(args[0]), err)
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				if err := st.ImportCatalog(a.actor, cat); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Imported the catalog: %d scopes, %d resources.\n", len(cat.Scopes), len(cat.Resources))
				return nil
			})
		},
	}
	exp := &cobra.Command{
		Use:     "export FILE",
		Short:   "Write the catalog as JSON",
		Long:    `Write the catalog as JSON to FILE ("-" writes stdout).`,
		Example: `  keyward catalog export - | jq '.scopes[].name'`,
		Args:    exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				cat := st.Catalog()
				if cat.Scopes == nil {
					cat.Scopes = []model.Scope{}
				}
				if cat.Resources == nil {
					cat.Resources = []model.Resource{}
				}
				if args[0] == "-" {
					return writeJSON(a.stdout, cat)
				}
				return writeFileAtomic(args[0], true, 0o644, func(w io.Writer) error { return writeJSON(w, cat) })
			})
		},
	}
	return group("catalog", "Import or export the catalog of scopes and resources",
		`The catalog lists the scopes (each marked per-resource or not) and the
resources (applications and properties) that keys can be granted. A new
database gets a small demo catalog.`,
		`  keyward catalog export catalog.json
  keyward catalog import catalog.json`, imp, exp)
}

func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// readInput reads a file, or stdin for "-", refusing more than max bytes.
func (a *app) readInput(path string, max int64) ([]byte, error) {
	r := a.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", displayName(path), err)
	}
	if int64(len(data)) > max {
		return nil, usageErrorf("%s is larger than %d bytes", displayName(path), max)
	}
	return data, nil
}

// ---------------------------------------------------------------------------
// backup

func (a *app) backupCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent copy of the database",
		Long: `Write a consistent copy of the database to FILE (mode 0600), through a temporary
file in the same directory that is renamed into place. An existing FILE is
kept unless --force is given.

The copy holds token hashes only. The shared secret in it is encrypted with
the master key (<db>.masterkey), which is not part of the backup: keep a copy
of that file separately and safely if you need the secret back.`,
		Example: `  keyward backup /var/backups/keyward-$(date +%F).db`,
		Args:    exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest := args[0]
			if !force {
				if _, err := os.Lstat(dest); err == nil {
					return usageErrorf("%s already exists; pass --force to overwrite it", dest)
				}
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				if abs, err := filepath.Abs(dest); err == nil {
					if dbAbs, err := filepath.Abs(st.Path()); err == nil && abs == dbAbs {
						return usageErrorf("refusing to back the database up onto itself")
					}
				}
				var n int64
				err := writeFileAtomic(dest, force, 0o600, func(w io.Writer) error {
					var err error
					n, err = st.Backup(w)
					return err
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Backed up %s to %s (%d bytes). The master key %s is not included.\n",
					st.Path(), dest, n, store.MasterKeyPath(st.Path()))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists")
	return c
}

// writeFileAtomic writes through a temporary file in dest's directory and
// renames it into place, so dest is either the old file or the whole new
// one. Without overwrite an existing dest is an error.
func writeFileAtomic(dest string, overwrite bool, mode os.FileMode, fill func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err = fill(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if overwrite {
		return os.Rename(tmp.Name(), dest)
	}
	// Link fails if dest appeared meanwhile; the temp name is then removed.
	if err = os.Link(tmp.Name(), dest); err != nil {
		if errors.Is(err, os.ErrExist) {
			return usageErrorf("%s already exists; pass --force to overwrite it", dest)
		}
		return err
	}
	return os.Remove(tmp.Name())
}

// ---------------------------------------------------------------------------
// serve

func (a *app) serveCmd() *cobra.Command {
	var sshAddr, httpAddr, hostKey string
	var idle, flush, httpIdle time.Duration
	var procs, httpMaxConns int
	var requireScope bool
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the TUI over SSH and the verification API over HTTP",
		Long: `Serve until interrupted (SIGINT or SIGTERM):

  --ssh   the TUI over SSH, one session per operator, authenticated by the
          operators' registered public keys (keyward operators add --key)
  --http  POST /v1/keys/verify with "Authorization: Bearer <shared secret>",
          and GET /healthz

An empty address turns that side off. The SSH host key is generated once,
by default beside the database. While serving, this process holds the
database: other keyward commands on it report it as in use.
Logs go to stderr.

--procs sets how many threads run Go code at once (GOMAXPROCS). By default
serve uses the CPU count but at least 4, even on a 1- or 2-CPU machine: a
commit's fsync holds one of them while it waits for the disk, and with
only 2 the verify API loses half its capacity during every admin write.
The price: while verifies saturate the CPUs, admin writes are slower.
A GOMAXPROCS environment variable is kept unless --procs is given.

HTTP limits: at most --http-max-conns connections are open at once (by
default 1024, lowered to fit the open-files limit, which serve raises to
the hard limit at start; HTTP never takes more than half of it). At the
cap, the connection idle the longest is closed to admit a new one, so a
flood of idle connections cannot lock callers or /healthz out; only when
every connection is in the middle of a request is a new one answered 503.
Idle keep-alive connections are closed after --http-idle-timeout.
Request line and headers may total 16 KiB (431 above), bodies 64 KiB.
Without --require-scope, a verify that names no scope is VALID for any
live key: it authenticates the key and says nothing about what it may do.`,
		Example: `  keyward serve
  keyward serve --ssh 0.0.0.0:2222 --http ""
  keyward serve --http 127.0.0.1:9000 --idle-timeout 10m`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if sshAddr == "" && httpAddr == "" {
				return usageErrorf("both --ssh and --http are off; nothing to serve")
			}
			if procs < 0 {
				return usageErrorf("--procs must be 0 (automatic) or more")
			}
			if httpMaxConns < 0 {
				return usageErrorf("--http-max-conns must be 0 (automatic) or more")
			}
			if httpIdle < time.Second {
				return usageErrorf("--http-idle-timeout must be at least 1s")
			}
			if hostKey == "" {
				hostKey = filepath.Join(filepath.Dir(a.dbPath), "ssh_host_ed25519")
			}
			cur := runtime.GOMAXPROCS(0)
			if n := serveProcs(procs, os.Getenv("GOMAXPROCS"), cur); n != cur {
				runtime.GOMAXPROCS(n)
			}
			tune := func(o *store.Options) {
				o.Lock.SSHAddr = sshAddr
				o.FlushInterval = flush
				o.Lean = true // see store/slots.go: the verify path's heap is pointer-free
			}
			return a.withStore(cmd, tune, func(st *store.Store) error {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return server.Serve(ctx, server.Config{
					Store:       st,
					SSHAddr:     sshAddr,
					HTTPAddr:    httpAddr,
					HostKeyPath: hostKey,
					IdleTimeout: idle,
					Log:         a.stderr, // the server logs where it listens

					HTTPMaxConns:    httpMaxConns,
					HTTPIdleTimeout: httpIdle,
					RequireScope:    requireScope,
				})
			})
		},
	}
	fl := c.Flags()
	fl.StringVar(&sshAddr, "ssh", "127.0.0.1:2222", `SSH listen address ("" turns SSH off)`)
	fl.StringVar(&httpAddr, "http", "127.0.0.1:8080", `HTTP listen address ("" turns HTTP off)`)
	fl.DurationVar(&idle, "idle-timeout", 30*time.Minute, "end SSH sessions idle this long")
	fl.StringVar(&hostKey, "host-key", "", "SSH host key file (default: ssh_host_ed25519 beside the database)")
	fl.DurationVar(&flush, "flush-interval", 10*time.Second, "how often last-used times are written")
	fl.IntVar(&procs, "procs", 0, "GOMAXPROCS for the server (0: the CPU count, but at least 4)")
	fl.IntVar(&httpMaxConns, "http-max-conns", 0, "most open HTTP connections; at the cap the longest idle is closed (0: 1024, lowered to fit ulimit -n)")
	fl.DurationVar(&httpIdle, "http-idle-timeout", 30*time.Second, "close idle HTTP keep-alive connections after this long")
	fl.BoolVar(&requireScope, "require-scope", false, `answer 400 to a verify without "scope" (default: such a verify only authenticates the key)`)
	return c
}

// serveMinProcs is serve's default floor for GOMAXPROCS. A goroutine in a
// disk syscall (bbolt's fdatasync on every commit) keeps its P until
// sysmon takes it back, up to 10 ms later. On 2 CPUs with GOMAXPROCS=2,
// that cut verify throughput by up to half during admin writes, and p99
// rose up to 4.3× idle. With 4 Ps it stayed within 0.8–1.4× idle, and verify
// vs bare was no worse. The cost is slower admin writes while verifies
// saturate the CPUs. BENCHMARKS.md, section "Reads during writes".
const serveMinProcs = 4

// serveProcs returns the GOMAXPROCS serve runs with: flag if set, else the
// current value when the GOMAXPROCS environment variable chose it, else the
// current value (the CPU count) raised to serveMinProcs.
func serveProcs(flag int, env string, cur int) int {
	switch {
	case flag > 0:
		return flag
	case env != "":
		return cur
	}
	return max(cur, serveMinProcs)
}

// ---------------------------------------------------------------------------
// dev

func (a *app) devCmd() *cobra.Command {
	var n int
	var seed uint64
	seedCmd := &cobra.Command{
		Use:   "seed --keys N",
		Short: "Fill the database with N realistic keys",
		Long: `Fill the database with N realistic keys for demos and benchmarks: varied
names and descriptions, all three roles, scopes and resources from the
catalog, creation dates up to three years back, expiries (some never, some
already past, some within the 14-day expiring window, most months to two
years away), last use (some never, some more than 90 days ago, most
recent) and some keys disabled. Their tokens are not printed or kept, so
seeded keys never verify. The batch is audited as one event, not one per
key. --seed makes the run repeatable.`,
		Example: `  KEYWARD_DB=/tmp/demo.db keyward dev seed --keys 100000
  keyward --db /tmp/demo.db dev seed --keys 500 --seed 7`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n <= 0 {
				return usageErrorf("--keys must be 1 or more")
			}
			return a.withStore(cmd, nil, func(st *store.Store) error { return a.seed(st, n, seed) })
		},
	}
	seedCmd.Flags().IntVar(&n, "keys", 0, "how many keys to add")
	seedCmd.Flags().Uint64Var(&seed, "seed", 1, "random seed")
	return group("dev", "Developer tools (seeding demo data)", "Tools for development, demos and benchmarks.",
		`  keyward --db /tmp/demo.db dev seed --keys 100000`, seedCmd)
}

var (
	seedTeams    = []string{"billing", "checkout", "loyalty", "marketing", "mobile", "partner", "reporting", "search", "support", "warehouse", "crm", "fraud"}
	seedPurposes = []string{"sync", "import", "export", "bot", "worker", "webhook", "dashboard", "cron", "gateway", "etl"}
	seedDescs    = []string{
		"Nightly %s job",
		"Used by the %s service in production",
		"Staging credentials for %s",
		"Partner integration (%s)",
		"",
		"Owned by the %s team; rotate quarterly",
	}
	seedSources = []string{"10.0.4.17", "10.0.9.3", "10.2.0.44", "172.16.3.8", "192.168.10.21", "cli", "203.0.113.7"}
)

// seedBatch keys go into one transaction. Ids are random, so every batch
// touches most leaf pages of the keys bucket, splits pages the previous
// batch filled and rewrites them at commit: four batches of 250k made a
// 1M-key file 810 MiB, one transaction makes it 334 MiB. Memory is the
// limit: seeding 1M keys in one transaction peaks at about 2.8 GiB RSS.
const seedBatch = 2_000_000

func (a *app) seed(st *store.Store, n int, seed uint64) error {
	cat := st.Catalog()
	if len(cat.Scopes) == 0 {
		return errors.New("the catalog has no scopes; import one first (keyward catalog import FILE)")
	}
	rng := rand.New(rand.NewPCG(seed, uint64(st.KeyCount())))
	offset := st.KeyCount()
	now := st.Now().UTC()
	started := time.Now()
	const day = 24 * time.Hour
	between := func(from, to time.Time) time.Time { // uniform in [from, to)
		if !to.After(from) {
			return from
		}
		return from.Add(time.Duration(rng.Int64N(int64(to.Sub(from)))))
	}
	batch := make([]store.SeedKey, 0, min(n, seedBatch))
	for i := range n {
		team := seedTeams[rng.IntN(len(seedTeams))]
		spec := model.KeySpec{
			Name:   fmt.Sprintf("%s-%s-%04d", team, seedPurposes[rng.IntN(len(seedPurposes))], offset+i),
			Active: rng.IntN(100) >= 8,
		}
		if d := seedDescs[rng.IntN(len(seedDescs))]; d != "" {
			spec.Description = fmt.Sprintf(d, team)
		}
		created := between(now.Add(-3*365*day), now.Add(-time.Hour))
		switch r := rng.IntN(100); {
		case r < 10: // never expires
		case r < 18: // expired already
			exp := between(created.Add(time.Hour), now)
			spec.ExpiresAt = &exp
		case r < 23: // within the 14-day expiring window
			exp := between(now.Add(time.Hour), now.Add(model.ExpiringWindow))
			spec.ExpiresAt = &exp
		default:
			exp := between(now.Add(15*day), now.Add(730*day))
			spec.ExpiresAt = &exp
		}
		switch r := rng.IntN(10); {
		case r == 0:
			spec.Role = model.RoleAdmin
		case r < 7:
			spec.Role = model.RoleEditor
		default:
			spec.Role = model.RoleReadonly
		}
		if spec.Role != model.RoleAdmin {
			if rng.IntN(10) < 4 && len(cat.Resources) > 0 {
				for _, j := range rng.Perm(len(cat.Resources))[:1+rng.IntN(min(2, len(cat.Resources)))] {
					spec.Resources = append(spec.Resources, cat.Resources[j].ID)
				}
			}
			offered := cat.OfferedScopes(spec.Role, len(spec.Resources) > 0)
			if len(offered) == 0 {
				spec.Resources = nil
				offered = cat.OfferedScopes(spec.Role, false)
			}
			if len(offered) == 0 {
				spec.Role = model.RoleAdmin
			}
			if spec.Role != model.RoleAdmin {
				for _, j := range rng.Perm(len(offered))[:1+rng.IntN(min(3, len(offered)))] {
					spec.Scopes = append(spec.Scopes, offered[j].Name)
				}
			}
		}
		sk := store.SeedKey{Spec: spec, CreatedAt: created}
		switch r := rng.IntN(100); {
		case r < 25: // never used
		case r < 45: // unused for more than 90 days
			if at := between(created, now.Add(-91*day)); at.After(created) {
				sk.LastUsedAt = &at
			}
		default: // recently, mostly within the last day
			from := now.Add(-90 * day)
			if rng.IntN(3) > 0 {
				from = now.Add(-day)
			}
			if from.Before(created) {
				from = created
			}
			at := between(from, now)
			sk.LastUsedAt = &at
		}
		if sk.LastUsedAt != nil {
			sk.LastUsedFrom = seedSources[rng.IntN(len(seedSources))]
		}
		batch = append(batch, sk)
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := st.SeedKeys(a.actor, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	took := time.Since(started)
	size := "unknown"
	if fi, err := os.Stat(st.Path()); err == nil {
		size = fmt.Sprintf("%.1f MiB", float64(fi.Size())/(1<<20))
	}
	fmt.Fprintf(a.stdout, "Seeded %d keys in %s (%.0f keys/s); the database now holds %d keys in %s.\n",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), st.KeyCount(), size)
	return nil
}

// ---------------------------------------------------------------------------
// Output helpers

// keyJSON is a key as the CLI prints it: model.Key's snake_case fields,
// lists as [] rather than null, plus the status the table shows.
type keyJSON struct {
	model.Key
	DisplayStatus model.DisplayStatus `json:"display_status"`
}

type keyWithToken struct {
	keyJSON
	Token string `json:"token"`
}

func toKeyJSON(k *model.Key, now time.Time) keyJSON {
	c := k.Clone()
	if c.Scopes == nil {
		c.Scopes = []string{}
	}
	if c.Resources == nil {
		c.Resources = []string{}
	}
	return keyJSON{Key: *c, DisplayStatus: c.Display(now)}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one table row, sanitising every cell: names, descriptions and
// audit details come from users and the database.
func row(tw io.Writer, cells ...string) {
	clean := slices.Clone(cells)
	for i, c := range clean {
		clean[i] = model.Sanitize(c) // tabs become spaces too
	}
	fmt.Fprintln(tw, strings.Join(clean, "\t"))
}

func fmtTime(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func fmtDate(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.DateOnly)
}
