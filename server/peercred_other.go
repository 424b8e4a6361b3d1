//go:build !linux

package server

import (
	"errors"
	"net"
)

// backupSupported: without SO_PEERCRED the socket could not tell who is
// asking, so serve offers no online backup on this OS.
const backupSupported = false

func peerUID(*net.UnixConn) (int, error) {
	return -1, errors.New("peer credentials are not supported on this OS")
}
