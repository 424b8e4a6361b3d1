//go:build linux

package store

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// rssFileKiB returns this process's RssFile from /proc/self/status.
func rssFileKiB(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			var kib int
			if _, err := fmt.Sscan(rest, &kib); err != nil {
				t.Fatal(err)
			}
			return kib
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleasePages: releasing the mapped pages of a read transaction
// lowers RssFile, and the records read the same afterwards (the pages
// come back from the page cache, not zero-filled). Memory outside the
// mapping is never released.
func TestReleasePages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	s, err := Open(path, Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 4000 // about 8 MiB of 2 KiB records
	err = s.boltDB().Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bAudit)
		for i := range n {
			if err := b.Put(fmt.Appendf(nil, "r%06d", i), bytes.Repeat([]byte{byte(i)}, 2048)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Heap memory a wrong release would zero: a madvise on it rounds to
	// whole pages, so it spans several.
	heap := bytes.Repeat([]byte{0xAB}, 64<<10)
	err = s.boltDB().View(func(tx *bolt.Tx) error {
		m := mappingOf(tx)
		read := func() (sum int) {
			c := tx.Bucket(bAudit).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				for _, x := range v {
					sum += int(x)
				}
			}
			return sum
		}
		want := read()
		before := rssFileKiB(t)
		m.releaseAll()
		after := rssFileKiB(t)
		if before-after < 4<<10 {
			t.Errorf("RssFile %d KiB before releasing the mapping, %d after: want at least 4 MiB less", before, after)
		}
		if got := read(); got != want {
			t.Errorf("records after releaseAll: checksum %d, want %d", got, want)
		}
		pages := pageRun{m: m}
		c := tx.Bucket(bAudit).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			pages.add(k)
			pages.add(v)
		}
		pages.add(heap[100:])
		pages.add(heap[:10])
		pages.release()
		if got := read(); got != want {
			t.Errorf("records after pageRun.release: checksum %d, want %d", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(heap, []byte{0xAB}) != len(heap) {
		t.Fatal("pageRun released heap memory outside the mapping")
	}
}
