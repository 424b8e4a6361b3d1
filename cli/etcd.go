package cli

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/keyward/keyward/store"
	"github.com/spf13/pflag"
)

// etcdFlags are the global flags that select an etcd cluster instead of
// the bbolt file, and the master key's path (both backends).
type etcdFlags struct {
	endpoints    string
	prefix       string
	caCert       string
	cert, key    string
	user         string
	passwordFile string
	masterKey    string
	// masterKeyGiven: masterKey came from --master-key or
	// $KEYWARD_MASTER_KEY, not the etcd default.
	masterKeyGiven bool
}

// Bounds on what --etcd may name: more members than any sane cluster,
// and longer than any sane value, is a mistake (or hostile input).
const (
	maxEtcdEndpoints = 16
	maxFlagValue     = 4096
)

// defaultEtcdPrefix is --etcd-prefix's default.
const defaultEtcdPrefix = "/keyward/"

// masterKeyFile is the master key's file name in the configuration
// directory, the default on etcd (no database file to keep it beside).
const masterKeyFile = "master.key"

func (f *etcdFlags) register(pf *pflag.FlagSet) {
	pf.StringVar(&f.endpoints, "etcd", "", "run against an etcd cluster: client URLs, comma-separated (http[s]://host:port; default $KEYWARD_ETCD). Not with --db")
	pf.StringVar(&f.prefix, "etcd-prefix", "", "with --etcd: where keyward's keys live in etcd (default $KEYWARD_ETCD_PREFIX, else "+defaultEtcdPrefix+")")
	pf.StringVar(&f.caCert, "etcd-cacert", "", "with --etcd: CA bundle (PEM) that signs the members' certificates")
	pf.StringVar(&f.cert, "etcd-cert", "", "with --etcd: client certificate (PEM), for clusters that require one (with --etcd-key)")
	pf.StringVar(&f.key, "etcd-key", "", "with --etcd: the client certificate's private key (PEM)")
	pf.StringVar(&f.user, "etcd-user", "", "with --etcd: etcd user, if the cluster has auth enabled (default $KEYWARD_ETCD_USER); the password comes from $KEYWARD_ETCD_PASSWORD or --etcd-password-file")
	pf.StringVar(&f.passwordFile, "etcd-password-file", "", "with --etcd-user: file holding the etcd password (0600, yours; never a flag value, which shows in ps)")
	pf.StringVar(&f.masterKey, "master-key", "", "master key file that seals the shared secret (default $KEYWARD_MASTER_KEY, else <db>.masterkey; with --etcd ~/.config/keyward/"+masterKeyFile+"); created 0600 on first use")
}

