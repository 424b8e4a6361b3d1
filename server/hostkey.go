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

	"github.com/keyward/keyward/store"
)

// loadOrCreateHostKey returns the SSH host key at path, generating an
// ed25519 key there the first time (file 0600, directory 0700). It is read
// and written with the store's rules for files beside the database
// (store.ReadSecretFile, store.CreateSecretFile): never through a symbolic
// link, only a regular file owned by this user, and refused when group or
// others may read it, as sshd does: whoever reads it can impersonate the
// server. warn receives a warning about the directory's mode.
func loadOrCreateHostKey(path string, warn func(string)) (gossh.Signer, bool, error) {
	if path == "" {
		return nil, false, errors.New("no SSH host key path configured")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("creating host key directory: %w", err)
	}
	if w := store.DirWarning(filepath.Dir(path)); w != "" && warn != nil {
		warn("ssh host key: " + w)
	}
	created := false
	data, err := store.ReadSecretFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = newHostKey()
		if err == nil {
			err = store.CreateSecretFile(path, data)
			created = err == nil
		}
		if errors.Is(err, fs.ErrExist) { // another process won the race
			data, err = store.ReadSecretFile(path)
			created = false
		}
	}
	if errors.Is(err, store.ErrUnsafeFile) {
		return nil, false, fmt.Errorf("SSH host key %w", err)
	}
	if err != nil {
		return nil, false, fmt.Errorf("SSH host key %s: %w", path, err)
	}
	signer, err := gossh.ParsePrivateKey(data)
	if err != nil {
		return nil, false, fmt.Errorf("SSH host key %s is not a usable private key: %w", path, err)
	}
	return signer, created, nil
}

// newHostKey returns a fresh ed25519 key in OpenSSH format.
func newHostKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "keyward host key")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}
