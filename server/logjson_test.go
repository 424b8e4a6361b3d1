package server

import (
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
)

// hostileName is an operator name as an attacker would pick it: an OSC 52
// clipboard write, a clear screen, a right-to-left override, a newline
// that fakes a second line.
const hostileName = "mallory\x1b]52;c;ZXZpbA==\x07\x1b[2J\u202egnp.exe\nforged=1"

// fakeToken is shaped like a keyward token (prefix and a 49-character body).
var fakeToken = model.DefaultPrefix + strings.Repeat("Ab3", 16) + "Z"

// decodeJSONLines parses every line of out as one JSON object.
func decodeJSONLines(t *testing.T, out string) []map[string]string {
	t.Helper()
	var recs []map[string]string
	for _, ln := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var rec map[string]string
		if err := json.Unmarshal([]byte(ln), &rec); err != nil {
			t.Fatalf("not a JSON object of strings: %q: %v", ln, err)
		}
		for k, v := range rec {
			for _, r := range k + v {
				if unicode.IsControl(r) || r == '\u202e' {
					t.Fatalf("field %s=%q carries control character %U", k, v, r)
				}
			}
		}
		recs = append(recs, rec)
	}
	return recs
}

// TestLogJSONLines: in JSON, every line is an object with time, level and
// msg, and its key=value pairs as attributes; hostile names come out
// sanitised and tokens masked, as in text.
func TestLogJSONLines(t *testing.T) {
	w := &countingWriter{}
	l := newLogSinkFormat(w, LogJSON)
	before := time.Now().UTC().Truncate(time.Millisecond)
	l.Printf("ssh session start user=%s role=%s from=%s", hostileName, "ADMIN", "10.0.0.1:5555")
	sshLogger{l}.Printf("%s exec %v", hostileName, []string{"keys", "show", fakeToken})
	l.Printf("warning: lock file: %s", "pasted "+fakeToken+" here")
	sendLine(l, "http verify status=200 code=VALID key=key_abc from=127.0.0.1")
	l.Close()
	out, _ := w.snapshot()
	if strings.Contains(out, fakeToken) || strings.Contains(out, "\x1b") || strings.Contains(out, "\\u001b") {
		t.Fatalf("a token or an escape reached the JSON log:\n%s", out)
	}
	recs := decodeJSONLines(t, out)
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4:\n%s", len(recs), out)
	}
	for _, r := range recs {
		ts, err := time.Parse(time.RFC3339Nano, r["time"])
		if err != nil || ts.Before(before) || r["msg"] == "" {
			t.Fatalf("record without time or msg: %v", r)
		}
	}
	if r := recs[0]; r["level"] != "INFO" || r["role"] != "ADMIN" || r["from"] != "10.0.0.1:5555" || !strings.HasPrefix(r["user"], "mallory") || r["forged"] != "" {
		t.Fatalf("session line: %v", r)
	}
	if r := recs[2]; r["level"] != "WARN" || !strings.Contains(r["msg"], model.DefaultPrefix+"Ab3A…") {
		t.Fatalf("warning line: %v", r)
	}
	if r := recs[3]; r["status"] != "200" || r["code"] != "VALID" || r["key"] != "key_abc" || r["msg"] != "http verify status=200 code=VALID key=key_abc from=127.0.0.1" {
		t.Fatalf("verify line: %v", r)
	}
}

// TestLogMasksTokenInPath: a token sent in a URL path (a gateway
// misconfigured to append the key) is masked in the log, in text and in
// JSON. The 404 line quoted the path as sent.
func TestLogMasksTokenInPath(t *testing.T) {
	for _, format := range []string{LogText, LogJSON} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t)
			r := e.serve(Config{SSHAddr: "-", LogFormat: format})
			c, err := net.Dial("tcp", r.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			status, _, err := testkit.RawRoundTrip(c, "GET /v1/"+fakeToken+"/%1b]52;c;eA==%07 HTTP/1.1\r\nHost: x\r\n\r\n")
			if err != nil || status != 404 {
				t.Fatalf("status %d: %v", status, err)
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			out := r.logs.String()
			if !strings.Contains(out, "status=404") {
				t.Fatalf("the 404 was not logged:\n%s", out)
			}
			if strings.Contains(out, fakeToken) || strings.Contains(out, "\x1b") || strings.Contains(out, "\x07") {
				t.Fatalf("the token or a control character reached the log:\n%s", out)
			}
			if format == LogJSON {
				decodeJSONLines(t, out)
			}
		})
	}
}

// BenchmarkLogLine is the writer goroutine's cost per verify line, in
// text and in JSON (README, "Logs: text or JSON").
func BenchmarkLogLine(b *testing.B) {
	line := []byte("2026-11-29T15:50:14.613Z http verify status=200 code=VALID key=key_7fq2m9xk4t1c from=10.0.0.7\n")
	b.Run("text", func(b *testing.B) {
		for b.Loop() {
			_, _ = io.Discard.Write(maskTokenText(line))
		}
	})
	b.Run("json", func(b *testing.B) {
		j := newJSONLines(io.Discard)
		b.ReportAllocs()
		for b.Loop() {
			j.write(maskTokenText(line))
		}
	})
}