// resolveBackend works out, from the flags and the environment, whether
// this run uses the bbolt file or etcd, and fills a.etcdCfg for etcd.
// Flags beat the environment; --db and --etcd together are refused, as
// are $KEYWARD_DB and $KEYWARD_ETCD together without either flag.
func (a *app) resolveBackend(changed func(string) bool) error {
	f := &a.etcdf
	etcdFlag := changed("etcd")
	if etcdFlag && f.endpoints == "" {
		return usageErrorf("--etcd needs at least one URL; got an empty one")
	}
	if etcdFlag && a.dbFromFlag {
		return usageErrorf("--etcd and --db select two different stores; give one or the other")
	}
	endpoints, from := f.endpoints, "--etcd"
	if !etcdFlag && !a.dbFromFlag {
		endpoints, from = a.getenv("KEYWARD_ETCD"), "$KEYWARD_ETCD"
		if endpoints != "" && a.getenv("KEYWARD_DB") != "" {
			return usageErrorf("$KEYWARD_ETCD and $KEYWARD_DB are both set; unset one, or choose with --etcd or --db")
		}
	}
	if err := checkFlagText("--master-key", f.masterKey); err != nil {
		return err
	}
	if f.masterKey == "" {
		f.masterKey = a.getenv("KEYWARD_MASTER_KEY")
		if err := checkFlagText("$KEYWARD_MASTER_KEY", f.masterKey); err != nil {
			return err
		}
	}
	if endpoints == "" {
		// bbolt: the etcd-only flags make no sense.
		for _, name := range []string{"etcd-prefix", "etcd-cacert", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"} {
			if changed(name) {
				return usageErrorf("--%s applies to an etcd cluster; give --etcd too", name)
			}
		}
		return nil
	}
	eps, err := parseEndpoints(from, endpoints)
	if err != nil {
		return err
	}
	cfg := &store.EtcdConfig{Endpoints: eps, CACert: f.caCert, Cert: f.cert, Key: f.key}
	cfg.Prefix, from = f.prefix, "--etcd-prefix"
	if !changed("etcd-prefix") {
		cfg.Prefix, from = a.getenv("KEYWARD_ETCD_PREFIX"), "$KEYWARD_ETCD_PREFIX"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = defaultEtcdPrefix
	}
	if err := checkPrefix(from, cfg.Prefix); err != nil {
		return err
	}
	for _, p := range []struct{ flag, v string }{{"--etcd-cacert", f.caCert}, {"--etcd-cert", f.cert}, {"--etcd-key", f.key}, {"--etcd-password-file", f.passwordFile}} {
		if err := checkFlagText(p.flag, p.v); err != nil {
			return err
		}
	}
	if (f.cert == "") != (f.key == "") {
		return usageErrorf("--etcd-cert and --etcd-key go together: give both or neither")
	}
	for _, p := range []struct{ flag, v string }{{"--etcd-cacert", f.caCert}, {"--etcd-cert", f.cert}, {"--etcd-key", f.key}} {
		if p.v == "" {
			continue
		}
		if fi, err := os.Stat(p.v); err != nil {
			return usageErrorf("%s: %v", p.flag, err)
		} else if !fi.Mode().IsRegular() {
			return usageErrorf("%s: %s is not a file", p.flag, p.v)
		}
	}
	if changed("create") {
		return usageErrorf("--create makes --db's directory; with --etcd there is no database file")
	}
	if err := a.etcdAuth(cfg); err != nil {
		return err
	}
	f.masterKeyGiven = f.masterKey != ""
	if f.masterKey == "" {
		p, err := a.defaultMasterKey()
		if err != nil {
			return err
		}
		// The default's directory (and serve's host key beside it) is
		// made on first use, 0700, as the data directory is for --db. A
		// failure shows when the key is needed.
		_ = os.MkdirAll(filepath.Dir(p), 0o700)
		f.masterKey = p
	}
	a.etcdCfg = cfg
	return nil
}

// etcdAuth fills the user and password: the user from --etcd-user or
// $KEYWARD_ETCD_USER, the password from --etcd-password-file or
// $KEYWARD_ETCD_PASSWORD, never from a flag value.
func (a *app) etcdAuth(cfg *store.EtcdConfig) error {
	f := &a.etcdf
	user, from := f.user, "--etcd-user"
	if user == "" {
		user, from = a.getenv("KEYWARD_ETCD_USER"), "$KEYWARD_ETCD_USER"
	}
	if err := checkFlagText(from, user); err != nil {
		return err
	}
	if len(user) > 256 {
		return usageErrorf("%s is %d bytes; the limit is 256", from, len(user))
	}
	password := ""
	if f.passwordFile != "" {
		data, err := store.ReadSecretFile(f.passwordFile)
		if err != nil {
			return usageErrorf("--etcd-password-file: %v", err)
		}
		password = strings.TrimRight(string(data), "\r\n")
		if password == "" {
			return usageErrorf("--etcd-password-file %s is empty", f.passwordFile)
		}
	} else {
		password = a.getenv("KEYWARD_ETCD_PASSWORD")
	}
	if strings.ContainsFunc(password, isControl) {
		return usageErrorf("the etcd password holds a control character (a line break inside --etcd-password-file?)")
	}
	switch {
	case user == "" && password != "":
		return usageErrorf("an etcd password is set but no user; give --etcd-user or $KEYWARD_ETCD_USER")
	case user != "" && password == "":
		return usageErrorf("etcd user %q has no password; set $KEYWARD_ETCD_PASSWORD or give --etcd-password-file", user)
	}
	cfg.Username, cfg.Password = user, password
	return nil
}

