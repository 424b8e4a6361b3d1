package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
)

// SecretPrefix starts every shared secret.
const SecretPrefix = "kws_"

// The shared secret is stored encrypted with AES-256-GCM under a master key
// that lives in a separate file beside the database (mode 0600), so a copy
// of the database alone (a backup, a stolen file) does not reveal it. Its
// SHA-256 is stored too, so HTTP callers can be checked without decrypting.
type secretRecord struct {
	Nonce     []byte     `json:"nonce"`
	Cipher    []byte     `json:"ciphertext"`
	Sum       []byte     `json:"sha256"`
	Hint      string     `json:"hint"`
	CreatedAt time.Time  `json:"created_at"`
	RotatedAt *time.Time `json:"rotated_at"`
	PrevSum   []byte     `json:"prev_sha256,omitempty"`
	PrevUntil *time.Time `json:"prev_until,omitempty"`
	// KeyCheck identifies the master key the secret is sealed with
	// (masterKeyCheck), so a node holding another key says so before
	// trying to decrypt, and never re-seals under a key other nodes
	// lack. Records written before it have none.
	KeyCheck string `json:"key_check,omitempty"`
}

// SecretMeta is what may be shown without revealing the secret.
type SecretMeta struct {
	Exists    bool       `json:"exists"`
	Hint      string     `json:"hint,omitempty"`
	CreatedAt *time.Time `json:"created_at"`
	RotatedAt *time.Time `json:"rotated_at"`
	// PreviousValidUntil is set during a rotation grace period.
	PreviousValidUntil *time.Time `json:"previous_valid_until,omitempty"`
}

// MasterKeyPath is where the master key for db lives by default (a bbolt
// file; Options.MasterKey overrides it).
func MasterKeyPath(dbPath string) string { return dbPath + ".masterkey" }

// MasterKeyPath is the master key file this store seals the shared secret
// with: Options.MasterKey, else the file beside the database.
func (s *Store) MasterKeyPath() string {
	if s.opts.MasterKey != "" {
		return s.opts.MasterKey
	}
	return MasterKeyPath(s.path)
}

var secretAAD = []byte("keyward shared secret v1")

