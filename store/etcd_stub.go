package store

import "errors"

// TEMPORARY until the etcd backend lands (delete at merge).
type etcdBackend struct {
	Backend
	fresh bool
}

func openEtcdBackend(cfg EtcdConfig, opts *Options) (*etcdBackend, error) {
	return nil, errors.New("the etcd backend is not built yet")
}
