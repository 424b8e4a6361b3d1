//go:build !linux

package server

import "net"

// unreadBytes is not measured here: progress counts bytes read only.
func unreadBytes(net.Conn) int64 { return 0 }
