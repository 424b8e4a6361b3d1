package server

import (
	"bufio"
	"fmt"
	"io"
	stdlog "log"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward/model"
)

// logSink writes one line per event to Config.Log without making request
// handlers wait on the writer: handlers format a line into a pooled buffer
// and hand it to a single writer goroutine over a buffered channel. When
// the writer falls behind (a slow terminal, a full pipe) lines are dropped
// and counted rather than slowing verification down; the count is logged.
//
// The writer does not wake for every line. The first line after a write
// wakes it; it then collects for logBatchWait (or until the queue is half
// full) and writes the batch in one call. Waking it per line cost about
// 1.5 µs of CPU per verification under load, a fifth of the handler's
// own work (BENCHMARKS.md, "HTTP at 1M"). A line reaches the log at most
// logBatchWait late; Close writes out everything queued.
//
// Every value that comes from outside (user names, paths, errors) goes
// through appendSafe, so a line never carries a raw control character.
type logSink struct {
	w       io.Writer
	ch      chan *[]byte
	kick    chan struct{} // the first line after a write: start a batch
	full    chan struct{} // the queue is half full: write now
	armed   atomic.Bool   // a batch is being collected
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Int64
	once    sync.Once
	json    bool // write each line as a JSON object (logjson.go)
}

const (
	logQueue     = 8192
	logBatchWait = 10 * time.Millisecond
)

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func newLogSink(w io.Writer) *logSink { return newLogSinkFormat(w, LogText) }

// newLogSinkFormat is newLogSink writing format (LogText or LogJSON).
// Handlers format text lines either way; the writer goroutine turns
// each into JSON (logjson.go), off the request path.
func newLogSinkFormat(w io.Writer, format string) *logSink {
	l := &logSink{w: w, ch: make(chan *[]byte, logQueue), kick: make(chan struct{}, 1), full: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), json: format == LogJSON}
	if w == nil {
		l.w = io.Discard
	}
	go l.run()
	return l
}

// line returns an empty pooled buffer that starts with the timestamp.
func (l *logSink) line() *[]byte {
	bp := linePool.Get().(*[]byte)
	*bp = appendStamp((*bp)[:0], time.Now())
	return bp
}

// stamp caches the formatted time for the current millisecond: at high
// request rates formatting it for every line was a tenth of the handler.
type stamp struct {
	ms   int64
	text []byte
}

var lastStamp atomic.Pointer[stamp]

func appendStamp(b []byte, now time.Time) []byte {
	ms := now.UnixMilli()
	if st := lastStamp.Load(); st != nil && st.ms == ms {
		return append(b, st.text...)
	}
	st := &stamp{ms: ms, text: now.UTC().AppendFormat(make([]byte, 0, 25), "2006-01-02T15:04:05.000Z ")}
	lastStamp.Store(st)
	return append(b, st.text...)
}

// send queues a finished line (a newline is added). It never blocks.
func (l *logSink) send(bp *[]byte) {
	*bp = append(*bp, '\n')
	select {
	case l.ch <- bp:
	default:
		l.dropped.Add(1)
		putLine(bp)
	}
	if !l.armed.Load() && l.armed.CompareAndSwap(false, true) {
		wake(l.kick)
	} else if len(l.ch) >= logQueue/2 {
		wake(l.full)
	}
}

// wake wakes the writer without blocking (the channels hold one signal).
func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Printf formats a free-form line. Arguments are sanitised one by one
// (strings are quoted when they hold anything but plain characters), then
// the whole line is sanitised again.
func (l *logSink) Printf(format string, args ...any) {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = safeField(v)
		case []string:
			c := make([]string, len(v))
			for j, s := range v {
				c[j] = safeField(s)
			}
			args[i] = c
		case error:
			args[i] = safeField(v.Error())
		case fmt.Stringer:
			args[i] = safeField(v.String())
		}
	}
	bp := l.line()
	*bp = appendSafe(*bp, fmt.Sprintf(format, args...))
	for n := len(*bp); n > 0 && (*bp)[n-1] == ' '; n-- {
		*bp = (*bp)[:n-1]
	}
	l.send(bp)
}

