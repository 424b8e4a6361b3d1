package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
)

// PublicKey is an SSH public key in authorized_keys form, checked for
// structure (type and blob agree) without any crypto dependency.
type PublicKey struct {
	Type    string
	Blob    []byte // the wire-format key, as ssh.PublicKey.Marshal returns
	Comment string
}

var allowedKeyTypes = map[string]bool{
	"ssh-ed25519": true, "ssh-rsa": true,
	"ecdsa-sha2-nistp256": true, "ecdsa-sha2-nistp384": true, "ecdsa-sha2-nistp521": true,
	"sk-ssh-ed25519@openssh.com": true, "sk-ecdsa-sha2-nistp256@openssh.com": true,
}

// MaxPublicKeyLine bounds an authorized_keys line (a 16384-bit RSA key
// is about 2.8 KB).
const MaxPublicKeyLine = 8192

// ParsePublicKey parses one authorized_keys line ("ssh-ed25519 AAAA… comment").
func ParsePublicKey(line string) (PublicKey, error) {
	if len(line) > MaxPublicKeyLine {
		return PublicKey{}, fmt.Errorf("public key line is %d bytes; the limit is %d", len(line), MaxPublicKeyLine)
	}
	fields := strings.Fields(strings.TrimSpace(line))
	if len(fields) < 2 {
		return PublicKey{}, fmt.Errorf("public key must look like \"ssh-ed25519 AAAA... comment\"")
	}
	typ := fields[0]
	if !allowedKeyTypes[typ] {
		return PublicKey{}, fmt.Errorf("unsupported public key type %q", Sanitize(typ))
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return PublicKey{}, fmt.Errorf("public key data is not valid base64")
	}
	if len(blob) < 4 {
		return PublicKey{}, fmt.Errorf("public key data is truncated")
	}
	n := binary.BigEndian.Uint32(blob)
	if int(n) > len(blob)-4 || string(blob[4:4+n]) != typ {
		return PublicKey{}, fmt.Errorf("public key data does not match its type %q", typ)
	}
	if typ == "ssh-ed25519" {
		rest := blob[4+n:]
		if len(rest) != 4+32 || binary.BigEndian.Uint32(rest) != 32 {
			return PublicKey{}, fmt.Errorf("ssh-ed25519 key has the wrong length")
		}
	}
	comment := Sanitize(strings.Join(fields[2:], " "))
	return PublicKey{Type: typ, Blob: blob, Comment: comment}, nil
}

// String returns the canonical authorized_keys line.
func (k PublicKey) String() string {
	s := k.Type + " " + base64.StdEncoding.EncodeToString(k.Blob)
	if k.Comment != "" {
		s += " " + k.Comment
	}
	return s
}

// Fingerprint returns the OpenSSH SHA256 fingerprint ("SHA256:…").
func (k PublicKey) Fingerprint() string { return FingerprintBlob(k.Blob) }

// FingerprintBlob fingerprints a wire-format key.
func FingerprintBlob(blob []byte) string {
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Equal reports whether two keys are the same key material.
func (k PublicKey) Equal(blob []byte) bool { return bytes.Equal(k.Blob, blob) }
