package server

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/keyward/keyward/model"
)

// decodeVerify decodes a verify body strictly: one JSON object whose
// members are only "key", "scope" and "resource" (exact names, each at
// most once), with string values, and nothing but whitespace after it. It
// returns a message fit for a 400 answer, or "". Messages never echo the
// input.
//
// It is a small hand-written parser rather than encoding/json because the
// body has a fixed flat shape, and decoding it with encoding/json took
// half of the handler's CPU time and most of its allocations (see
// BENCHMARKS.md, section keyward serve HTTP verify). FuzzVerifyBody checks that it never accepts what
// encoding/json in strict mode refuses, and that both read the same values.
func decodeVerify(body []byte) (verifyRequest, string) {
	var req verifyRequest
	// One copy of the body as a string; names and plain values are
	// substrings of it (one allocation per request instead of six).
	p := jsonParser{b: body, s: string(body)}
	p.ws()
	if p.eof() {
		return req, `request body is empty; send {"key":"...","scope":"...","resource":"..."}`
	}
	if p.b[p.i] != '{' {
		return req, `request body must be a JSON object {"key","scope","resource"}`
	}
	p.i++
	if msg := p.members(&req); msg != "" {
		return req, msg
	}
	p.ws()
	if !p.eof() {
		return req, "request body has data after the JSON object"
	}
	if req.Key == "" {
		return req, `"key" is required`
	}
	return req, ""
}

// members reads the verify object's members, after its '{' up to and
// including its '}', into req. It returns a message for a 400, or "".
func (p *jsonParser) members(req *verifyRequest) string {
	var seen [3]bool
	for first := true; ; first = false {
		p.ws()
		if p.eof() {
			return p.syntax()
		}
		if first && p.b[p.i] == '}' {
			p.i++
			return ""
		}
		if msg := p.member(req, &seen); msg != "" {
			return msg
		}
		p.ws()
		if p.eof() {
			return p.syntax()
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return ""
		default:
			return p.syntax()
		}
	}
}

// member reads one member, "name": "value", into req: the name must be
// key, scope or resource and not in seen, the value a string.
func (p *jsonParser) member(req *verifyRequest, seen *[3]bool) string {
	name, ok := p.str()
	if !ok {
		return p.syntax()
	}
	p.ws()
	if p.eof() || p.b[p.i] != ':' {
		return p.syntax()
	}
	p.i++
	p.ws()
	var field int
	var dst *string
	switch name {
	case "key":
		field, dst = 0, &req.Key
	case "scope":
		field, dst = 1, &req.Scope
	case "resource":
		field, dst = 2, &req.Resource
	default:
		return "unknown field " + strconv.Quote(model.Sanitize(truncUTF8(name, 64))) + " (allowed: key, scope, resource)"
	}
	if seen[field] {
		return `field "` + name + `" appears twice`
	}
	seen[field] = true
	if p.eof() {
		return p.syntax()
	}
	if p.b[p.i] != '"' {
		if p.valueStart() {
			return `field "` + name + `" must be a string`
		}
		return p.syntax()
	}
	v, ok := p.str()
	if !ok {
		return p.syntax()
	}
	*dst = v
	return ""
}

// jsonParser reads the few JSON forms a verify body may hold.
type jsonParser struct {
	b   []byte
	s   string // b as a string
	i   int
	bad string // why str failed, when it knows
}

func (p *jsonParser) eof() bool { return p.i >= len(p.b) }

func (p *jsonParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// valueStart reports whether the next byte could start a non-string JSON
// value, so a wrong type is reported as such rather than as bad syntax.
func (p *jsonParser) valueStart() bool {
	switch c := p.b[p.i]; {
	case c == '{' || c == '[' || c == '-' || (c >= '0' && c <= '9'):
		return true
	case c == 't' || c == 'f' || c == 'n':
		return true
	}
	return false
}

func (p *jsonParser) syntax() string {
	switch {
	case p.bad != "":
		return "request body is not valid JSON: " + p.bad
	case p.eof():
		return "request body is not valid JSON: unexpected end of input"
	}
	return "request body is not valid JSON: syntax error at byte " + strconv.Itoa(p.i)
}

// str reads a JSON string at p.i (which must be '"'). Strings must be
// valid UTF-8; escapes are decoded as encoding/json decodes them (a lone
// surrogate becomes U+FFFD).
func (p *jsonParser) str() (string, bool) {
	if p.eof() || p.b[p.i] != '"' {
		return "", false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ { // fast path: no escapes
		switch c := p.b[j]; {
		case c == '"':
			s := p.b[start:j]
			if !utf8.Valid(s) {
				p.i, p.bad = start, "strings must be valid UTF-8"
				return "", false
			}
			p.i = j + 1
			return p.s[start:j], true
		case c == '\\':
			return p.strSlow(start)
		case c < 0x20:
			p.i, p.bad = j, "control character in a string at byte "+strconv.Itoa(j)
			return "", false
		}
	}
	p.i = len(p.b)
	return "", false
}

func (p *jsonParser) strSlow(start int) (string, bool) {
	out := make([]byte, 0, 64)
	j := start
	for j < len(p.b) {
		c := p.b[j]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				p.i, p.bad = start, "strings must be valid UTF-8"
				return "", false
			}
			p.i = j + 1
			return string(out), true
		case c < 0x20:
			p.i, p.bad = j, "control character in a string at byte "+strconv.Itoa(j)
			return "", false
		case c != '\\':
			out = append(out, c)
			j++
			continue
		}
		if j+1 >= len(p.b) {
			p.i = len(p.b)
			return "", false
		}
		e := p.b[j+1]
		j += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(p.b, j)
			if !ok {
				p.i = j
				return "", false
			}
			j += 4
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(-1), false
				if j+6 <= len(p.b) && p.b[j] == '\\' && p.b[j+1] == 'u' {
					r2, ok2 = hex4(p.b, j+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					r = dec
					j += 6
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			p.i = j - 1
			return "", false
		}
	}
	p.i = len(p.b)
	return "", false
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
