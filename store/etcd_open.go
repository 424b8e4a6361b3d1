package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// EtcdConfig says how to reach an etcd cluster (the --etcd flags).
type EtcdConfig struct {
	// Endpoints are the client URLs of the members (http://host:port or
	// https://host:port).
	Endpoints []string
	// Prefix starts every key keyward writes (default "/keyward/"), so
	// several keyward installations can share a cluster.
	Prefix string
	// Client TLS: a CA bundle to trust, and a client certificate and key
	// for clusters that require them. Empty: none.
	CACert, Cert, Key string
	// Username and Password, for a cluster with auth enabled.
	Username, Password string
	// DialTimeout bounds the first connection (default 5s).
	DialTimeout time.Duration
}

// DefaultMaxStaleness is how long a node on etcd may go without word from
// the cluster before it stops answering verifications (Stale).
const DefaultMaxStaleness = 15 * time.Second

// ErrStale is returned by Stale when this node has not heard from etcd
// within MaxStaleness: its memory may miss a disable or a delete, so it
// must not answer verifications (fail closed).
var ErrStale = errors.New("not in touch with the etcd cluster")

// OpenEtcd opens the keyward store kept in an etcd cluster: it lists
// everything into memory and follows the cluster's changes with a watch.
// A new (empty) prefix is bootstrapped as Open does a new file.
func OpenEtcd(cfg EtcdConfig, opts Options) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints given")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultEtcdPrefix
	}
	opts.fill()
	be, err := openEtcdBackend(cfg, &opts)
	if err != nil {
		return nil, err
	}
	return start(be, EtcdLocation(cfg), false, be.fresh, opts)
}

// DefaultEtcdPrefix starts keyward's keys in etcd unless told otherwise.
const DefaultEtcdPrefix = "/keyward/"

// EtcdLocation names a store on etcd in messages (Store.Path): its
// endpoints and prefix.
func EtcdLocation(cfg EtcdConfig) string {
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	return "etcd " + strings.Join(cfg.Endpoints, ",") + " " + prefix
}

// Stale returns nil while this store's memory is known current: always
// for a bbolt file; on etcd while the cluster answered within
// Options.MaxStaleness. Otherwise an error wrapping ErrStale that says
// for how long nothing was heard.
func (s *Store) Stale() error {
	if !s.shared {
		return nil
	}
	if since := s.SinceHeard(); since > s.opts.MaxStaleness {
		return fmt.Errorf("%w: no word from etcd for %s (the bound is %s)", ErrStale, since.Round(time.Second), s.opts.MaxStaleness)
	}
	return nil
}

// SinceHeard is how long ago the backend last spoke to this store (0 on
// a bbolt file): an event or a progress mark of the watch.
func (s *Store) SinceHeard() time.Duration {
	if !s.shared {
		return 0
	}
	return time.Since(time.Unix(0, s.heard.Load()))
}

// Backend names the store's backend: "bbolt" or "etcd".
func (s *Store) Backend() string {
	if s.shared {
		return "etcd"
	}
	return "bbolt"
}
