//go:build linux

package server

import (
	"net"
	"syscall"
	"unsafe"
)

// unreadBytes is how many bytes the client has sent that the server has
// not read yet (TIOCINQ): progress a handshake goroutine that has not run
// yet cannot count.
func unreadBytes(c net.Conn) int64 {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	var n int32
	_ = rc.Control(func(fd uintptr) {
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); e != 0 {
			n = 0
		}
	})
	return int64(max(n, 0))
}
