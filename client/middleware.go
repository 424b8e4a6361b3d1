package client

import (
	"context"
	"errors"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
)

// Identity is who a request that Middleware let through came with.
type Identity struct {
	KeyID     string
	Role      model.Role
	ExpiresAt *time.Time // nil: never expires
}

type ctxKey struct{}

// FromContext returns the Identity Middleware put in a request's context.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// CodeMissing is the X-Keyward-Code of a request without a key, as
// keyward's /v1/auth sends it.
const CodeMissing = "MISSING"

// Middleware guards next with keyward: the key comes from X-API-Key or,
// without it, from Authorization: Bearer. A request whose key is VALID for
// scope and resource reaches next with its Identity in the context
// (FromContext). Others are answered as keyward's /v1/auth answers a
// gateway, with X-Keyward-Code and a small JSON body:
//
//   - 401 with WWW-Authenticate: Bearer: no key, or MALFORMED, NOT_FOUND,
//     DISABLED, EXPIRED, CREATOR_DISABLED;
//   - 403: INSUFFICIENT_SCOPE, FORBIDDEN_RESOURCE;
//   - 503 with Retry-After when keyward is stale, busy or unreachable
//     (the request may succeed later; nothing is let through);
//   - 500 when keyward refuses the shared secret (a configuration error,
//     logged), or answers anything else.
//
// It never logs or echoes the key.
func Middleware(c *Client, scope, resource string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key, ok := keyFrom(r.Header)
			if !ok {
				deny(w, http.StatusUnauthorized, CodeMissing)
				return
			}
			if key == "" { // a header given twice, or empty
				deny(w, http.StatusUnauthorized, string(model.CodeMalformed))
				return
			}
			res, err := c.Verify(r.Context(), key, scope, resource)
			if err != nil {
				fail(w, err)
				return
			}
			if st := res.Refusal(); st != http.StatusOK {
				deny(w, st, string(res.Code))
				return
			}
			id := Identity{KeyID: res.KeyID, Role: res.Role, ExpiresAt: res.ExpiresAt}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
		})
	}
}

// keyFrom returns the presented key. A header given twice is refused
// (MALFORMED-like: an empty key), never a pick between the two.
func keyFrom(h http.Header) (string, bool) {
	if v, ok := h["X-Api-Key"]; ok {
		if len(v) != 1 {
			return "", true
		}
		return strings.TrimSpace(v[0]), true
	}
	v, ok := h["Authorization"]
	if !ok {
		return "", false
	}
	if len(v) != 1 {
		return "", true
	}
	scheme, cred, found := strings.Cut(strings.TrimSpace(v[0]), " ")
	if !found || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	return strings.TrimSpace(cred), true
}

func deny(w http.ResponseWriter, status int, code string) {
	h := w.Header()
	h.Set("X-Keyward-Code", code)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	word := "unauthorized"
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="keyward"`)
	} else {
		word = "forbidden"
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":"` + word + `","code":"` + code + `"}` + "\n"))
}

func fail(w http.ResponseWriter, err error) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	var ue *UnavailableError
	var te *TransportError
	switch {
	case errors.As(err, &ue):
		h.Set("Retry-After", strconv.Itoa(int(ue.RetryAfter/time.Second)))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"the key service is unavailable; retry"}` + "\n"))
	case errors.As(err, &te):
		h.Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"the key service is unreachable; retry"}` + "\n"))
	default:
		log.Printf("keyward middleware: %v", err) // errors never hold the key
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":"the key service refused this server's request"}` + "\n"))
	}
}
