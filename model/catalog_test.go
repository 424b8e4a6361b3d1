package model

import (
	"strings"
	"testing"
)

// TestParseCatalogRefusesEmptyAndAmbiguous: an import must never be a
// silent no-op or a guess. null, {}, a catalog without scopes and a field
// named twice in one object (encoding/json would keep the last, matching
// names case-insensitively) are refused with a message.
func TestParseCatalogRefusesEmptyAndAmbiguous(t *testing.T) {
	scope := `{"name":"a:read","description":"d","per_resource":true}`
	for in, want := range map[string]string{
		`null`:            "no scopes",
		`{}`:              "no scopes",
		`{"scopes":null}`: "no scopes",
		`{"scopes":[],"resources":[{"id":"r","name":"R","kind":"property"}]}`:                       "no scopes",
		`{"scopes":[` + scope + `],"scopes":[]}`:                                                    `"scopes" twice`,
		`{"scopes":[` + scope + `],"Scopes":[]}`:                                                    `"Scopes" twice`,
		`{"scopes":[{"name":"a:read","per_resource":true,"per_resource":false}]}`:                   `"per_resource" twice`,
		`{"scopes":[` + scope + `],"resources":[{"id":"r","name":"R","kind":"property","ID":"s"}]}`: `"ID" twice`,
	} {
		_, err := ParseCatalog([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCatalog(%s) = %v, want an error containing %q", in, err, want)
		}
	}
	// Nested objects and arrays with the same field names are fine.
	ok := `{"scopes":[` + scope + `,{"name":"b:read","description":"","per_resource":false}],"resources":[]}`
	if c, err := ParseCatalog([]byte(ok)); err != nil || len(c.Scopes) != 2 {
		t.Fatalf("ParseCatalog(%s) = %+v, %v", ok, c, err)
	}
}
