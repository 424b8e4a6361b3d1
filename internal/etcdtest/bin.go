// Package etcdtest runs real etcd clusters for keyward's tests: member
// processes on 127.0.0.1 with data in t.TempDir(), a TCP proxy that can cut
// one client off the way a network partition does, and the etcd binary
// itself, built from the nested module in ./etcd.
//
// Nothing here skips: a missing or broken etcd fails the test (CI sets
// KEYWARD_REQUIRE_ETCD=1 and KEYWARD_ETCD_BIN; without them the binary is
// built on first use and cached per machine).
package etcdtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

// Version is the etcd server the nested module builds.
const Version = "v3.7.3"

// EnvBin names the variable that points at an etcd binary to use instead
// of building one (CI sets it; the 3.4 smoke run points it at Debian's).
const EnvBin = "KEYWARD_ETCD_BIN"

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Bin returns the etcd binary the tests run: $KEYWARD_ETCD_BIN if set (it
// must exist), otherwise the nested module built once per machine into
// os.UserCacheDir()/keyward-etcd/<version>-<source hash>/etcd. Parallel
// test binaries take a file lock there, so only one of them builds. Any
// failure is fatal, never a skip.
func Bin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvBin); p != "" {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("etcdtest: %s=%q: %v", EnvBin, p, err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("etcdtest: %s=%q is not an executable file", EnvBin, p)
		}
		return p
	}
	binOnce.Do(func() { binPath, binErr = buildCached() })
	if binErr != nil {
		t.Fatalf("etcdtest: cannot build etcd from the nested module (set %s to an etcd binary to use one): %v", EnvBin, binErr)
	}
	return binPath
}

// moduleDir is the nested module's directory, found from this source file.
func moduleDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("runtime.Caller failed")
	}
	dir := filepath.Join(filepath.Dir(file), "etcd")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("nested module not found: %w", err)
	}
	return dir, nil
}

// buildCached builds the nested module under a per-machine cache directory
// keyed by the version and a hash of the module's sources, so a version
// bump builds afresh and an unchanged one is reused.
func buildCached() (string, error) {
	mod, err := moduleDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(mod, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "keyward-etcd", Version+"-"+hex.EncodeToString(h.Sum(nil))[:12])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "etcd")

	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	return bin, Build(mod, bin)
}

// Build compiles the nested module in mod to out (through a temporary name
// and a rename, so a reader never sees half a binary).
func Build(mod, out string) error {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			return fmt.Errorf("no go command: %w", err)
		}
	}
	tmp := out + ".tmp"
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = mod
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("go build in %s: %v\n%s", mod, err, b)
	}
	return os.Rename(tmp, out)
}
