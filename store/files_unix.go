//go:build unix

package store

import (
	"io/fs"
	"os"
	"syscall"
)

// oNoFollow is added to every open of a file beside the database: no
// symbolic link at the last component, no blocking on a FIFO.
const oNoFollow = syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_CLOEXEC

// ownerOf returns the file's owner and link count.
func ownerOf(fi fs.FileInfo) (uid int, nlink uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), uint64(st.Nlink), true
}

func euid() int { return os.Geteuid() }
