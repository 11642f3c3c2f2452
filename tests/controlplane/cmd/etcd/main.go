// Command etcd is the upstream etcd server (same entry point as go.etcd.io/etcd/v3's main.go),
// built from the Go module proxy for accessgate's end-to-end tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
