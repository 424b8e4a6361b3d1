package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward/model"
)

// Log formats (Config.LogFormat, serve --log-format).
const (
	LogText = "text" // one line per event: "TIME message key=value ..."
	LogJSON = "json" // one JSON object per event (log/slog's JSONHandler)
)

// CheckLogFormat refuses a log format serve does not write.
func CheckLogFormat(f string) error {
	if f != "" && f != LogText && f != LogJSON {
		return fmt.Errorf("log format %q: want %q or %q", f, LogText, LogJSON)
	}
	return nil
}

// jsonLines turns the sink's text lines into JSON objects, one per line:
//
//	{"time":"…","level":"INFO","msg":"http verify status=200 code=VALID key=… from=…","status":"200","code":"VALID",…}
//
// msg is the text line as it would be written (already sanitised, no
// secrets: every line is built by the same code in either format), and
// each key=value pair in it is also an attribute of its own (values as
// strings, a quoted value unquoted and sanitised again, so a decoder
// never gets a control character back). Level is WARN for lines that
// start "warning:", ERROR for "error:" and "server error", INFO
// otherwise. The
// conversion runs in the sink's writer goroutine, never in a handler.
type jsonLines struct {
	h     slog.Handler
	attrs []slog.Attr
	stamp string    // the last stamp parsed (lines share a millisecond)
	at    time.Time // and its time
}

func newJSONLines(w io.Writer) *jsonLines {
	return &jsonLines{h: slog.NewJSONHandler(w, nil), attrs: make([]slog.Attr, 0, maxLogAttrs)}
}

// maxLogAttrs bounds the attributes taken from one line.
const maxLogAttrs = 32

// stampLen is the length of appendStamp's "2006-01-02T15:04:05.000Z ".
const stampLen = 25

func (j *jsonLines) write(line []byte) {
	text := strings.TrimRight(string(line), "\n")
	t := time.Now()
	if len(text) >= stampLen && text[stampLen-1] == ' ' {
		if text[:stampLen-1] == j.stamp {
			t, text = j.at, text[stampLen:]
		} else if ts, err := time.Parse("2006-01-02T15:04:05.000Z", text[:stampLen-1]); err == nil {
			j.stamp, j.at = text[:stampLen-1], ts
			t, text = ts, text[stampLen:]
		}
	}
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(text, "warning:"):
		level = slog.LevelWarn
	case strings.HasPrefix(text, "server error"), strings.HasPrefix(text, "error:"):
		level = slog.LevelError
	}
	r := slog.NewRecord(t, level, text, 0)
	j.attrs = logAttrs(j.attrs[:0], text)
	r.AddAttrs(j.attrs...)
	_ = j.h.Handle(context.Background(), r)
}

// logAttrs appends the key=value pairs of text: a key is lower-case
// letters, digits and underscores; a value runs to the next space (a
// trailing comma or semicolon dropped) or is a Go-quoted string
// (safeField's form). The first of a repeated key wins; time, level and
// msg are the record's own.
func logAttrs(attrs []slog.Attr, text string) []slog.Attr {
	for i := 0; i < len(text) && len(attrs) < maxLogAttrs; {
		// At the start of a word.
		k := i
		for k < len(text) && (text[k] >= 'a' && text[k] <= 'z' || text[k] >= '0' && text[k] <= '9' || text[k] == '_') {
			k++
		}
		if k == i || k+1 >= len(text) || text[k] != '=' || text[k+1] == ' ' {
			i = nextWord(text, i)
			continue
		}
		key, v := text[i:k], k+1
		var val string
		if text[v] == '"' {
			q, err := strconv.QuotedPrefix(text[v:])
			if err != nil {
				i = nextWord(text, i)
				continue
			}
			val, _ = strconv.Unquote(q)
			val = model.Sanitize(val)
			i = v + len(q)
		} else {
			end := strings.IndexByte(text[v:], ' ')
			if end < 0 {
				end = len(text) - v
			}
			val = strings.TrimRight(text[v:v+end], ",;")
			i = v + end
		}
		if key != slog.TimeKey && key != slog.LevelKey && key != slog.MessageKey && !hasAttr(attrs, key) {
			attrs = append(attrs, slog.String(key, val))
		}
		i = nextWord(text, i)
	}
	return attrs
}

// nextWord returns the index after the next run of spaces from i.
func nextWord(text string, i int) int {
	for i < len(text) && text[i] != ' ' {
		i++
	}
	for i < len(text) && text[i] == ' ' {
		i++
	}
	return i
}

func hasAttr(attrs []slog.Attr, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

// NewJSONLogWriter returns a writer that writes each line written to it
// (sanitised, tokens masked) to w as a JSON record in the sink's JSON
// form; a leading "keyward: " is dropped. serve --log-format json sends
// the command's own lines (warnings from opening the store, the error it
// exits with) through it, so stderr holds JSON only.
func NewJSONLogWriter(w io.Writer) io.Writer { return &jsonLogWriter{j: newJSONLines(w)} }

type jsonLogWriter struct {
	mu      sync.Mutex
	j       *jsonLines
	partial []byte
}

func (w *jsonLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			if len(w.partial) > 64<<10 { // a line without end: write what came
				i = len(w.partial) - 1
			} else {
				return len(p), nil
			}
		}
		line := strings.TrimPrefix(model.Sanitize(string(w.partial[:i])), "keyward: ")
		w.partial = w.partial[i+1:]
		if line != "" {
			w.j.write(maskTokenText([]byte(line)))
		}
	}
}
