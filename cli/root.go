// Package cli is keyward's command line: the cobra commands, one file per
// noun (keys, verify, secret, operators, audit, catalog, backup, serve,
// dev), over one bbolt file. It is wiring only: flags, opening the store,
// output formatting, and handing over to the tui and server packages.
// Run is the whole entry point; main.go only calls it.
package cli

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/charmbracelet/x/term"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/tui"
	"github.com/spf13/cobra"
)

// demoCatalog is loaded into every new database. (testdata/catalog.json at
// the top of the repository, which other packages' tests read, links here.)
//
//go:embed demo_catalog.json
var demoCatalog []byte

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed or verification refused the key
	exitUsage   = 2 // the command line or an input value was wrong; nothing was written
	exitStale   = 3 // verify on etcd: this process is not in touch with the cluster, so no answer
)

// exitError carries an exit code. An empty message means the command has
// already said everything (verify's refusals).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// app holds the global flags and the process's streams.
type app struct {
	dbPath string
	// dbFromFlag: the path came from --db (not $KEYWARD_DB or the default).
	dbFromFlag bool
	create     bool // --create: make --db's missing directory
	actor      string
	// etcdf are the --etcd flags; etcdCfg is set when they (or the
	// environment) select an etcd cluster instead of the bbolt file.
	etcdf    etcdFlags
	etcdCfg  *store.EtcdConfig
	warnMu   sync.Mutex
	warnHeld *[]string // see holdWarnings
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
	// getenv reads the environment (os.Getenv; a map in in-process tests,
	// which run in parallel and so cannot each set the process's own).
	getenv func(string) string
}

// Run runs keyward with args (without the program name) and the given
// streams, and returns the exit code: 0 success, 1 failure (or a refused
// key for verify), 2 usage error or invalid input.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(args, stdin, stdout, stderr, os.Getenv)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
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

// open opens the store for cmd: the etcd cluster when --etcd (or
// $KEYWARD_ETCD) selects one, else the bbolt file. Every command opens
// through here. The lock file (bbolt only) names the command path
// ("keyward keys list"), never argument values.
func (a *app) open(cmd *cobra.Command, tune func(*store.Options)) (*store.Store, error) {
	opts := store.Options{
		DefaultCatalog: demoCatalog,
		Lock:           store.LockInfo{Command: cmd.CommandPath()},
		// Only the default data directory is created on first run; a
		// --db in a missing directory is most likely a typo.
		NoCreateDir: a.dbFromFlag && !a.create,
		Warn:        a.warn,
		MasterKey:   a.etcdf.masterKey,
	}
	if tune != nil {
		tune(&opts)
	}
	if a.etcdCfg != nil {
		st, err := store.OpenEtcd(*a.etcdCfg, opts)
		if err != nil {
			return nil, fmt.Errorf("etcd %s (prefix %s): %w", strings.Join(a.etcdCfg.Endpoints, ","), a.etcdCfg.Prefix, err)
		}
		return st, nil
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
	if a.etcdCfg != nil { // no file to peek at
		return a.withStore(cmd, nil, func(st *store.Store) error {
			return tui.Run(tui.Options{Store: st, Actor: a.actor})
		})
	}
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

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "keyward",
		Short: "Manage API keys from the terminal",
		Long: `keyward manages API keys: a keyboard-driven TUI, a scripting CLI and a
server (SSH TUI and an HTTP verification API), all over one bbolt file or,
with --etcd, an etcd cluster that several keyward serve nodes share.

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

--etcd URL[,URL...] (or $KEYWARD_ETCD) runs every command, the TUI and
serve against an etcd cluster instead (not with --db). Every node needs
the same master key file (--master-key, default
~/.config/keyward/master.key on etcd). See README, "Running a cluster".

Exit codes: 0 success, 1 failure (or a refused key for verify),
2 usage error or invalid input (nothing was written), 3 verify on etcd
could not answer (not in touch with the cluster).`,
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
			changed := func(name string) bool {
				f := cmd.Flags().Lookup(name)
				return f != nil && f.Changed
			}
			if err := a.resolveBackend(changed); err != nil {
				return err
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
	a.etcdf.register(pf)

	root.AddCommand(a.keysCmd(), a.verifyCmd(), a.secretCmd(), a.operatorsCmd(),
		a.auditCmd(), a.catalogCmd(), a.backupCmd(), a.migrateCmd(), a.serveCmd(), a.devCmd())
	return root
}

func (a *app) resolveGlobals() error {
	if a.dbPath == "" && a.etcdCfg == nil {
		a.dbPath = a.getenv("KEYWARD_DB") // as store.DefaultPath would, through a.getenv
	}
	if a.dbPath == "" && a.etcdCfg == nil {
		p, err := store.DefaultPath()
		if err != nil {
			return err
		}
		a.dbPath = p
	}
	if a.actor == "" {
		a.actor = a.getenv("KEYWARD_OPERATOR")
	}
	if a.actor == "" {
		a.actor = store.LocalOperatorName()
	}
	return nil
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
