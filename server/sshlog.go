package server

import (
	"sync"
	"time"

	"github.com/keyward/keyward/model"
)

// sshLogger feeds wish's logging middleware into the sink; every argument
// (user names, commands, terminal names) is sanitised.
type sshLogger struct{ l *logSink }

func (s sshLogger) Printf(format string, args ...any) {
	for i, a := range args {
		if words, ok := a.([]string); ok { // the session's command: a token may be in it
			args[i] = model.MaskTokenWords(words)
		}
	}
	s.l.Printf("ssh "+format, args...)
}

// foldLog writes at most logFoldBurst lines of one kind per logFoldEvery;
// the lines folded in are counted on the next line of that kind (or at
// flush), so a flood costs a few lines and nothing goes unreported.
// Kinds must come from a bounded set (reasons, operator names), never
// from raw client input.
type foldLog struct {
	l      *logSink
	prefix string // of the flush line: "ssh", "http tls"
	every  time.Duration
	burst  int
	mu     sync.Mutex
	kinds  map[string]*foldState
}

type foldState struct {
	since  time.Time // the current window's start
	lines  int       // written in this window
	folded int       // not written since the last line of this kind
}

func newFoldLog(l *logSink) *foldLog {
	return &foldLog{l: l, prefix: "ssh", every: logFoldEvery, burst: logFoldBurst, kinds: map[string]*foldState{}}
}

func (f *foldLog) Printf(kind, format string, args ...any) {
	now := time.Now()
	f.mu.Lock()
	st := f.kinds[kind]
	if st == nil {
		st = &foldState{since: now}
		f.kinds[kind] = st
	}
	if now.Sub(st.since) >= f.every {
		st.since, st.lines = now, 0
	}
	if st.lines >= f.burst {
		st.folded++
		f.mu.Unlock()
		return
	}
	st.lines++
	n := st.folded
	st.folded = 0
	f.mu.Unlock()
	if n > 0 {
		format += " (+%d similar not logged)"
		args = append(args, n)
	}
	f.l.Printf(format, args...)
}

// flush reports the counts still folded.
func (f *foldLog) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for kind, st := range f.kinds {
		if st.folded > 0 {
			f.l.Printf(f.prefix+" %d more log lines of kind %s folded", st.folded, kind)
			st.folded = 0
		}
	}
}