// defaultMasterKey is the master key's path on etcd when neither
// --master-key nor $KEYWARD_MASTER_KEY names one:
// $XDG_CONFIG_HOME/keyward/master.key, else ~/.config/keyward/master.key.
func (a *app) defaultMasterKey() (string, error) {
	dir := a.getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := a.getenv("HOME")
		if home == "" {
			var err error
			if home, err = os.UserHomeDir(); err != nil {
				return "", fmt.Errorf("no --master-key given and no home directory for the default: %w", err)
			}
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "keyward", masterKeyFile), nil
}

// parseEndpoints splits and checks a comma-separated list of client URLs:
// http or https, host:port with a numeric port, nothing else (no user,
// path, query), at most maxEtcdEndpoints. The URLs are returned as
// scheme://host:port.
func parseEndpoints(from, list string) ([]string, error) {
	if err := checkFlagText(from, list); err != nil {
		return nil, err
	}
	var out []string
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			return nil, usageErrorf("%s: an empty URL in %q (a stray comma?)", from, list)
		}
		if len(out) == maxEtcdEndpoints {
			return nil, usageErrorf("%s: more than %d URLs", from, maxEtcdEndpoints)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Opaque != "" {
			return nil, usageErrorf("%s: %q is not a URL; use http://host:port or https://host:port", from, raw)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, usageErrorf("%s: %q: the scheme must be http or https (e.g. https://10.0.0.1:2379)", from, raw)
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, usageErrorf("%s: %q: give only scheme://host:port (credentials go in --etcd-user and $KEYWARD_ETCD_PASSWORD)", from, raw)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" {
			return nil, usageErrorf("%s: %q: needs host:port (etcd's client port is usually 2379)", from, raw)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, usageErrorf("%s: %q: the port must be a number from 1 to 65535", from, raw)
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out, nil
}

// checkPrefix checks an etcd key prefix: it starts and ends with "/" (so
// "/keyward/" never also covers "/keyward-test/"), printable, bounded.
func checkPrefix(from, p string) error {
	if err := checkFlagText(from, p); err != nil {
		return err
	}
	if len(p) > 256 {
		return usageErrorf("%s is %d bytes; the limit is 256", from, len(p))
	}
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || p == "/" {
		return usageErrorf("%s %q must start and end with \"/\" and name something, e.g. %s", from, p, defaultEtcdPrefix)
	}
	return nil
}

// checkFlagText refuses control characters and absurd lengths in a flag
// or environment value, naming where it came from.
func checkFlagText(from, v string) error {
	if len(v) > maxFlagValue {
		return usageErrorf("%s is %d bytes long; the limit is %d", from, len(v), maxFlagValue)
	}
	if strings.ContainsFunc(v, isControl) {
		return usageErrorf("%s holds a control character; refusing %q", from, v)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// source names the store a command works on, for messages: the database
// file, or the etcd cluster and prefix.
func (a *app) source(st *store.Store) string {
	if a.etcdCfg != nil {
		return "etcd " + strings.Join(a.etcdCfg.Endpoints, ",") + " (prefix " + a.etcdCfg.Prefix + ")"
	}
	return st.Path()
}

// masterKeyPath is the master key file this run uses.
func (a *app) masterKeyPath() string {
	if a.etcdf.masterKey != "" {
		return a.etcdf.masterKey
	}
	return store.MasterKeyPath(a.dbPath)
}

// backupSocket is serve's online-backup socket: beside the database file;
// none on etcd, where keyward backup reads the cluster itself.
func (a *app) backupSocket() string {
	if a.etcdCfg != nil {
		return ""
	}
	return store.BackupSocketPath(a.dbPath)
}
