package store

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk header, read before bolt.Open so that a truncated file is
// refused with a message instead of crashing the process: bbolt maps the
// file and, at open, walks every page the meta page names (NoFreelistSync),
// so a page past the end of the file is a SIGBUS, not an error.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltPageHeader = 16 // id u64, flags u16, count u16, overflow u32
	boltMetaSize   = 64 // up to and including the checksum
	boltMetaSumAt  = 56 // bytes covered by the checksum
)

type boltMeta struct {
	pageSize uint32
	pgid     uint64 // high-water mark: pages 0..pgid-1 must exist
	txid     uint64
}

// readBoltMeta decodes the meta page at off. ok is false when the page is
// not a valid bbolt meta page (wrong magic, version or checksum).
func readBoltMeta(f *os.File, off int64) (m boltMeta, ok bool) {
	buf := make([]byte, boltPageHeader+boltMetaSize)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return m, false
	}
	b := buf[boltPageHeader:]
	le := binary.NativeEndian // bbolt writes its structs in native byte order
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion {
		return m, false
	}
	h := fnv.New64a()
	_, _ = h.Write(b[:boltMetaSumAt])
	if h.Sum64() != le.Uint64(b[boltMetaSumAt:]) {
		return m, false
	}
	return boltMeta{pageSize: le.Uint32(b[8:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, true
}

// checkLength refuses a bbolt file shorter than its own meta page says it
// is. Files that are not bbolt at all are left to bolt.Open, which refuses
// them with ErrInvalid.
func checkLength(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bolt.Open reports it
	}
	defer f.Close()
	m0, ok0 := readBoltMeta(f, 0)
	second := int64(os.Getpagesize())
	if ok0 && m0.pageSize > 0 {
		second = int64(m0.pageSize)
	}
	m1, ok1 := readBoltMeta(f, second)
	m, ok := m0, ok0
	if ok1 && (!ok0 || m1.txid > m0.txid) {
		m, ok = m1, true
	}
	if !ok || m.pageSize == 0 {
		return nil
	}
	if need := int64(m.pgid) * int64(m.pageSize); need > size || need < 0 {
		return fmt.Errorf("%s: %w: it is %d bytes but its header says %d (truncated, or an incomplete copy); refusing to open it; restore a backup (keyward backup FILE)",
			path, ErrDamaged, size, need)
	}
	return nil
}
