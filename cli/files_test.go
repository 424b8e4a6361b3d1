package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Files beside the database and the database path, in process.

// TestPlantedLockSymlinkCLI (issue 11.6): `ln -s victim keyward.db.lock;
// keyward keys list` fails with a clear error and leaves the victim as it
// was; so does a symlinked --db.
func TestPlantedLockSymlinkCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.ok("keys", "list")
	victim := filepath.Join(e.dir, "victim")
	const content = "someone else's file\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, e.db+".lock"); err != nil {
		t.Fatal(err)
	}
	r := e.run("", "keys", "list")
	if r.code != 1 || !strings.Contains(r.stderr, e.db+".lock") || !strings.Contains(r.stderr, "symbolic link") {
		t.Errorf("keys list with a planted lock symlink: %s", r)
	}
	if b, _ := os.ReadFile(victim); string(b) != content {
		t.Fatalf("the victim was overwritten: %q", b)
	}
	os.Remove(e.db + ".lock")

	link := filepath.Join(e.dir, "link.db")
	if err := os.Symlink(e.db, link); err != nil {
		t.Fatal(err)
	}
	r = e.run("", "--db", link, "keys", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "symbolic link") || !strings.Contains(r.stderr, "--db "+e.db) {
		t.Errorf("keys list through a symlinked --db: %s", r)
	}
}

// TestLooseModeWarningsCLI (issue 11.8): a database and data directory
// others can read are used with a warning on stderr; a master key others
// can read is refused when the secret is shown.
func TestLooseModeWarningsCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.ok("secret", "show")
	if r := e.ok("keys", "list"); r.stderr != "" {
		t.Fatalf("private files gave output on stderr: %s", r)
	}
	dir := filepath.Dir(e.db)
	mk := e.db + ".masterkey"
	for p, m := range map[string]os.FileMode{dir: 0o755, e.db: 0o644, mk: 0o644} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	r := e.ok("keys", "list")
	for _, want := range []string{
		"keyward: warning: directory " + dir + " has mode 0755",
		"keyward: warning: database " + e.db + " has mode 0644",
		"keyward: warning: master key: " + mk,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r)
		}
	}
	r = e.run("", "secret", "show")
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 600 "+mk) || strings.Contains(r.stdout, "kws_") {
		t.Errorf("secret show with a 0644 master key: %s", r)
	}
}
