package server

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

// openAPIDoc is the OpenAPI 3.1 document of every HTTP endpoint, served
// at GET /v1/openapi.json. openapi_test.go drives a real server into every
// status it documents and checks each answer against it; CI lints it with
// @redocly/cli.
//
//go:embed openapi.json
var openAPIDoc []byte

var (
	openAPIETag    = []string{`"` + openAPIHash() + `"`}
	hdrNoCache     = []string{"no-cache"}
	openAPILength  = []string{strconv.Itoa(len(openAPIDoc))}
	openAPIMethods = hdrGET
)

func openAPIHash() string {
	sum := sha256.Sum256(openAPIDoc)
	return hex.EncodeToString(sum[:12])
}

// openAPI serves the document, without authentication (it holds no
// secret), with an ETag so a tool that polls it gets 304.
func (a *httpAPI) openAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = openAPIMethods
		a.fail(w, r, http.StatusMethodNotAllowed, "use GET")
		return
	}
	h := w.Header()
	h["Etag"] = openAPIETag
	h["Cache-Control"] = hdrNoCache
	if etagMatch(r.Header.Get("If-None-Match"), openAPIETag[0]) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Type"] = hdrJSON
	h["X-Content-Type-Options"] = hdrNoSniff
	h["Content-Length"] = openAPILength
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(openAPIDoc)
	}
}

// etagMatch reports whether an If-None-Match value names etag (or is *).
func etagMatch(inm, etag string) bool {
	for _, t := range strings.Split(inm, ",") {
		t = strings.TrimSpace(t)
		t = strings.TrimPrefix(t, "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