// masterKeyCheck identifies a master key without revealing it: the first
// 8 bytes of HMAC-SHA256(key, "keyward master key check"), in hex.
func masterKeyCheck(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("keyward master key check"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// MasterKeyMismatchError says this node's master key is not the one the
// shared secret was sealed with: revealing it would fail, and rotating it
// would re-seal it under a key the other nodes lack.
type MasterKeyMismatchError struct {
	Path      string // this node's master key file
	Check     string // its key check ("" if the file is missing)
	SealedFor string // the key check stored with the secret
	Shared    bool   // the store is shared (etcd): other nodes hold the key
}

func (e *MasterKeyMismatchError) Error() string {
	hint := "copy the master key file from another node (--master-key)"
	if !e.Shared {
		hint = "restore the right file, or remove it and run keyward secret rotate to start over"
	}
	if e.Check == "" {
		return fmt.Sprintf("this node has no master key at %s, and the shared secret was sealed with one (key check %s); %s",
			e.Path, e.SealedFor, hint)
	}
	return fmt.Sprintf("this node's master key %s is not the one the shared secret was sealed with (key check %s, secret sealed with %s); %s",
		e.Path, e.Check, e.SealedFor, hint)
}

// checkMasterKey refuses a master key that does not match rec's key
// check. A record without one (written before key checks) passes.
func (s *Store) checkMasterKey(key []byte, rec *secretRecord) error {
	if rec == nil || rec.KeyCheck == "" {
		return nil
	}
	if c := masterKeyCheck(key); !hmac.Equal([]byte(c), []byte(rec.KeyCheck)) {
		return &MasterKeyMismatchError{Path: s.MasterKeyPath(), Check: c, SealedFor: rec.KeyCheck, Shared: s.be.Shared()}
	}
	return nil
}

// sealingKey returns the master key a new secret is sealed with, replacing
// old (nil: none yet). A key that does not match old's key check is
// refused: on etcd the other nodes could no longer reveal the secret. A
// missing file is created (0600), except on etcd when a secret sealed
// with a key exists: that key is on the other nodes; copy it.
func (s *Store) sealingKey(old *secretRecord) ([]byte, error) {
	if old == nil || old.KeyCheck == "" {
		return s.masterKey(true)
	}
	mk, err := s.masterKey(false)
	if errors.Is(err, os.ErrNotExist) {
		if s.be.Shared() {
			return nil, &MasterKeyMismatchError{Path: s.MasterKeyPath(), SealedFor: old.KeyCheck, Shared: true}
		}
		return s.masterKey(true) // one host: rotating starts over with a new key
	}
	if err != nil {
		return nil, err
	}
	if err := s.checkMasterKey(mk, old); err != nil {
		return nil, err
	}
	return mk, nil
}

func (s *Store) masterKey(create bool) ([]byte, error) {
	p := s.MasterKeyPath()
	data, err := ReadSecretFile(p)
	if errors.Is(err, os.ErrNotExist) && create {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		err := CreateSecretFile(p, []byte(hex.EncodeToString(key)+"\n"))
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("creating master key file %s: %w", p, err)
		}
		data, err = ReadSecretFile(p) // created meanwhile: use that one
	}
	if errors.Is(err, ErrUnsafeFile) {
		return nil, fmt.Errorf("master key: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("master key file %s is missing or unreadable (%w); the shared secret cannot be decrypted: rotate it to start over", p, err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("master key file %s is not 64 hex characters", p)
	}
	return key, nil
}

func seal(key, plain []byte) (nonce, ct []byte, err error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, gcm.Seal(nil, nonce, plain, secretAAD), nil
}

func open(key, nonce, ct []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if len(nonce) != gcm.NonceSize() {
		return nil, errors.New("bad nonce")
	}
	return gcm.Open(nil, nonce, ct, secretAAD)
}

func (s *Store) readSecret() (*secretRecord, error) {
	v, err := s.be.Meta(context.Background(), MetaSecret)
	if err != nil {
		return nil, err
	}
	return parseSecret(v)
}

// parseSecret decodes the shared secret's record (nil if there is none).
func parseSecret(v []byte) (*secretRecord, error) {
	if v == nil {
		return nil, nil
	}
	var rec secretRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("shared secret record: %w", err)
	}
	return &rec, nil
}

func (s *Store) loadSecretSums(v []byte) error {
	rec, err := parseSecret(v)
	if err != nil || rec == nil {
		return err
	}
	s.applySecret(rec)
	return nil
}

// applySecret sets the in-memory sums; caller holds s.mu (or is loading).
func (s *Store) applySecret(rec *secretRecord) {
	copy(s.secretSum[:], rec.Sum)
	s.prevSum, s.prevUntil = [32]byte{}, time.Time{}
	if rec.PrevUntil != nil && len(rec.PrevSum) == 32 {
		copy(s.prevSum[:], rec.PrevSum)
		s.prevUntil = *rec.PrevUntil
	}
}

func metaOf(rec *secretRecord) SecretMeta {
	if rec == nil {
		return SecretMeta{}
	}
	ca := rec.CreatedAt
	return SecretMeta{Exists: true, Hint: rec.Hint, CreatedAt: &ca, RotatedAt: rec.RotatedAt, PreviousValidUntil: rec.PrevUntil}
}

// SecretInfo returns the shared secret's metadata; any operator may see it.
func (s *Store) SecretInfo() (SecretMeta, error) {
	rec, err := s.readSecret()
	return metaOf(rec), err
}

// newSecret writes a fresh secret (keeping the old one's hash for grace).
func (s *Store) newSecret(t *txn, old *secretRecord, grace time.Duration) (string, *secretRecord, error) {
	mk, err := s.sealingKey(old)
	if err != nil {
		return "", nil, err
	}
	body, err := model.RandomBase62(32, 43)
	if err != nil {
		return "", nil, err
	}
	secret := SecretPrefix + body
	nonce, ct, err := seal(mk, []byte(secret))
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256([]byte(secret))
	rec := &secretRecord{Nonce: nonce, Cipher: ct, Sum: sum[:], Hint: secret[:len(SecretPrefix)+4], CreatedAt: t.now,
		KeyCheck: masterKeyCheck(mk)}
	if old != nil {
		rec.CreatedAt = old.CreatedAt
		now := t.now
		rec.RotatedAt = &now
		if grace > 0 {
			until := t.now.Add(grace)
			rec.PrevSum, rec.PrevUntil = old.Sum, &until
		}
	}
	data, _ := json.Marshal(rec)
	t.setMeta(MetaSecret, data)
	t.after = append(t.after, func() { s.applySecret(rec) })
	t.changes = append(t.changes, Change{Kind: SecretChanged})
	return secret, rec, nil
}

// RevealSecret returns the shared secret in plaintext, generating it on
// first use. Only an active ADMIN may; the reveal is audited.
func (s *Store) RevealSecret(actor string) (string, SecretMeta, error) {
	var secret string
	var meta SecretMeta
	err := s.write(actor, func(t *txn) error {
		rec, err := s.readSecret()
		if err != nil {
			return err
		}
		if rec == nil {
			if secret, rec, err = s.newSecret(t, nil, 0); err != nil {
				return err
			}
			meta = metaOf(rec)
			return t.audit(model.ActSecretRotate, "secret", "generated on first use, "+rec.Hint+"…")
		}
		mk, err := s.masterKey(false)
		if errors.Is(err, os.ErrNotExist) && rec.KeyCheck != "" && s.be.Shared() {
			return &MasterKeyMismatchError{Path: s.MasterKeyPath(), SealedFor: rec.KeyCheck, Shared: true}
		}
		if err != nil {
			return err
		}
		if err := s.checkMasterKey(mk, rec); err != nil {
			return err
		}
		plain, err := open(mk, rec.Nonce, rec.Cipher)
		if err != nil {
			return fmt.Errorf("shared secret does not decrypt with %s: the master key file does not belong to this database", s.MasterKeyPath())
		}
		secret, meta = string(plain), metaOf(rec)
		return t.audit(model.ActSecretReveal, "secret", "revealed "+rec.Hint+"…")
	})
	return secret, meta, err
}

// RotateSecret replaces the shared secret. With grace > 0 the previous one
// keeps authenticating HTTP callers until then.
func (s *Store) RotateSecret(actor string, grace time.Duration) (string, SecretMeta, error) {
	if err := model.ValidateGrace(grace); err != nil {
		return "", SecretMeta{}, err
	}
	var secret string
	var meta SecretMeta
	err := s.write(actor, func(t *txn) error {
		old, err := s.readSecret()
		if err != nil {
			return err
		}
		var rec *secretRecord
		if secret, rec, err = s.newSecret(t, old, grace); err != nil {
			return err
		}
		meta = metaOf(rec)
		detail := "rotated to " + rec.Hint + "…; previous secret revoked now"
		if rec.PrevUntil != nil {
			detail = "rotated to " + rec.Hint + "…; previous secret valid until " + rec.PrevUntil.Format(time.RFC3339)
		}
		if old == nil {
			detail = "generated " + rec.Hint + "…"
		}
		return t.audit(model.ActSecretRotate, "secret", detail)
	})
	return secret, meta, err
}

// EnsureSecret generates the shared secret if none exists yet (for serve).
func (s *Store) EnsureSecret(actor string) error {
	if meta, err := s.SecretInfo(); err != nil || meta.Exists {
		return err
	}
	_, _, err := s.RotateSecret(actor, 0)
	return err
}

// CheckSharedSecret reports, in constant time, whether presented is the
// shared secret (or the previous one during a rotation grace).
func (s *Store) CheckSharedSecret(presented string) bool {
	var buf [128]byte // []byte(presented) of a real secret would allocate on every request
	var sum [32]byte
	if len(presented) <= len(buf) {
		sum = sha256.Sum256(buf[:copy(buf[:], presented)])
	} else {
		sum = sha256.Sum256([]byte(presented))
	}
	s.mu.RLock()
	cur, prev, until := s.secretSum, s.prevSum, s.prevUntil
	s.mu.RUnlock()
	var zero [32]byte
	ok := subtle.ConstantTimeCompare(sum[:], cur[:]) & ^subtle.ConstantTimeCompare(cur[:], zero[:]) & 1
	okPrev := subtle.ConstantTimeCompare(sum[:], prev[:])
	if okPrev == 1 && (prev == zero || !s.now().Before(until)) {
		okPrev = 0
	}
	return ok|okPrev == 1
}
