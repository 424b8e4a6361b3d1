package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/keyward/keyward/server"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

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
the master key (<db>.masterkey, or --master-key), which is not part of the
backup: keep a copy of that file separately and safely if you need the
secret back.

With --etcd, the copy is read from the cluster at one revision (consistent,
as above) and written as a bbolt file, which keyward --db FILE opens like
any other database (pass --master-key with the cluster's master key file,
or copy it to FILE.masterkey, to reveal the shared secret). This is also
the way out of etcd.`,
		Example: `  keyward backup /var/backups/keyward-$(date +%F).db
  keyward --db /srv/keyward/keyward.db backup /srv/backups/kw.db   # also while serve runs
  keyward --etcd https://10.0.0.1:2379 backup /srv/backups/kw.db   # a cluster, as a bbolt file`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dest := args[0]
			if !force {
				if _, err := os.Lstat(dest); err == nil {
					return usageErrorf("%s already exists; pass --force to overwrite it", dest)
				}
			}
			own := []string{a.etcdf.masterKey}
			if a.etcdCfg == nil {
				own = append(own, a.dbPath, store.MasterKeyPath(a.dbPath), a.dbPath+".lock", store.BackupSocketPath(a.dbPath))
			}
			for _, own := range own {
				if own == "" {
					continue
				}
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
					a.source(st), dest, n, st.MasterKeyPath())
				if a.etcdCfg != nil {
					fmt.Fprintf(a.stdout, "It is a bbolt file: open it with keyward --db %s --master-key %s.\n", dest, st.MasterKeyPath())
				}
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
		a.dbPath, dest, n, a.masterKeyPath())
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
