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
	"sync"
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
	// dbFromFlag: the path came from --db (not $KEYWARD_DB or the default).
	dbFromFlag bool
	create     bool // --create: make --db's missing directory
	actor      string
	warnMu     sync.Mutex
	warnHeld   *[]string // see holdWarnings
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
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
		fmt.Fprintln(stderr, "keyward: "+model.Sanitize(model.MaskTokens(msg, args...)))
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
		// Only the default data directory is created on first run; a
		// --db in a missing directory is most likely a typo.
		NoCreateDir: a.dbFromFlag && !a.create,
		Warn:        a.warn,
	}
	if tune != nil {
		tune(&opts)
	}
	st, err := store.Open(a.dbPath, opts)
	var nd *store.NoDirError
	if errors.As(err, &nd) {
		return nil, fmt.Errorf("--db %s: %w; create it first, or pass --create to create it (0700)", a.dbPath, err)
	}
	return st, err
}

// warn prints a warning about files and modes on stderr, or, while a
// TUI owns the terminal, keeps it for when it has quit.
func (a *app) warn(msg string) {
	line := "keyward: warning: " + model.Sanitize(msg)
	a.warnMu.Lock()
	defer a.warnMu.Unlock()
	if a.warnHeld != nil {
		*a.warnHeld = append(*a.warnHeld, line)
		return
	}
	fmt.Fprintln(a.stderr, line)
}

