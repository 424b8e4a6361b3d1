package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	gossh "golang.org/x/crypto/ssh"
)

// loadOrCreateHostKey returns the SSH host key at path, generating an
// ed25519 key there the first time (file 0600, directory 0700). An
// existing key that group or others may read is refused, as sshd does:
// whoever reads it can impersonate the server.
func loadOrCreateHostKey(path string) (gossh.Signer, bool, error) {
	if path == "" {
		return nil, false, errors.New("no SSH host key path configured")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("creating host key directory: %w", err)
	}
	created := false
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = writeNewHostKey(path)
		created = err == nil
		if errors.Is(err, fs.ErrExist) { // another process won the race
			data, err = os.ReadFile(path)
			created = false
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("SSH host key %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("SSH host key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("SSH host key %s has mode %04o; it must be readable only by its owner (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	signer, err := gossh.ParsePrivateKey(data)
	if err != nil {
		return nil, false, fmt.Errorf("SSH host key %s is not a usable private key: %w", path, err)
	}
	return signer, created, nil
}

// writeNewHostKey creates path with a fresh ed25519 key in OpenSSH format
// and returns its bytes. The key is written to a temporary file that is
// then hard-linked into place, so a concurrent reader never sees a half
// written key and two racing starts agree on one key (fs.ErrExist for the
// loser).
func writeNewHostKey(path string) ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "keyward host key")
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(block)
	f, err := os.CreateTemp(filepath.Dir(path), ".hostkey-*") // mode 0600
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		return nil, err
	}
	return data, nil
}
