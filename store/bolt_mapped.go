package store

import (
	"os"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// The load copies every record it keeps out of bbolt's memory map of the
// file, so once a batch is decoded the mapped pages it was read from are
// of no further use to this process. Left mapped, they count in its RSS
// (RssFile): the whole file after a load, since bolt.Open's free-page
// scan (NoFreelistSync) and the load between them touch every page.
// releasePages hands such pages back to the kernel (see mapped_linux.go
// for why that is safe).

// osPage is the granularity of the kernel's page tables.
var osPage = uintptr(os.Getpagesize())

// fileMapping is the part of bbolt's memory map that a read transaction
// may read: the pages below its high-water mark. bbolt maps at least the
// whole file, and cannot remap while a read transaction is open (it holds
// bbolt's mmap lock), so these addresses stay bbolt's mapping until the
// transaction ends. Only use it inside tx.
type fileMapping struct{ lo, hi uintptr }

func mappingOf(tx *bolt.Tx) fileMapping {
	base := tx.DB().Info().Data
	return fileMapping{lo: base, hi: base + uintptr(tx.Size())}
}

// releaseAll releases every mapped page of the file.
func (m fileMapping) releaseAll() {
	releasePages(m.lo, (m.hi+osPage-1)&^(osPage-1))
}

// pageRun releases the pages under records read through a fileMapping,
// merging adjacent pages into one call. A record that does not lie in the
// mapping (bbolt copies some values, for example an inline bucket on an
// architecture without unaligned loads) is left alone: releasing memory
// that is not the file's would lose it.
type pageRun struct {
	m      fileMapping
	lo, hi uintptr // the pages collected so far, [lo, hi); lo == hi when none
}

// add notes the pages under b, releasing the pages collected so far first
// when b's are not adjacent to them.
func (r *pageRun) add(b []byte) {
	if len(b) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	end := p + uintptr(len(b))
	if p < r.m.lo || end > r.m.hi {
		return
	}
	lo, hi := p&^(osPage-1), (end+osPage-1)&^(osPage-1)
	if r.lo != r.hi && lo <= r.hi && hi >= r.lo {
		r.lo, r.hi = min(r.lo, lo), max(r.hi, hi)
		return
	}
	r.release()
	r.lo, r.hi = lo, hi
}

// release releases the pages collected so far.
func (r *pageRun) release() {
	if r.lo != r.hi {
		releasePages(r.lo, r.hi)
	}
	r.lo, r.hi = 0, 0
}