// holdWarnings keeps warnings from reaching the terminal until the
// returned function is called, which prints them.
func (a *app) holdWarnings() (release func()) {
	var held []string
	a.warnMu.Lock()
	a.warnHeld = &held
	a.warnMu.Unlock()
	return func() {
		a.warnMu.Lock()
		a.warnHeld = nil
		a.warnMu.Unlock()
		for _, line := range held {
			fmt.Fprintln(a.stderr, line)
		}
	}
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
	release := a.holdWarnings() // the TUI is about to own the terminal
	defer release()
	opened := make(chan struct{})
	go func() {
		defer close(opened)
		st, openErr = a.open(cmd, nil)
	}()
	err = tui.Run(tui.Options{
		Actor: a.actor, First: first.Keys, FirstTotal: first.Total, FirstOperators: first.Operators,
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
The default directory (and one named by $KEYWARD_DB) is created 0700 on
first use; a --db directory must exist unless --create is given.

Files beside the database (<db>.lock, <db>.masterkey, <db>.sock, the SSH
host key) are never opened through a symbolic link and must belong to you;
the master key and host key must be readable by you only (chmod 600). A
symbolic link as the database path is refused: pass the real path. A
database or directory that other users can read is used, with a warning.

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
			if f := cmd.Flags().Lookup("db"); f != nil && f.Changed {
				if a.dbPath == "" {
					return usageErrorf("--db needs a path; got an empty one")
				}
				a.dbFromFlag = true
			}
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
	pf.BoolVar(&a.create, "create", false, "create --db's directory (0700) if it does not exist")
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

// maxGrace is the longest grace period for a previous token or secret.
const maxGrace = 30 * 24 * time.Hour

// graceHelp is the rule parseGrace applies, for --help.
const graceHelp = "0 to 30 days: 0, a duration such as 90m, 1h or 24h, or days/weeks such as 7d or 2w"

// parseGrace accepts 0, Go durations (90m, 1h, 24h) and days/weeks (7d,
// 2w), from 0 to 30 days: the TUI's choices (none, 1 h, 24 h, 7 d) are
// examples, not the only values.
func parseGrace(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if m := relExpiry.FindStringSubmatch(s); m != nil && m[2] != "y" {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		d = time.Duration(n) * unit // n < 10^6: no overflow
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, usageErrorf("--grace: %q is not a duration; give %s", s, graceHelp)
		}
	}
	if d < 0 || d > maxGrace {
		return 0, usageErrorf("--grace: %q is out of range; give %s", s, graceHelp)
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
					return writeJSON(a.stdout, keyWithToken{toKeyJSON(k, statusOf(st, k, now)), token})
				}
				fmt.Fprintf(a.stdout, "Created key %s (%s), role %s, expires %s.\n",
					k.ID, model.Sanitize(k.Name), k.Role, fmtTime(k.ExpiresAt, "never"))
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
	row(tw, "Status", string(status))
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
				cur, err := st.ResolveKey(args[0])
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
					return writeJSON(a.stdout, toKeyJSON(k, statusOf(st, k, now)))
				}
				fmt.Fprintf(a.stdout, "Updated key %s.\n\n", k.ID)
				return a.printKey(k, statusOf(st, k, now), now, false)
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
					fmt.Fprintf(a.stdout, "The previous token keeps working until %s.\n", fmtTime(k.GraceUntil, ""))
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
				fmt.Fprintf(a.stdout, "Added key %s to operator %s (%d SSH key(s)).\n", pk.Fingerprint(), op.Name, len(op.PublicKeys))
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
				fmt.Fprintf(a.stdout, "Removed key %s from operator %s (%d SSH key(s) left); SSH sessions that logged in with it end.\n", fp, op.Name, len(op.PublicKeys))
				return nil
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
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
					fmt.Fprintf(a.stdout, "Operator %s is disabled: %d keys created by %s stop verifying (CREATOR_DISABLED) until it is enabled, and its SSH sessions end.\n", name, n, name)
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
				fmt.Fprintf(a.stdout, "Deleted operator %s: %d keys created by %s stop verifying (CREATOR_DISABLED).\n", name, n, name)
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
				target, err := auditTarget(st, target)
				if err != nil {
					return err
				}
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
	c.Flags().StringVar(&target, "key", "", `only events about this key, by id or name (or an operator name, "secret", "catalog")`)
	c.Flags().IntVar(&limit, "limit", 0, "show at most N events (0: all)")
	c.Flags().StringVar(&grep, "grep", "", "only events whose actor, action, target or detail contain TEXT (case-insensitive)")
	return c
}

// auditTarget turns audit --key into the target events are kept under: a
// live key's id as given, a live key's name as its id, and anything with
// events of its own (a deleted key's id, an operator, "secret",
// "catalog") as given. Anything else is an error rather than an empty
// table that looks like "no events".
func auditTarget(st *store.Store, ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	if _, err := st.Key(ref); err == nil {
		return ref, nil
	}
	if evs, err := st.Audit(store.AuditFilter{Target: ref, Limit: 1}); err != nil || len(evs) > 0 {
		return ref, err
	}
	if _, err := st.Operator(ref); err == nil || ref == "secret" || ref == "catalog" {
		return ref, nil
	}
	k, err := st.ResolveKey(ref)
	if err != nil {
		return "", err
	}
	return k.ID, nil
}

// ---------------------------------------------------------------------------
// catalog

func (a *app) catalogCmd() *cobra.Command {
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Replace the catalog of scopes and resources from a JSON file",
		Long: `Replace the catalog from a JSON file ("-" reads stdin), in the form that
catalog export writes. The import is refused, and nothing changes, if it
would leave any key invalid: dropping a scope or resource a key uses, or
making a scope that a key uses on chosen resources not per-resource. The
refusal lists the keys (up to 10) and what they use.

Also refused: an empty catalog (null, {}, no scopes), unknown fields, a
field given twice in one object, duplicate scopes or resources.`,
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
				fmt.Fprintf(a.stdout, "Imported the catalog: %s, %s.\n", model.Count(len(cat.Scopes), "scope", ""), model.Count(len(cat.Resources), "resource", ""))
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

While keyward serve holds the database, the copy is taken from the server
(an online backup): it streams a consistent snapshot through the unix socket
<db>.sock, which serves only processes of the user it runs as, and this
command writes it to FILE in the same way. Writes made meanwhile (SSH
sessions, last-used times) are either wholly in the copy or not at all.
Any other holder (a TUI, another command) makes backup fail as in-use.

The copy holds token hashes only. The shared secret in it is encrypted with
the master key (<db>.masterkey), which is not part of the backup: keep a copy
of that file separately and safely if you need the secret back.`,
		Example: `  keyward backup /var/backups/keyward-$(date +%F).db
  keyward --db /srv/keyward/keyward.db backup /srv/backups/kw.db   # also while serve runs`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest := args[0]
			if !force {
				if _, err := os.Lstat(dest); err == nil {
					return usageErrorf("%s already exists; pass --force to overwrite it", dest)
				}
			}
			for _, own := range []string{a.dbPath, store.MasterKeyPath(a.dbPath), a.dbPath + ".lock", store.BackupSocketPath(a.dbPath)} {
				if sameFile(dest, own) {
					return usageErrorf("refusing to write the backup over %s, which keyward uses", own)
				}
			}
			err := a.withStore(cmd, nil, func(st *store.Store) error {
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
			if errors.Is(err, store.ErrLocked) {
				// A serve holds the database: ask it (see server/backup.go).
				return a.onlineBackup(dest, force, err)
			}
			return err
		},
	}
	c.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists")
	return c
}

// onlineBackup takes the backup from the keyward serve that holds the
// database, through its backup socket, with the same guarantees as an
// offline one: a consistent snapshot, written to a temporary file, synced
// and renamed into place, mode 0600. locked is the error that sent us
// here: if no server answers, it is what the user needs to see.
func (a *app) onlineBackup(dest string, force bool, locked error) error {
	var n int64
	err := writeFileAtomic(dest, force, 0o600, func(w io.Writer) error {
		var err error
		n, err = server.FetchBackup(a.dbPath, w)
		return err
	})
	if errors.Is(err, server.ErrNoBackupServer) {
		return fmt.Errorf("%w (an online backup needs keyward serve to hold the database; %v)", locked, err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Backed up %s to %s (%d bytes) from the running keyward serve. The master key %s is not included.\n",
		a.dbPath, dest, n, store.MasterKeyPath(a.dbPath))
	return nil
}

// sameFile reports whether a and b name the same path, or the same file.
func sameFile(a, b string) bool {
	if aa, err := filepath.Abs(a); err == nil {
		if bb, err := filepath.Abs(b); err == nil && aa == bb {
			return true
		}
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
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
	var lim server.SSHLimits
	var termSize string
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
database: other keyward commands on it report it as in use, with the
"ssh -p PORT OPERATOR@HOST" to use instead (the bound port). keyward backup
still works: serve hands it a consistent copy through the unix socket
<db>.sock (0600; only processes of this user are served).
Logs go to stderr.

--procs sets how many threads run Go code at once (GOMAXPROCS). By default
serve uses the CPU count but at least 4, even on a 1- or 2-CPU machine: a
commit's fsync holds one of them while it waits for the disk, and with
only 2 the verify API loses half its capacity during every admin write.
The price: while verifies saturate the CPUs, admin writes are slower.
A GOMAXPROCS environment variable is kept unless --procs is given.

SSH limits (what one client may cost; see README, "SSH limits"):
  --login-grace           a connection with no open session is closed after
                          this long: from connect to the first session, and
                          again after its last session ends
  --max-startups          connections not yet logged in, in total; at the
                          cap the one that has sent least is dropped
  --max-startups-per-source  the same, per source (IPv4 address, IPv6 /64)
  --max-conns-per-operator   logged-in connections of one operator
  --max-sessions-per-operator  TUI sessions of one operator
  --max-channels-per-conn  channels open at once on one connection
  --max-term-size         larger terminal sizes (COLSxROWS) are clamped
--max-startups is lowered to a quarter of the open-file limit if higher.

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
			if err := checkSSHLimits(&lim, termSize); err != nil {
				return err
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
				// The SSH address goes into the lock file once it is
				// bound (server.Serve), with the real port.
				o.FlushInterval = flush
				o.Lean = true // see store/slots.go: the verify path's heap is pointer-free
			}
			return a.withStore(cmd, tune, func(st *store.Store) error {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return server.Serve(ctx, server.Config{
					Store:        st,
					BackupSocket: store.BackupSocketPath(st.Path()),
					SSHAddr:      sshAddr,
					HTTPAddr:     httpAddr,
					HostKeyPath:  hostKey,
					IdleTimeout:  idle,
					SSHLimits:    lim,
					Log:          a.stderr, // the server logs where it listens

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
	fl.DurationVar(&lim.LoginGrace, "login-grace", server.DefaultLoginGrace, "close SSH connections with no open session after this long (from connect, and after the last session)")
	fl.IntVar(&lim.MaxStartups, "max-startups", server.DefaultMaxStartups, "SSH connections not yet logged in, in total")
	fl.IntVar(&lim.MaxStartupsPerSource, "max-startups-per-source", server.DefaultMaxStartupsPerSource, "SSH connections not yet logged in, per source (IPv4 address, IPv6 /64)")
	fl.IntVar(&lim.MaxConnsPerOperator, "max-conns-per-operator", server.DefaultMaxConnsPerOperator, "logged-in SSH connections per operator")
	fl.IntVar(&lim.MaxSessionsPerOperator, "max-sessions-per-operator", server.DefaultMaxSessionsPerOperator, "SSH TUI sessions per operator")
	fl.IntVar(&lim.MaxChannelsPerConn, "max-channels-per-conn", server.DefaultMaxChannelsPerConn, "channels open at once on one SSH connection")
	fl.StringVar(&termSize, "max-term-size", fmt.Sprintf("%dx%d", server.DefaultMaxTermWidth, server.DefaultMaxTermHeight), "largest terminal COLSxROWS an SSH client may claim (larger is clamped)")
	fl.IntVar(&httpMaxConns, "http-max-conns", 0, "most open HTTP connections; at the cap the longest idle is closed (0: 1024, lowered to fit ulimit -n)")
	fl.DurationVar(&httpIdle, "http-idle-timeout", 30*time.Second, "close idle HTTP keep-alive connections after this long")
	fl.BoolVar(&requireScope, "require-scope", false, `answer 400 to a verify without "scope" (default: such a verify only authenticates the key)`)
	return c
}

// checkSSHLimits validates serve's SSH limit flags and parses
// --max-term-size into lim.
func checkSSHLimits(lim *server.SSHLimits, termSize string) error {
	if lim.LoginGrace <= 0 {
		return usageErrorf("--login-grace must be positive")
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"--max-startups", lim.MaxStartups}, {"--max-startups-per-source", lim.MaxStartupsPerSource},
		{"--max-conns-per-operator", lim.MaxConnsPerOperator}, {"--max-sessions-per-operator", lim.MaxSessionsPerOperator},
		{"--max-channels-per-conn", lim.MaxChannelsPerConn},
	} {
		if f.v < 1 {
			return usageErrorf("%s must be at least 1", f.name)
		}
	}
	w, h, ok := strings.Cut(strings.ToLower(termSize), "x")
	cols, err1 := strconv.Atoi(w)
	rows, err2 := strconv.Atoi(h)
	if !ok || err1 != nil || err2 != nil || cols < 20 || rows < 5 || cols > 10000 || rows > 10000 {
		return usageErrorf("--max-term-size must be COLSxROWS, 20x5 to 10000x10000 (got %q)", termSize)
	}
	lim.MaxTermWidth, lim.MaxTermHeight = cols, rows
	return nil
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
catalog, creation dates up to three years back but never before the seeding
operator's account (verify refuses a key older than its creator as
CREATOR_DISABLED, so on a new database every key is recent), expiries (some
never, some already past, some within the 14-day expiring window, most months
to two years away), last use (some never, some more than 90 days ago when the
keys are old enough, most recent) and some keys disabled. Their tokens are not
printed or kept, so seeded keys never verify. The batch is audited as one
event, not one per key. --seed makes the run repeatable.`,
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
	oldest := now.Add(-3 * 365 * day)
	if op, err := st.Operator(a.actor); err == nil && op.CreatedAt.After(oldest) {
		oldest = op.CreatedAt.UTC()
	}
	latest := now.Add(-time.Hour)
	if !latest.After(oldest) {
		latest = now
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
		// Not before the seeding operator's account: verify refuses a
		// key older than its creator (CREATOR_DISABLED), and so does
		// SeedKeys. On a new database the keys are therefore all recent.
		created := between(oldest, latest)
		switch r := rng.IntN(100); {
		case r < 10: // never expires
		case r < 18: // expired already
			exp := between(created.Add(min(time.Hour, now.Sub(created)/2)), now)
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
	fmt.Fprintf(a.stdout, "Seeded %s in %s (%.0f keys/s); the database now holds %s in %s.\n",
		model.Count(n, "key", ""), took.Round(time.Millisecond), float64(n)/took.Seconds(), model.Count(st.KeyCount(), "key", ""), size)
	return nil
}

// ---------------------------------------------------------------------------
// Output helpers

// keyJSON is a key as the CLI prints it: model.Key's snake_case fields,
// lists as [] rather than null, plus the status the table shows:
// "status" stays the stored active/disabled (what enable and disable
// set), "display_status" is what verify answers for the key
// (model.StatusOf), CREATOR_DISABLED included.
type keyJSON struct {
	model.Key
	DisplayStatus model.DisplayStatus `json:"display_status"`
}

type keyWithToken struct {
	keyJSON
	Token string `json:"token"`
}

// statusOf is k's displayed status at now: model.StatusOf with its
// creator's account.
func statusOf(st *store.Store, k *model.Key, now time.Time) model.DisplayStatus {
	var creator *model.Operator
	if op, err := st.Operator(k.CreatedBy); err == nil {
		creator = &op
	}
	return model.StatusOf(k, creator, now)
}

func toKeyJSON(k *model.Key, status model.DisplayStatus) keyJSON {
	c := k.Clone()
	if c.Scopes == nil {
		c.Scopes = []string{}
	}
	if c.Resources == nil {
		c.Resources = []string{}
	}
	return keyJSON{Key: *c, DisplayStatus: status}
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
