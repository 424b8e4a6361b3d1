package server

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records what the log writer writes and how many calls it
// takes; block (when set) holds every write until closed.
type countingWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	calls int
	block chan struct{}
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.block != nil {
		<-c.block
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return c.buf.Write(p)
}

func (c *countingWriter) snapshot() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.calls
}

func sendLine(l *logSink, text string) {
	bp := l.line()
	*bp = append(*bp, text...)
	l.send(bp)
}

// TestLogSinkBatches: lines sent at a request-like pace reach the writer
// in order, in far fewer writes than lines (a writer woken per line
// writes each on its own), and a single line still arrives promptly.
func TestLogSinkBatches(t *testing.T) {
	w := &countingWriter{}
	l := newLogSink(w)
	const n = 600
	for i := range n {
		sendLine(l, fmt.Sprintf("line %d", i))
		time.Sleep(100 * time.Microsecond)
	}
	// One line after the burst: it must not wait for Close.
	time.Sleep(50 * time.Millisecond)
	sendLine(l, "straggler")
	deadline := time.Now().Add(2 * time.Second)
	for {
		if out, _ := w.snapshot(); strings.Contains(out, "straggler") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a single line was not written within 2 s")
		}
		time.Sleep(time.Millisecond)
	}
	l.Close()
	out, calls := w.snapshot()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n+1 {
		t.Fatalf("%d lines written, want %d", len(lines), n+1)
	}
	for i, ln := range lines[:n] {
		if !strings.HasSuffix(ln, fmt.Sprintf(" line %d", i)) {
			t.Fatalf("line %d is %q: out of order", i, ln)
		}
	}
	// 600 lines over at least 60 ms (sleeps are often coarser: 0.8 s
	// here): a write per 10 ms batch is 6 to 80 writes, a write per line
	// (the writer woken per line) 600.
	if calls > n/4 {
		t.Fatalf("%d lines took %d writes; want them batched (at most %d)", n+1, calls, n/4)
	}
	t.Logf("%d lines in %d writes", n+1, calls)
}

// TestLogSinkDropsWhenStuck: with the writer stuck, lines beyond the queue
// are dropped, not waited for, and the drop is reported once it moves.
func TestLogSinkDropsWhenStuck(t *testing.T) {
	w := &countingWriter{block: make(chan struct{})}
	l := newLogSink(w)
	start := time.Now()
	// The first batch blocks the writer in Write; the rest fill the queue.
	for i := range 3 * logQueue {
		sendLine(l, fmt.Sprintf("line %d", i))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("sending to a stuck writer took %s: senders must not wait", d)
	}
	close(w.block)
	l.Close()
	out, _ := w.snapshot()
	if !strings.Contains(out, "lines dropped (writer too slow)") {
		t.Fatal("dropped lines were not reported")
	}
	if got := strings.Count(out, "\n"); got < logQueue/2 || got > 3*logQueue {
		t.Fatalf("%d lines written of %d sent to a stuck writer", got, 3*logQueue)
	}
}
