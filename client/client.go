// Package client calls keyward's verify API (POST /v1/keys/verify) from Go
// services, and guards a net/http handler with it (Middleware).
//
//	kw, err := client.New("http://127.0.0.1:8080", os.Getenv("KEYWARD_SECRET"))
//	res, err := kw.Verify(ctx, key, "coupons:read", "web-shop")
//	if err == nil && res.Valid { ... }
//
// A Client is safe for concurrent use and keeps its connections open
// between calls; make one per keyward address and share it. Every call is
// bounded: a connect, a response header and a whole call have timeouts,
// and an answer larger than 64 KiB is refused. Errors tell apart what the
// caller should do about them: ErrBadSecret (fix the configuration),
// *UnavailableError (retry later or on another node), *TransportError
// (keyward could not be reached) and *StatusError (anything else).
//
// The package imports only the standard library and keyward's model (for
// the codes and roles).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
)

// Result is a verification's outcome. Valid is true exactly when Code is
// model.CodeValid. KeyID and Role are set when a key matched (also for
// DISABLED, EXPIRED, INSUFFICIENT_SCOPE …); ExpiresAt is nil when the key
// never expires or none matched.
type Result struct {
	Valid     bool       `json:"valid"`
	Code      model.Code `json:"code"`
	KeyID     string     `json:"key_id,omitempty"`
	Role      model.Role `json:"role,omitempty"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// Refusal is how Middleware answers a request whose key is not VALID: 401
// for a missing key or one that is MALFORMED, NOT_FOUND, DISABLED, EXPIRED
// or CREATOR_DISABLED, and 403 for INSUFFICIENT_SCOPE or
// FORBIDDEN_RESOURCE, as keyward's /v1/auth does.
func (r Result) Refusal() int {
	switch r.Code {
	case model.CodeValid:
		return http.StatusOK
	case model.CodeInsufficientScope, model.CodeForbiddenResource:
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// ErrBadSecret: keyward answered 401, the shared secret is missing or
// wrong (keyward secret show). Retrying does not help.
var ErrBadSecret = errors.New("keyward: the shared secret was refused (401); check it with keyward secret show")

// ErrNoKey is returned by Verify for an empty key, without a call.
var ErrNoKey = errors.New("keyward: no key to verify")

// UnavailableError: keyward answered 503. Stale is true when the node has
// lost touch with its etcd cluster (it answers no verification until it
// is current again); otherwise it was at its connection cap. Retry after
// RetryAfter, or on another node.
type UnavailableError struct {
	Stale      bool
	RetryAfter time.Duration
	Detail     string
}

func (e *UnavailableError) Error() string {
	what := "busy"
	if e.Stale {
		what = "stale"
	}
	s := fmt.Sprintf("keyward: node unavailable (503 %s), retry after %s", what, e.RetryAfter)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Temporary reports that retrying later may succeed.
func (e *UnavailableError) Temporary() bool { return true }

// TransportError: no answer from keyward (connection refused or reset, a
// timeout, a cancelled context). Unwrap gives the cause.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return "keyward: " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// StatusError: any other answer than 200, 401 and 503 (400 for a request
// the server refused, 413, …), with the server's message.
type StatusError struct {
	StatusCode int
	Message    string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("keyward: HTTP %d: %s", e.StatusCode, e.Message)
}

// Defaults of New.
const (
	DefaultTimeout = 5 * time.Second
	// MaxResponse bounds the answer read; keyward's are under 1 KiB.
	MaxResponse = 64 << 10
	// MaxKey bounds the key sent: keyward refuses bodies over 64 KiB, and
	// a real key is under 100 bytes.
	MaxKey = 4 << 10
)

// Client calls one keyward server.
type Client struct {
	verifyURL string
	auth      string // "Bearer <secret>"
	hc        *http.Client
	timeout   time.Duration
}

// Option configures New.
type Option func(*Client)

// WithTimeout bounds each call (default DefaultTimeout), on top of the
// context's deadline.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithHTTPClient replaces the tuned http.Client (its own timeouts and
// transport then apply; WithTimeout still bounds each call).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a Client for the keyward at baseURL (http or https, e.g.
// "http://127.0.0.1:8080"), authenticating with the shared secret.
func New(baseURL, secret string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("keyward: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("keyward: base URL %q must be http(s)://host[:port][/prefix]", baseURL)
	}
	if secret == "" || strings.ContainsAny(secret, "\r\n") {
		return nil, errors.New("keyward: the shared secret is empty or not one line")
	}
	c := &Client{
		verifyURL: strings.TrimSuffix(u.String(), "/") + "/v1/keys/verify",
		auth:      "Bearer " + secret,
		timeout:   DefaultTimeout,
	}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: newTransport(), CheckRedirect: noRedirects}
	}
	return c, nil
}

// newTransport keeps connections to keyward open between calls (a pool
// big enough for a busy service) and bounds every phase of a call. Idle
// connections are closed before keyward's own 30 s idle timeout, so a
// call rarely meets a connection the server is closing.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                  nil, // keyward is a neighbour, not something to reach through HTTP_PROXY
		DialContext:            (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:    3 * time.Second,
		ResponseHeaderTimeout:  DefaultTimeout,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        25 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
		ForceAttemptHTTP2:      true,
	}
}

// noRedirects: keyward never redirects; following one would send the
// shared secret elsewhere.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Verify asks keyward whether key may use scope on resource (either may
// be empty: no scope authenticates the key only, see the README). A
// refused key is not an error: it is a Result with Valid false and its
// Code. Errors are ErrNoKey, ErrBadSecret, *UnavailableError,
// *TransportError or *StatusError.
func (c *Client) Verify(ctx context.Context, key, scope, resource string) (Result, error) {
	if key == "" {
		return Result{}, ErrNoKey
	}
	if len(key) > MaxKey {
		return Result{Code: model.CodeMalformed}, nil
	}
	body, err := json.Marshal(struct {
		Key      string `json:"key"`
		Scope    string `json:"scope,omitempty"`
		Resource string `json:"resource,omitempty"`
	}{key, scope, resource})
	if err != nil {
		return Result{}, err
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.verifyURL, bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return Result{}, &TransportError{Err: err}
	}
	defer resp.Body.Close()
	// Read all of a bounded answer (and one byte more, to tell an
	// oversized one), so the connection goes back to the pool.
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return Result{}, &TransportError{Err: err}
	}
	if len(data) > MaxResponse {
		return Result{}, &StatusError{StatusCode: resp.StatusCode, Message: "answer larger than 64 KiB"}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var res Result
		if err := json.Unmarshal(data, &res); err != nil || res.Code == "" {
			return Result{}, &StatusError{StatusCode: resp.StatusCode, Message: "not a verify answer"}
		}
		res.Valid = res.Code == model.CodeValid
		return res, nil
	case http.StatusUnauthorized:
		return Result{}, ErrBadSecret
	case http.StatusServiceUnavailable:
		var e struct{ Error, Detail string }
		_ = json.Unmarshal(data, &e)
		return Result{}, &UnavailableError{Stale: e.Error == "stale", Detail: model.Sanitize(e.Detail), RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	default:
		var e struct{ Error string }
		_ = json.Unmarshal(data, &e)
		msg := e.Error
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return Result{}, &StatusError{StatusCode: resp.StatusCode, Message: model.Sanitize(msg)}
	}
}

// retryAfter parses Retry-After seconds (keyward sends 1 or 5); anything
// else is 1 s, and more than a minute is a minute.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return time.Second
	}
	return time.Duration(min(n, 60)) * time.Second
}
