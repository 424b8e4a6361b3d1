//go:build linux

package store

import "syscall"

// releasePages drops this process's mappings of the page-aligned range
// [lo, hi) of bbolt's memory map with madvise(MADV_DONTNEED).
//
// That loses no data and leaves the range readable. bbolt (v1.5.0,
// bolt_unix.go) maps the file with PROT_READ and MAP_SHARED and writes
// through the file descriptor, never through the map, so no mapped page
// is ever dirty. For a shared file mapping, madvise(2) says a later
// access "will result in ... repopulating the memory contents from the
// up-to-date contents of the underlying mapped file": the call only
// removes page-table entries; the pages stay in the page cache, and
// reading them again is a minor fault (a major one only if the kernel has
// evicted them meanwhile). The zero-fill-on-demand case is for anonymous
// private mappings, which this is not (and, being read-only, even a
// private file mapping would have no copied-on-write pages to lose).
//
// Callers must hold a read transaction, so that bbolt cannot unmap or
// remap the range meanwhile. An error (EINVAL for locked pages, with
// bbolt's Mlock option) leaves the pages mapped, which is harmless.
func releasePages(lo, hi uintptr) {
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, lo, hi-lo, syscall.MADV_DONTNEED)
}
