package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// rawRoundTrip sends one request on c and reads the answer.
func rawRoundTrip(c net.Conn, req string) (int, []byte, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, req); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestHTTPHeaderLimit: the request line and headers may total exactly
// HTTPMaxHeaderBlock (16 KiB, as documented) bytes; one byte more is 431.
// net/http alone allowed MaxHeaderBytes + 4096 (issue 11, finding 9(a)).
func TestHTTPHeaderLimit(t *testing.T) {
	env := newEnv(t)
	srv := env.serve(Config{SSHAddr: "-"})
	_, tok := env.createKey(model.KeySpec{Name: "k"})
	auth := "Bearer " + env.secret()
	// pad builds a request whose head (through the blank line) is size bytes.
	pad := func(head string, size int) string {
		const name = "X-Pad: "
		n := size - len(head) - len(name) - 2 - 2
		return head + name + strings.Repeat("a", n) + "\r\n\r\n"
	}
	send := func(req string) int {
		c, err := net.Dial("tcp", srv.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		code, _, err := rawRoundTrip(c, req)
		if err != nil {
			t.Fatalf("request of %d bytes: %v", len(req), err)
		}
		return code
	}
	get := "GET /healthz HTTP/1.1\r\nHost: x\r\n"
	if req := pad(get, HTTPMaxHeaderBlock); len(req) != 16384 || send(req) != 200 {
		t.Errorf("GET with a 16384-byte head: want 200")
	}
	if code := send(pad(get, HTTPMaxHeaderBlock+1)); code != 431 {
		t.Errorf("GET with a 16385-byte head: %d, want 431", code)
	}
	if code := send(pad(get, HTTPMaxHeaderBlock+4096)); code != 431 {
		t.Errorf("GET with a 20480-byte head: %d, want 431", code)
	}
	body := `{"key":"` + tok + `"}`
	post := "POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
	if code := send(pad(post, HTTPMaxHeaderBlock) + body); code != 200 {
		t.Errorf("verify with a 16384-byte head and its body in the same write: %d, want 200", code)
	}
	if code := send(pad(post, HTTPMaxHeaderBlock+1) + body); code != 431 {
		t.Errorf("verify with a 16385-byte head: %d, want 431", code)
	}
}

// TestHTTPRequireScope: without RequireScope a verify without a scope is
// VALID for a key of any role (authentication only, as documented); with
// it, such a verify is 400 and a scoped one is decided as before (issue
// 11, finding 9(c)).
func TestHTTPRequireScope(t *testing.T) {
	for _, require := range []bool{false, true} {
		t.Run(fmt.Sprintf("require=%v", require), func(t *testing.T) {
			env := newEnv(t)
			srv := env.serve(Config{SSHAddr: "-", RequireScope: require})
			c := newHTTPClient(t, srv)
			secret := env.secret()
			_, tok := env.createKey(model.KeySpec{Name: "ro", Role: model.RoleReadonly, Scopes: []string{"coupons:read"}})
			body, _ := json.Marshal(map[string]string{"key": tok})
			code, _, b := c.do("POST", "/v1/keys/verify", "Bearer "+secret, bytes.NewReader(body))
			switch {
			case !require && (code != 200 || !bytes.Contains(b, []byte(`"code":"VALID"`))):
				t.Errorf("no scope, not required: %d %s; want 200 VALID (authentication only)", code, b)
			case require && (code != 400 || !bytes.Contains(b, []byte(`\"scope\" is required`))):
				t.Errorf("no scope, required: %d %s; want 400 naming scope", code, b)
			}
			if res := c.verify(secret, tok, "coupons:read", ""); res.Code != model.CodeValid {
				t.Errorf("scoped: %+v", res)
			}
			if res := c.verify(secret, tok, "coupons:write", ""); res.Code != model.CodeInsufficientScope {
				t.Errorf("wrong scope: %+v", res)
			}
		})
	}
}
