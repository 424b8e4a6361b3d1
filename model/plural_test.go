package model

import "testing"

func TestCount(t *testing.T) {
	for _, c := range []struct {
		n         int
		one, many string
		want      string
	}{
		{0, "key", "", "0 keys"}, {1, "key", "", "1 key"}, {2, "key", "", "2 keys"},
		{1, "SSH key", "", "1 SSH key"}, {3, "SSH key", "", "3 SSH keys"},
		{1, "entry", "entries", "1 entry"}, {5, "entry", "entries", "5 entries"},
	} {
		if got := Count(c.n, c.one, c.many); got != c.want {
			t.Errorf("Count(%d, %q, %q) = %q, want %q", c.n, c.one, c.many, got, c.want)
		}
	}
}

// TestCreatorConsequence: one key "stops", several "stop" (the dialog
// said "1 key created by bob stop verifying").
func TestCreatorConsequence(t *testing.T) {
	for n, want := range map[int]string{
		0: "0 keys created by bob stop verifying (CREATOR_DISABLED)",
		1: "1 key created by bob stops verifying (CREATOR_DISABLED)",
		2: "2 keys created by bob stop verifying (CREATOR_DISABLED)",
	} {
		if got := CreatorConsequence(n, "bob"); got != want {
			t.Errorf("CreatorConsequence(%d) = %q, want %q", n, got, want)
		}
	}
}
