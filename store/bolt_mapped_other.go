//go:build !linux

package store

// releasePages keeps the pages mapped: madvise(MADV_DONTNEED) is only
// known to keep a shared file mapping's contents on Linux (see
// mapped_linux.go).
func releasePages(lo, hi uintptr) {}
