package tui

import (
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// TestHeaderWarnsWhenOutOfTouch: on a store kept in etcd, the header says
// so while the node has not heard from the cluster within the store's
// bound, and the warning goes once it has. (The store's side, Stale, is
// tested against real etcd members in store/; here its answer is given.)
func TestHeaderWarnsWhenOutOfTouch(t *testing.T) {
	st, _ := newTestStore(t)
	m := newRoot(newTestOptions(st, "alice"))
	defer m.Close()
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 36})
	if m.watchStale() != nil {
		t.Fatal("a bbolt store started the out-of-touch check")
	}
	since, stale := 17*time.Second, true
	m.c.outOfTouch = func() (time.Duration, bool) { return since, stale }
	if m.watchStale() == nil {
		t.Fatal("no out-of-touch check on an etcd store")
	}
	header := func() string { return strings.SplitN(m.View(), "\n", 2)[0] }
	m.Update(staleTickMsg{})
	if h := header(); !strings.Contains(h, "no word from etcd for 17s") || !strings.Contains(h, "alice") {
		t.Fatalf("header while stale: %q", h)
	}
	stale = false
	m.Update(staleTickMsg{})
	if h := header(); strings.Contains(h, "etcd") {
		t.Fatalf("header once back in touch: %q", h)
	}
}
