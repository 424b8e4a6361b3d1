package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// MaxVerifyBody is the largest verify request body accepted (413 above).
const MaxVerifyBody = 64 << 10

// verifyRequest is the body of POST /v1/keys/verify.
type verifyRequest struct {
	Key      string `json:"key"`
	Scope    string `json:"scope"`
	Resource string `json:"resource"`
}

// httpAPI serves the verification API over one store.
type httpAPI struct {
	st  *store.Store
	log *logSink
	// requireScope refuses (400) a verify that names no scope: without
	// one, VALID only authenticates the key (Config.RequireScope).
	requireScope bool
	// stale (Config.Stale; nil: never) fails verify and /healthz closed
	// with 503 while it returns an error (stale.go).
	stale func() error
	// auth configures /v1/auth (auth.go); nil: the defaults.
	auth *fwdAuth
	// m counts verifications (metrics.go); nil: metrics off.
	m *metrics
}

var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
	hdrNoSniff = []string{"nosniff"}
	hdrBearer  = []string{`Bearer realm="keyward"`}
	hdrPOST    = []string{"POST"}
	hdrGET     = []string{"GET, HEAD"}
	healthBody = []byte(`{"status":"ok"}` + "\n")
)

func (a *httpAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.m.request()
	switch r.URL.Path {
	case "/v1/openapi.json": // the API's contract, no authentication (openapi.go)
		a.openAPI(w, r)
	case "/v1/keys/verify":
		a.verify(w, r)
	case "/v1/auth": // forward auth for gateways, any method (auth.go)
		a.forwardAuth(w, r)
	case "/healthz":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header()["Allow"] = hdrGET
			a.fail(w, r, http.StatusMethodNotAllowed, "use GET")
			return
		}
		if a.stale != nil {
			if err := a.stale(); err != nil {
				a.failStale(w, r, err)
				return
			}
		}
		h := w.Header()
		h["Content-Type"] = hdrJSON
		h["Cache-Control"] = hdrNoStore
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(healthBody)
		}
	default:
		a.fail(w, r, http.StatusNotFound, "no such endpoint; use POST /v1/keys/verify or GET /healthz")
	}
}

// bufPool holds request and response buffers. Buffers that grew past
// 16 KiB (a near-limit body) are not kept.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func putBuf(bp *[]byte) {
	if cap(*bp) <= 16<<10 {
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}
}