func putLine(bp *[]byte) {
	if cap(*bp) <= 4096 {
		linePool.Put(bp)
	}
}

func (l *logSink) run() {
	defer close(l.done)
	bw := bufio.NewWriterSize(l.w, 32<<10)
	emit := func(line []byte) { _, _ = bw.Write(line) }
	if l.json {
		emit = newJSONLines(bw).write
	}
	write := func(bp *[]byte) {
		emit(maskTokenText(*bp))
		putLine(bp)
	}
	reportDrops := func() {
		if n := l.dropped.Swap(0); n > 0 {
			emit(fmt.Appendf(appendStamp(nil, time.Now()), "log: %d lines dropped (writer too slow)\n", n))
		}
	}
	drain := func() {
		for {
			select {
			case bp := <-l.ch:
				write(bp)
			default:
				reportDrops()
				_ = bw.Flush()
				return
			}
		}
	}
	wait := time.NewTimer(logBatchWait)
	wait.Stop()
	for {
		select {
		case <-l.kick:
		case <-l.full:
		case <-l.stop:
			drain()
			return
		}
		// Collect a batch, unless the queue is filling up.
		wait.Reset(logBatchWait)
		select {
		case <-wait.C:
		case <-l.full:
			wait.Stop()
		case <-l.stop:
			wait.Stop()
			drain()
			return
		}
		// Disarm before draining: a line sent from here on arms and
		// kicks again, so it is never left waiting for a later line.
		l.armed.Store(false)
		drain()
	}
}

// Close writes out queued lines and stops the writer. Lines sent after
// Close are dropped silently (the channel is never closed, so a late
// sender cannot panic).
func (l *logSink) Close() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// maskTokenText is the sink's backstop against a token in a log line,
// whatever put it there (a key pasted into a URL path, an error that
// quotes its input): token-shaped text (model.MaskTokens) becomes its
// hint. Lines are scanned for an underscore followed by 40 token
// characters first, so a clean line costs one pass and no allocation.
func maskTokenText(line []byte) []byte {
	run := -1 // token characters since the last underscore; -1: none yet
	for _, c := range line {
		switch {
		case c == '_':
			run = 0
		case run >= 0 && (c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'):
			if run++; run >= 40 {
				return []byte(model.MaskTokens(string(line)))
			}
		default:
			run = -1
		}
	}
	return line
}

// safeField returns s unchanged when it is plain (printable, no spaces,
// no quotes), and otherwise a Go-quoted form of its sanitised text, so a
// field cannot pretend to be two fields.
func safeField(s string) string {
	if s == "" {
		return `""`
	}
	if len(s) > 256 {
		s = truncUTF8(s, 256) + "…"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '"' || c == '\\' || c == '=' || c >= 0x7f {
			return strconv.Quote(s) // escapes controls, bidi and invalid bytes
		}
	}
	return s
}

// appendSafe appends s with every control, escape and bidi character made
// harmless (model.Sanitize), without allocating when s is already clean.
func appendSafe(b []byte, s string) []byte {
	return append(b, model.Sanitize(s)...)
}

func truncUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// newStdLogger adapts the sink for libraries that want a *log.Logger
// (net/http's ErrorLog): each write becomes one sanitised line.
func newStdLogger(l *logSink, prefix string) *stdlog.Logger {
	return stdlog.New(sinkWriter{l}, prefix, 0)
}

type sinkWriter struct{ l *logSink }

func (s sinkWriter) Write(p []byte) (int, error) {
	bp := s.l.line()
	*bp = appendSafe(*bp, strings.TrimRight(string(p), "\n"))
	s.l.send(bp)
	return len(p), nil
}
