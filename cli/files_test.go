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
	e.OK("keys", "list")
	victim := filepath.Join(e.Dir, "victim")
	const content = "someone else's file\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, e.DB+".lock"); err != nil {
		t.Fatal(err)
	}
	r := e.Run("", "keys", "list")
	if r.Code != 1 || !strings.Contains(r.Stderr, e.DB+".lock") || !strings.Contains(r.Stderr, "symbolic link") {
		t.Errorf("keys list with a planted lock symlink: %s", r)
	}
	if b, _ := os.ReadFile(victim); string(b) != content {
		t.Fatalf("the victim was overwritten: %q", b)
	}
	os.Remove(e.DB + ".lock")

	link := filepath.Join(e.Dir, "link.db")
	if err := os.Symlink(e.DB, link); err != nil {
		t.Fatal(err)
	}
	r = e.Run("", "--db", link, "keys", "list")
	if r.Code != 1 || !strings.Contains(r.Stderr, "symbolic link") || !strings.Contains(r.Stderr, "--db "+e.DB) {
		t.Errorf("keys list through a symlinked --db: %s", r)
	}
}

// TestLooseModeWarningsCLI (issue 11.8): a database and data directory
// others can read are used with a warning on stderr; a master key others
// can read is refused when the secret is shown.
func TestLooseModeWarningsCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.OK("secret", "show")
	if r := e.OK("keys", "list"); r.Stderr != "" {
		t.Fatalf("private files gave output on stderr: %s", r)
	}
	dir := filepath.Dir(e.DB)
	mk := e.DB + ".masterkey"
	for p, m := range map[string]os.FileMode{dir: 0o755, e.DB: 0o644, mk: 0o644} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	r := e.OK("keys", "list")
	for _, want := range []string{
		"keyward: warning: directory " + dir + " has mode 0755",
		"keyward: warning: database " + e.DB + " has mode 0644",
		"keyward: warning: master key: " + mk,
	} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks %q: %s", want, r)
		}
	}
	r = e.Run("", "secret", "show")
	if r.Code != 1 || !strings.Contains(r.Stderr, "chmod 600 "+mk) || strings.Contains(r.Stdout, "kws_") {
		t.Errorf("secret show with a 0644 master key: %s", r)
	}
}
