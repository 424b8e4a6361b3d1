package store

// TEMPORARY until the etcd backend lands (delete at merge).
type etcdBackend struct {
	Backend
	fresh bool
}

func openEtcdBackend(cfg EtcdConfig, opts *Options) (*etcdBackend, error) {
	panic("no etcd backend yet")
}
