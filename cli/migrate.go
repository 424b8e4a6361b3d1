package cli

import (
	"fmt"
	"strings"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

func (a *app) migrateCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "migrate FROM-DB",
		Short: "Move a bbolt database into an etcd cluster (with --etcd)",
		Long: `Copy everything in the bbolt database FROM-DB into the etcd cluster that
--etcd names: keys (with their hashes and last use), operators, the catalog,
the sealed shared secret and the audit log, from one consistent snapshot
of the file. The etcd prefix (--etcd-prefix) must be empty: a move never
mixes two installations. FROM-DB is opened like any database, so one held
by a running keyward serve or TUI is refused as in use: stop it first. It
is left as it was; keep it until the cluster is serving.

The copy is written in batches (etcd limits one transaction to 128
operations), so it is not atomic: if it fails halfway, empty the prefix
(etcdctl del --prefix /keyward/) and run it again.

The master key is not copied into etcd (the secret stays sealed with it):
copy FROM-DB.masterkey (or the file --master-key names) to every node,
mode 0600, and pass it to every keyward as --master-key.

The way back out is keyward --etcd ... backup FILE, which writes a bbolt
file that keyward --db FILE opens.`,
		Example: `  keyward --etcd https://10.0.0.1:2379,https://10.0.0.2:2379 migrate /srv/keyward/keyward.db
  keyward --etcd http://127.0.0.1:2379 --etcd-prefix /kw-staging/ migrate old.db --json`,
		Args: exactArgs("FROM-DB"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.etcdCfg == nil {
				return usageErrorf("migrate moves a database into etcd: give --etcd URL[,URL...] (or $KEYWARD_ETCD)")
			}
			src := args[0]
			if err := checkFlagText("FROM-DB", src); err != nil {
				return err
			}
			opts := store.Options{
				Lock: store.LockInfo{Command: cmd.CommandPath()},
				Warn: a.warn,
				// Only a master key named explicitly; the default on
				// etcd (~/.config/...) is not FROM-DB's.
				MasterKey: a.explicitMasterKey(),
			}
			stats, err := store.Migrate(cmd.Context(), src, *a.etcdCfg, opts)
			if err != nil {
				return err
			}
			mk, mkExists := store.MigrateMasterKey(src, opts)
			if asJSON {
				return writeJSON(a.stdout, struct {
					store.MigrateStats
					MasterKey string `json:"master_key"`
				}{stats, mk})
			}
			fmt.Fprintf(a.stdout, "Moved %s (%s with a last use), %s, %s and %s from %s into etcd %s (prefix %s), at the file's revision %d.\n",
				model.Count(stats.Keys, "key", ""), model.Count(stats.LastUsed, "key", ""), model.Count(stats.Operators, "operator", ""),
				model.Count(stats.Meta, "metadata record", ""), model.Count(stats.Audit, "audit event", ""),
				src, strings.Join(a.etcdCfg.Endpoints, ","), a.etcdCfg.Prefix, stats.Rev)
			if mkExists {
				fmt.Fprintf(a.stdout, "Now copy the master key %s to every node (mode 0600) and pass it as --master-key (or $KEYWARD_MASTER_KEY); without it a node cannot reveal or rotate the shared secret.\n", mk)
			} else {
				fmt.Fprintf(a.stdout, "There is no master key at %s (no shared secret was generated yet): the first node to need one creates it at its --master-key; copy that file to every other node.\n", mk)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the counts as JSON")
	return c
}

// explicitMasterKey is --master-key or $KEYWARD_MASTER_KEY, never the
// etcd default path.
func (a *app) explicitMasterKey() string {
	if a.etcdf.masterKeyGiven {
		return a.etcdf.masterKey
	}
	return ""
}
