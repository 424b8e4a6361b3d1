package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// FuzzVerifyBody feeds arbitrary bodies to the verify handler: it must
// never panic and never answer 5xx; a body decodeVerify accepts must get a
// 200 with a well-formed answer, anything else a 400 or 413 JSON error.
func FuzzVerifyBody(f *testing.F) {
	clock := &testkit.Clock{}
	st, err := store.Open(filepath.Join(f.TempDir(), "fuzz.db"), storeOptions(f, clock))
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	secret, _, err := st.RotateSecret(rootOp, 0)
	if err != nil {
		f.Fatal(err)
	}
	_, tok, err := st.CreateKey(rootOp, model.KeySpec{Name: "fuzz", Role: model.RoleEditor, Scopes: []string{"coupons:read"}, Resources: []string{"web-shop"}, Active: true})
	if err != nil {
		f.Fatal(err)
	}
	log := newLogSink(io.Discard)
	defer log.Close()
	api := &httpAPI{st: st, log: log}

	for _, seed := range []string{
		`{"key":"` + tok + `","scope":"coupons:read","resource":"web-shop"}`,
		`{"key":"` + tok + `","scope":"coupons:write"}`,
		`{"key":"kw_x"}`, `{"key":""}`, `{}`, `null`, `[]`, `""`, `{"key":1}`,
		`{"key":"a","key":"b"}`, `{"KEY":"` + tok + `"}`, `{"key":"a"}{}`, `{"key":"a"} `,
		`{"key":"\u0000\u001b[2J"}`, `{"key":"a","extra":true}`, "\xff\xfe{", `{"key":"` + tok + `"`,
		`{"scope":"` + string(bytes.Repeat([]byte("a"), 5000)) + `"}`,
		`{"key":"\ud83d\ude00\ud800x\u0041\/\b\f\n\r\t\"\\"}`, `{"key":"é` + "\xff" + `"}`,
		` {"resource" : "web-shop" , "key" : "` + tok + `" }` + "\r\n", `{"key":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, msg := decodeVerify(body)
		// Differential check: decodeVerify may be stricter than
		// encoding/json in strict mode, never looser, and reads the same.
		want, refErr := refDecode(body)
		if msg == "" && (refErr != nil || got != want) {
			t.Fatalf("decodeVerify accepted %q as %+v; encoding/json: %+v, %v", body, got, want, refErr)
		}
		req := httptest.NewRequest("POST", "/v1/keys/verify", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		res := rec.Result()
		out, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 500 {
			t.Fatalf("status %d for %q: %s", res.StatusCode, body, out)
		}
		switch {
		case len(body) > MaxVerifyBody:
			if res.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("oversize body: status %d", res.StatusCode)
			}
		case msg == "":
			var vr model.VerifyResult
			if res.StatusCode != 200 || json.Unmarshal(out, &vr) != nil || vr.Code == "" {
				t.Fatalf("accepted body %q: status %d %s", body, res.StatusCode, out)
			}
		default:
			var e struct{ Error string }
			if res.StatusCode != 400 || json.Unmarshal(out, &e) != nil || e.Error == "" {
				t.Fatalf("refused body %q: status %d %s", body, res.StatusCode, out)
			}
		}
	})
}

// refDecode is the reference: encoding/json with unknown fields refused
// and nothing allowed after the object.
func refDecode(body []byte) (verifyRequest, error) {
	var req verifyRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, fmt.Errorf("trailing data")
	}
	return req, nil
}

func TestDecodeVerify(t *testing.T) {
	ok := []struct {
		body string
		want verifyRequest
	}{
		{`{"key":"k"}`, verifyRequest{Key: "k"}},
		{` {"resource" : "r" ,"scope":"s", "key" : "k" } ` + "\n", verifyRequest{"k", "s", "r"}},
		{`{"key":"a\u00e9\ud83d\ude00\ud800x\/\"\\\n"}`, verifyRequest{Key: "aé😀\ufffdx/\"\\\n"}},
		{`{"key":"é😀"}`, verifyRequest{Key: "é😀"}},
	}
	for _, c := range ok {
		got, msg := decodeVerify([]byte(c.body))
		if msg != "" || got != c.want {
			t.Errorf("%s: got %+v %q, want %+v", c.body, got, msg, c.want)
		}
		if ref, err := refDecode([]byte(c.body)); err != nil || ref != got {
			t.Errorf("%s: encoding/json reads %+v, %v", c.body, ref, err)
		}
	}
	bad := map[string]string{
		``: "empty", `   `: "empty", `[]`: "JSON object", `"k"`: "JSON object", `null`: "JSON object",
		`{}`: "required", `{"key":""}`: "required", `{"scope":"s"}`: "required",
		`{"key":"k","Key":"x"}`: "unknown field", `{"KEY":"k"}`: "unknown field", `{"key":"k","x":1}`: "unknown field",
		`{"key":"k","key":"j"}`: "twice", `{"key":1}`: "must be a string", `{"key":null}`: "must be a string",
		`{"key":{"a":1}}`: "must be a string", `{"key":"k"}{}`: "after the JSON object", `{"key":"k"} x`: "after the JSON object",
		`{"key":"k"`: "end of input", `{"key":"k`: "end of input", `{"key" "k"}`: "syntax", `{"key":"k",}`: "syntax",
		`{"key":"k\x"}`: "syntax", `{"key":"\u12"}`: "syntax", "{\"key\":\"a\x01\"}": "control character",
		"{\"key\":\"\xff\"}": "UTF-8", `{,}`: "syntax", `{"key":"k";}`: "syntax",
	}
	for body, want := range bad {
		_, msg := decodeVerify([]byte(body))
		if !strings.Contains(msg, want) {
			t.Errorf("%q: message %q, want one containing %q", body, msg, want)
		}
	}
}
