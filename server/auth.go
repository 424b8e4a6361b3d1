package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/model"
)

// Forward auth: /v1/auth, for gateways (nginx auth_request, Caddy
// forward_auth, Traefik forwardAuth, Envoy ext_authz in HTTP mode).
//
// A gateway sends a subrequest with the client's headers; keyward answers
// with a status the gateway acts on, and headers it may pass upstream:
//
//	200  VALID; X-Keyward-Key-Id, X-Keyward-Role
//	401  MISSING, MALFORMED, NOT_FOUND, DISABLED, EXPIRED,
//	     CREATOR_DISABLED; WWW-Authenticate: Bearer
//	403  INSUFFICIENT_SCOPE, FORBIDDEN_RESOURCE
//	400  BAD_REQUEST: the auth URL's query is wrong (a config error)
//	500  GATEWAY_UNAUTHENTICATED: the gateway sent no or a wrong
//	     X-Keyward-Secret and is not in --auth-trust
//	503  STALE: this node is stale (stale.go), with Retry-After
//
// X-Keyward-Code is on every answer. The key comes from the key header
// (X-API-Key) or, when that is absent, "Authorization: Bearer <key>"; the
// scope and resource come from the auth URL's query, so each gateway route
// names its own with config alone.
//
// Why 500 for an unauthenticated gateway: gateways pass 401 and 403 on to
// the client as the client's fault (nginx returns them as they are), so a
// missing or wrong gateway secret would look like a refused key, and the
// client would be told to fix a key that is fine. Any other status is an
// error to every gateway: nginx answers 500, Caddy, Traefik and Envoy pass
// the 500 on; none lets the request through. 502 and 503 are kept for "this
// node cannot answer, try another" (503 is the stale node's); 500 says the
// request cannot succeed here as configured, and keyward logs why.

// X-Keyward-Code values of answers that are not a verification's code.
const (
	AuthCodeMissing  = "MISSING"                 // 401: no key in either header
	AuthCodeBadQuery = "BAD_REQUEST"             // 400: the auth URL's query is wrong
	AuthCodeGateway  = "GATEWAY_UNAUTHENTICATED" // 500: no or a wrong gateway secret
	AuthCodeStale    = "STALE"                   // 503: the node is stale
)

// Forward-auth defaults.
const (
	DefaultAuthKeyHeader    = "X-API-Key"
	DefaultAuthBearerHeader = "Authorization"
	// AuthSecretHeader carries the shared secret from gateway to keyward.
	AuthSecretHeader = "X-Keyward-Secret"
)

// ForwardAuth configures /v1/auth (Config.ForwardAuth). The zero value
// takes the key from X-API-Key or Authorization and trusts no network.
type ForwardAuth struct {
	// KeyHeader carries the key as it is ("" : X-API-Key).
	KeyHeader string
	// BearerHeader carries "Bearer <key>" ("": Authorization).
	BearerHeader string
	// Trust lists the networks whose peers (the TCP connection's address,
	// never a header) are gateways that need not send X-Keyward-Secret.
	Trust []netip.Prefix
}

// Check reports what newFwdAuth would refuse in c (for flag checks before
// anything is opened).
func (c ForwardAuth) Check() error {
	_, err := newFwdAuth(c)
	return err
}

// fwdAuth is ForwardAuth checked, with canonical header names.
type fwdAuth struct {
	keyHdr, bearerHdr string
	trust             []netip.Prefix
	refusals          refusalLog
}

// newFwdAuth checks c and fills its defaults.
func newFwdAuth(c ForwardAuth) (*fwdAuth, error) {
	fa := &fwdAuth{keyHdr: DefaultAuthKeyHeader, bearerHdr: DefaultAuthBearerHeader}
	for _, h := range []struct {
		v   string
		dst *string
	}{{c.KeyHeader, &fa.keyHdr}, {c.BearerHeader, &fa.bearerHdr}} {
		if h.v == "" {
			continue
		}
		if !validHeaderName(h.v) {
			return nil, fmt.Errorf("forward auth: %q is not a header name (letters, digits and -, at most 64)", h.v)
		}
		*h.dst = h.v
	}
	fa.keyHdr = textproto.CanonicalMIMEHeaderKey(fa.keyHdr)
	fa.bearerHdr = textproto.CanonicalMIMEHeaderKey(fa.bearerHdr)
	if fa.keyHdr == fa.bearerHdr {
		return nil, fmt.Errorf("forward auth: the key header and the bearer header are both %s", fa.keyHdr)
	}
	for _, h := range []string{fa.keyHdr, fa.bearerHdr} {
		switch h {
		case AuthSecretHeader, "X-Forwarded-For", "X-Real-Ip":
			return nil, fmt.Errorf("forward auth: %s cannot carry the key", h)
		}
	}
	for _, p := range c.Trust {
		if !p.IsValid() {
			return nil, errors.New("forward auth: an invalid trusted network")
		}
		fa.trust = append(fa.trust, p.Masked())
	}
	return fa, nil
}

