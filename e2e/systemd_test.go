package e2e

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestSystemdUnitFlags: every flag the shipped unit's ExecStart passes is
// one keyward accepts (systemd-analyze in CI checks the unit's own keys,
// not keyward's flags). The command line is parsed with --help added, so
// nothing is opened or served.
func TestSystemdUnitFlags(t *testing.T) {
	f, err := os.Open("../docs/systemd/keyward.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var exec string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			exec = v
		}
	}
	fields := strings.Fields(exec)
	if len(fields) < 2 || !strings.HasSuffix(fields[0], "/keyward") {
		t.Fatalf("no keyward ExecStart in the unit: %q", exec)
	}
	args := make([]string, 0, len(fields))
	for _, a := range fields[1:] {
		args = append(args, strings.ReplaceAll(a, "%S", t.TempDir())) // systemd's state directory
	}
	e := newEnv(t)
	r := e.runBinary(nil, append(args, "--help")...)
	if r.Code != 0 {
		t.Fatalf("the unit's command line is refused: %s", r)
	}
	for _, a := range args {
		if name, ok := strings.CutPrefix(a, "--"); ok && !strings.Contains(r.Stdout, "--"+name) {
			t.Errorf("flag --%s of the unit is not in serve's help", name)
		}
	}
}
