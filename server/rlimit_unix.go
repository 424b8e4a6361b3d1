//go:build unix

package server

import "syscall"

// raiseOpenFiles raises the soft RLIMIT_NOFILE to the hard limit and
// returns the limit in force afterwards and the one before (0 when
// unknown). Go's runtime already does this at start since Go 1.19 on most
// systems; doing it here too makes the value serve works with explicit,
// logged, and the base of the HTTP connection budget.
func raiseOpenFiles() (now, before uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, err
	}
	before = uint64(lim.Cur)
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) // may fail (macOS caps it); the old value stands
	}
	if e := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); e != nil {
		return before, before, e
	}
	return uint64(lim.Cur), before, err
}
