package store

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// TestLastUsedSourcesShared: keys verified from the same address point at
// one shared source string (so the string stays in the cache at scale);
// a source with control characters or over 128 bytes is stored cleaned
// and cut.
func TestLastUsedSourcesShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path, Options{Bootstrap: "admin", FlushInterval: time.Hour, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var toks, ids []string
	for _, name := range []string{"a", "b", "c"} {
		k, tok, err := s.CreateKey("admin", model.KeySpec{Name: name, Role: model.RoleAdmin, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		toks, ids = append(toks, tok), append(ids, k.ID)
	}
	for _, tok := range toks[:2] {
		if r := s.Verify(tok, "", "", "10.0.0.7"); r.Code != model.CodeValid {
			t.Fatal(r.Code)
		}
	}
	pa, pb := s.keys[ids[0]].lastFrom.Load(), s.keys[ids[1]].lastFrom.Load()
	if pa == nil || pa != pb || *pa != "10.0.0.7" {
		t.Fatalf("two keys used from 10.0.0.7 hold %p and %p, want one shared string", pa, pb)
	}
	evil := "\x1b]52;c;aGk=\x07" + strings.Repeat("é", 100)
	s.Verify(toks[2], "", "", evil)
	got := *s.keys[ids[2]].lastFrom.Load()
	if got != cleanSource(evil) || len(got) > 128 || strings.ContainsAny(got, "\x1b\x07") {
		t.Fatalf("stored source %q: want it cleaned and at most 128 bytes", got)
	}
}
