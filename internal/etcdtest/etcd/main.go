// Command etcd is the real etcd server (v3.7.3, from etcd's own etcdmain),
// built only for keyward's tests. It lives in a nested module so keyward's
// go.mod stays free of etcd's server dependencies; internal/etcdtest.Bin
// and .ci/run build it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
