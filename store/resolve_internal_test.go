package store

import (
	"path/filepath"
	"testing"

	"github.com/keyward/keyward/model"
)

func TestKeyIDByName(t *testing.T) {
	st, err := testOpener(t, filepath.Join(t.TempDir(), "k.db"))(Options{Bootstrap: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, ok := st.KeyIDByName("ci-bot"); ok {
		t.Fatal("empty store reports a name as taken")
	}
	k, _, err := st.CreateKey("alice", model.KeySpec{Name: "CI-Bot", Role: model.RoleAdmin, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := st.KeyIDByName("  ci-bot "); !ok || id != k.ID {
		t.Fatalf("KeyIDByName = %q, %v; want %q, true", id, ok, k.ID)
	}
	if err := st.DeleteKey("alice", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.KeyIDByName("ci-bot"); ok {
		t.Fatal("a deleted key's name is still reported as taken")
	}
}