func (a *httpAPI) verify(w http.ResponseWriter, r *http.Request) {
	var start time.Time
	if a.m != nil {
		start = time.Now()
	}
	if r.Method != http.MethodPost {
		w.Header()["Allow"] = hdrPOST
		a.fail(w, r, http.StatusMethodNotAllowed, "use POST")
		return
	}
	// Before the secret: a stale node may not know the current one
	// either, and a caller told 401 would blame its secret.
	if a.stale != nil {
		if err := a.stale(); err != nil {
			a.failStale(w, r, err)
			return
		}
	}
	if !a.st.CheckSharedSecret(bearer(r.Header["Authorization"])) {
		w.Header()["Www-Authenticate"] = hdrBearer
		a.fail(w, r, http.StatusUnauthorized, "missing or wrong shared secret: send Authorization: Bearer <secret> (keyward secret show)")
		return
	}
	if r.ContentLength > MaxVerifyBody {
		a.fail(w, r, http.StatusRequestEntityTooLarge, "request body is larger than 64 KiB")
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer putBuf(bp)
	body, err := readBody(r.Body, (*bp)[:0], MaxVerifyBody)
	*bp = body[:0]
	if err != nil {
		if errors.Is(err, errTooLarge) {
			a.fail(w, r, http.StatusRequestEntityTooLarge, "request body is larger than 64 KiB")
		} else {
			a.fail(w, r, http.StatusBadRequest, "could not read the request body")
		}
		return
	}
	req, msg := decodeVerify(body)
	if msg == "" && a.requireScope && req.Scope == "" {
		msg = `"scope" is required: this server runs with --require-scope, so a key is never VALID without a scope`
	}
	if msg != "" {
		a.fail(w, r, http.StatusBadRequest, msg)
		return
	}
	res := a.st.Verify(req.Key, req.Scope, req.Resource, remoteIP(r.RemoteAddr))

	out := appendResult(body[:0], &res)
	*bp = out[:0]
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["X-Content-Type-Options"] = hdrNoSniff
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	a.m.verification(EndpointVerify, res.Code, start)

	lp := a.log.line()
	b := append(*lp, "http verify status=200 code="...)
	b = append(b, res.Code...)
	b = appendKeyRef(b, &req, &res, a.st.Prefix())
	b = append(b, " from="...)
	b = appendSafe(b, remoteIP(r.RemoteAddr))
	*lp = b
	a.log.send(lp)
}

// appendKeyRef logs which key a request was about without its secret: the
// key id when one matched, else the token's display hint (prefix and four
// characters, as stored) when it parsed, else only its length.
func appendKeyRef(b []byte, req *verifyRequest, res *model.VerifyResult, prefix string) []byte {
	if res.KeyID != "" {
		b = append(b, " key="...)
		return append(b, res.KeyID...)
	}
	if tok, err := model.ParseToken(req.Key, prefix); err == nil {
		b = append(b, " hint="...)
		return append(b, tok.Hint()...)
	}
	b = append(b, " key_len="...)
	return strconv.AppendInt(b, int64(len(req.Key)), 10)
}

var errTooLarge = errors.New("body too large")

// readBody reads all of r into buf, refusing more than max bytes.
func readBody(r io.Reader, buf []byte, max int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			if len(buf) > max {
				return buf, errTooLarge
			}
			nb := make([]byte, len(buf), min(2*cap(buf)+512, max+1))
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > max {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// fail writes a JSON error answer and logs it.
func (a *httpAPI) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	h["X-Content-Type-Options"] = hdrNoSniff
	w.WriteHeader(status)
	a.m.httpError(status)
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], `{"error":`...)
	b = appendJSONString(b, msg)
	b = append(b, "}\n"...)
	_, _ = w.Write(b)
	*bp = b
	putBuf(bp)

	lp := a.log.line()
	b = append(*lp, "http "...)
	b = append(b, safeField(r.Method)...)
	b = append(b, ' ')
	b = append(b, safeField(truncUTF8(r.URL.Path, 128))...)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, " from="...)
	b = appendSafe(b, remoteIP(r.RemoteAddr))
	*lp = b
	a.log.send(lp)
}

// bearer extracts the credentials of "Authorization: Bearer X". The
// scheme is case-insensitive; anything else yields "" (never valid).
func bearer(vals []string) string {
	if len(vals) != 1 {
		return ""
	}
	v := vals[0]
	if len(v) < 7 || v[6] != ' ' {
		return ""
	}
	for i, c := range []byte("bearer") {
		if v[i]|0x20 != c {
			return ""
		}
	}
	v = v[7:]
	for len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	return v
}

// remoteIP returns the IP part of a RemoteAddr ("1.2.3.4:5678").
func remoteIP(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// appendResult encodes the answer exactly as encoding/json encodes
// model.VerifyResult without its Reason (valid, code, key_id, role,
// expires_at), with a trailing newline, without allocating.
func appendResult(b []byte, res *model.VerifyResult) []byte {
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, res.Valid)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, string(res.Code))
	if res.KeyID != "" {
		b = append(b, `,"key_id":`...)
		b = appendJSONString(b, res.KeyID)
	}
	if res.Role != "" {
		b = append(b, `,"role":`...)
		b = appendJSONString(b, string(res.Role))
	}
	b = append(b, `,"expires_at":`...)
	if res.ExpiresAt == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = res.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// jsonPlain marks the bytes appendJSONString copies as they are:
// printable ASCII other than " \ < > &.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s as a JSON string, escaping what JSON needs
// and, like encoding/json, <, > and & for HTML safety. The plain prefix
// (all of a code, a role or a key id) is copied in one append: byte by
// byte it was a tenth of the verify handler's time.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	i := 0
	for i < len(s) && jsonPlain[s[i]] {
		i++
	}
	b = append(b, s[:i]...)
	for i < len(s) {
		c := s[i]
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b = append(b, `\ufffd`...)
			case r == '\u2028' || r == '\u2029':
				b = append(b, `\u202`...)
				b = append(b, hex[r&0xf])
			default:
				b = append(b, s[i:i+size]...)
			}
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}