// defaultFwdAuth is ForwardAuth{} checked, for an httpAPI built without
// one.
var defaultFwdAuth, _ = newFwdAuth(ForwardAuth{})

// validHeaderName accepts the header names an operator would configure:
// letters, digits and '-', 1 to 64 of them.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// describe is the start-up log line's part about forward auth.
func (fa *fwdAuth) describe() string {
	gw := "gateways must send " + AuthSecretHeader
	if len(fa.trust) > 0 {
		nets := make([]string, len(fa.trust))
		for i, p := range fa.trust {
			nets[i] = p.String()
		}
		gw += " or connect from " + strings.Join(nets, ", ")
	}
	return "/v1/auth: key from " + fa.keyHdr + " or " + fa.bearerHdr + ": Bearer; " + gw
}

// trusted reports whether a is in a trusted network.
func (fa *fwdAuth) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range fa.trust {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Why a gateway was refused (gateway's answer).
const (
	gatewayOK = iota
	gatewayNoSecret
	gatewayWrongSecret
)

// gateway decides whether the request comes from an authenticated
// gateway. A secret header, when present, must be right even from a
// trusted network: a wrong one is a config error to surface, not to
// paper over.
func (a *httpAPI) gateway(fa *fwdAuth, r *http.Request, peer netip.Addr) int {
	if v, ok := r.Header[AuthSecretHeader]; ok {
		if len(v) == 1 && a.st.CheckSharedSecret(v[0]) {
			return gatewayOK
		}
		return gatewayWrongSecret
	}
	if peer.IsValid() && fa.trusted(peer) {
		return gatewayOK
	}
	return gatewayNoSecret
}

// key returns the presented key: the key header's value if it is there,
// else the bearer header's credentials. ok is false when neither holds
// one. A header given twice yields "" (MALFORMED), never a pick.
func (fa *fwdAuth) key(h http.Header) (key string, ok bool) {
	if v, found := h[fa.keyHdr]; found {
		if len(v) != 1 {
			return "", true
		}
		return strings.TrimSpace(v[0]), true
	}
	if v, found := h[fa.bearerHdr]; found {
		if len(v) != 1 {
			return "", true
		}
		if k := bearer(v); k != "" {
			return k, true
		}
	}
	return "", false
}

// maxForwardHops bounds how many X-Forwarded-For entries are examined.
const maxForwardHops = 32

// source is the client address recorded as the key's last-used source.
// The request already comes from an authenticated or trusted gateway
// (nothing else reaches a verification), so its forwarding headers are
// believed as far as they can be: in X-Forwarded-For each proxy appends
// the address it received the request from, so entries are read from the
// right, skipping --auth-trust networks (proxies of ours); the first
// other entry is the first hop no proxy of ours vouches for: the client
// as the outermost gateway saw it. Entries to its left were written by
// the client and could be anything, so they are never used. Without
// X-Forwarded-For, X-Real-IP (one address, set by the gateway); without
// either, or when an entry is not an IP address, the TCP peer. The result
// is always a parsed address's canonical form: no raw header text reaches
// the store.
func (fa *fwdAuth) source(h http.Header, peer netip.Addr, remoteAddr string) string {
	fallback := func() string {
		if peer.Is4() || peer.Is6() && !peer.Is4In6() && peer.Zone() == "" {
			return remoteIP(remoteAddr) // already canonical: no copy per request
		}
		if peer.IsValid() {
			return peer.Unmap().WithZone("").String()
		}
		return ""
	}
	if vals := h["X-Forwarded-For"]; len(vals) > 0 {
		var last netip.Addr
		hops := 0
		for i := len(vals) - 1; i >= 0; i-- {
			v := vals[i]
			for v != "" {
				if hops++; hops > maxForwardHops {
					break
				}
				var elem string
				if j := strings.LastIndexByte(v, ','); j >= 0 {
					elem, v = v[j+1:], v[:j]
				} else {
					elem, v = v, ""
				}
				elem = strings.TrimSpace(elem)
				a, err := netip.ParseAddr(elem)
				if err != nil {
					return fallback()
				}
				if !fa.trusted(a) {
					if a.Is4() { // netip accepts only the canonical dotted quad
						return elem
					}
					return a.Unmap().WithZone("").String()
				}
				a = a.Unmap().WithZone("")
				last = a
			}
		}
		if last.IsValid() { // every hop is ours: the left-most is the client
			return last.String()
		}
		return fallback()
	}
	if v := h["X-Real-Ip"]; len(v) == 1 {
		if a, err := netip.ParseAddr(strings.TrimSpace(v[0])); err == nil {
			return a.Unmap().WithZone("").String()
		}
	}
	return fallback()
}

// maxAuthParam bounds a scope or resource in the auth URL.
const maxAuthParam = 256

// authQuery parses the auth URL's query: only scope and resource, each
// at most once, non-empty. Anything else is a config error (400): a
// misspelt "scopes=" must not turn a route's check into authentication
// only, and a client's own query must not add a second scope. "path="
// ends the query: what follows is ignored, for gateways that append the
// client's path and query to the auth URL (Envoy: path_prefix
// "/v1/auth?scope=coupons:read&path="), so the client's bytes can never
// name a scope or resource.
func authQuery(raw string) (scope, resource, msg string) {
	var seenScope, seenResource bool
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if k == "path" {
			// The rest is the client's path, which a gateway appends to
			// the auth URL (Envoy's path_prefix): never read.
			break
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return "", "", "the auth URL's query is not valid URL encoding"
		}
		if val == "" || len(val) > maxAuthParam {
			return "", "", "scope and resource in the auth URL must be 1 to 256 bytes"
		}
		switch k {
		case "scope":
			if seenScope {
				return "", "", "the auth URL names scope twice"
			}
			scope, seenScope = val, true
		case "resource":
			if seenResource {
				return "", "", "the auth URL names resource twice"
			}
			resource, seenResource = val, true
		default:
			return "", "", "the auth URL's query may hold only scope and resource"
		}
	}
	return scope, resource, ""
}

var (
	hdrAuthMissing  = []string{AuthCodeMissing}
	hdrAuthBadQuery = []string{AuthCodeBadQuery}
	hdrAuthGateway  = []string{AuthCodeGateway}
	hdrAuthStale    = []string{AuthCodeStale}
	// hdrAuthCodes are the X-Keyward-Code values of verification codes,
	// made once so an answer does not allocate them.
	hdrAuthCodes = func() map[model.Code][]string {
		m := make(map[model.Code][]string, len(model.Codes))
		for _, c := range model.Codes {
			m[c] = []string{string(c)}
		}
		return m
	}()
)

// hdrAuthRoles are the X-Keyward-Role values, made once.
var hdrAuthRoles = func() map[model.Role][]string {
	m := make(map[model.Role][]string, len(model.Roles))
	for _, r := range model.Roles {
		m[r] = []string{string(r)}
	}
	return m
}()

// authStatus is the answer's status for a verification code.
func authStatus(c model.Code) int {
	switch c {
	case model.CodeValid:
		return http.StatusOK
	case model.CodeInsufficientScope, model.CodeForbiddenResource:
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// forwardAuth answers /v1/auth (any method).
func (a *httpAPI) forwardAuth(w http.ResponseWriter, r *http.Request) {
	fa := a.auth
	if fa == nil {
		fa = defaultFwdAuth
	}
	var start time.Time
	if a.m != nil {
		start = time.Now()
	}
	h := w.Header()
	// Before the secret, as verify does: a stale node may not know the
	// current one.
	if a.stale != nil {
		if err := a.stale(); err != nil {
			h["X-Keyward-Code"] = hdrAuthStale
			a.m.authDecision(hdrAuthStale[0], http.StatusServiceUnavailable)
			a.failStale(w, r, err)
			return
		}
	}
	peerAP, _ := netip.ParseAddrPort(r.RemoteAddr)
	peer := peerAP.Addr()
	if why := a.gateway(fa, r, peer); why != gatewayOK {
		fa.refusals.log(a.log, why, remoteIP(r.RemoteAddr))
		h["X-Keyward-Code"] = hdrAuthGateway
		a.m.authDecision(hdrAuthGateway[0], http.StatusInternalServerError)
		a.fail(w, r, http.StatusInternalServerError, "the gateway is not authenticated: send the shared secret in "+AuthSecretHeader+" (keyward secret show) or list the gateway's network in --auth-trust")
		return
	}
	scope, resource, msg := authQuery(r.URL.RawQuery)
	if msg == "" && a.requireScope && scope == "" {
		msg = "the auth URL names no scope, and this server runs with --require-scope"
	}
	if msg != "" {
		h["X-Keyward-Code"] = hdrAuthBadQuery
		a.m.authDecision(hdrAuthBadQuery[0], http.StatusBadRequest)
		a.fail(w, r, http.StatusBadRequest, msg)
		return
	}
	key, present := fa.key(r.Header)
	src := fa.source(r.Header, peer, r.RemoteAddr)
	var res model.VerifyResult
	if present {
		res = a.st.Verify(key, scope, resource, src)
		a.m.verification(EndpointAuth, res.Code, start)
	}
	status := http.StatusUnauthorized
	h["Cache-Control"] = hdrNoStore
	switch {
	case !present:
		h["X-Keyward-Code"] = hdrAuthMissing
	default:
		status = authStatus(res.Code)
		if c, ok := hdrAuthCodes[res.Code]; ok {
			h["X-Keyward-Code"] = c
		} else {
			h["X-Keyward-Code"] = []string{string(res.Code)}
		}
	}
	if status == http.StatusOK {
		h["X-Keyward-Key-Id"] = []string{res.KeyID}
		if v, ok := hdrAuthRoles[res.Role]; ok {
			h["X-Keyward-Role"] = v
		} else {
			h["X-Keyward-Role"] = []string{string(res.Role)}
		}
	} else if status == http.StatusUnauthorized {
		h["Www-Authenticate"] = hdrBearer
	}
	a.m.authDecision(h["X-Keyward-Code"][0], status)
	if status == http.StatusOK {
		w.WriteHeader(status)
	} else {
		a.m.httpError(status)
		// A body for gateways that pass the answer on (Caddy, Traefik,
		// Envoy).
		h["Content-Type"] = hdrJSON
		h["X-Content-Type-Options"] = hdrNoSniff
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			bp := bufPool.Get().(*[]byte)
			b := append((*bp)[:0], `{"error":`...)
			if status == http.StatusForbidden {
				b = append(b, `"forbidden"`...)
			} else {
				b = append(b, `"unauthorized"`...)
			}
			b = append(b, `,"code":`...)
			b = appendJSONString(b, h["X-Keyward-Code"][0])
			b = append(b, "}\n"...)
			_, _ = w.Write(b)
			*bp = b
			putBuf(bp)
		}
	}

	lp := a.log.line()
	b := append(*lp, "http auth status="...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, " code="...)
	b = append(b, h["X-Keyward-Code"][0]...)
	if present {
		b = appendKeyRef(b, &verifyRequest{Key: key}, &res, a.st.Prefix())
	}
	b = append(b, " from="...)
	b = appendSafe(b, remoteIP(r.RemoteAddr))
	b = append(b, " client="...)
	b = append(b, src...) // a parsed address, or ""
	*lp = b
	a.log.send(lp)
}

// refusalLog logs refused gateways at most once per refusalLogEvery,
// with how many refusals the quiet time hid: a misconfigured gateway
// sends every client request, and its log must not drown the rest.
type refusalLog struct {
	next       atomic.Int64 // unix nanoseconds of the next line allowed
	suppressed atomic.Int64
}

const refusalLogEvery = time.Second

func (rl *refusalLog) log(l *logSink, why int, peer string) {
	now := time.Now().UnixNano()
	next := rl.next.Load()
	if now < next || !rl.next.CompareAndSwap(next, now+int64(refusalLogEvery)) {
		rl.suppressed.Add(1)
		return
	}
	reason := "sent no " + AuthSecretHeader + " and is not in --auth-trust"
	if why == gatewayWrongSecret {
		reason = "sent a wrong " + AuthSecretHeader + " (or more than one)"
	}
	more := ""
	if n := rl.suppressed.Swap(0); n > 0 {
		more = fmt.Sprintf(" (%d more refusals not logged in the last second or so)", n)
	}
	l.Printf("http auth: refused the gateway at %s: it %s; answering 500%s", peer, reason, more)
}
