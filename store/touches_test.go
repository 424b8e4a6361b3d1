package store

import "testing"

// A batch touches a kind when it holds that kind or a Resync.
func TestTouches(t *testing.T) {
	for _, c := range []struct {
		changes []Change
		want    bool
	}{
		{nil, false},
		{[]Change{{Kind: KeyUpdated, ID: "k"}, {Kind: LastUsed}}, false},
		{[]Change{{Kind: KeyUpdated}, {Kind: OperatorsChanged, ID: "bob"}}, true},
		{[]Change{{Kind: Resync}}, true},
	} {
		if got := Touches(c.changes, OperatorsChanged); got != c.want {
			t.Errorf("Touches(%+v) = %v, want %v", c.changes, got, c.want)
		}
	}
}
