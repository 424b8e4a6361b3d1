package cli

import "testing"

func TestServeProcs(t *testing.T) {
	for _, c := range []struct {
		flag      int
		env       string
		cur, want int
	}{
		{0, "", 1, 4},   // 1 CPU: raised to the floor
		{0, "", 2, 4},   // 2 CPUs: raised to the floor
		{0, "", 4, 4},   // at the floor: unchanged
		{0, "", 16, 16}, // more CPUs: unchanged
		{0, "2", 2, 2},  // GOMAXPROCS in the environment wins over the default
		{3, "2", 2, 3},  // --procs wins over everything
		{1, "", 8, 1},
	} {
		if got := serveProcs(c.flag, c.env, c.cur); got != c.want {
			t.Errorf("serveProcs(%d, %q, %d) = %d, want %d", c.flag, c.env, c.cur, got, c.want)
		}
	}
}
