package etcdtest

import "syscall"

// procAttr puts a member in its own process group (a ^C to the test does
// not reach it twice) and has the kernel kill it if the test binary dies
// without running its cleanups (a panic, a -timeout).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
