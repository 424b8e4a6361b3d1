package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TLSCA is a throwaway certificate authority for tests of keyward's TLS
// listener: clients trust Pool, servers get leaves it issues.
type TLSCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	Pool *x509.CertPool
}

var tlsSerial atomic.Int64

func NewTLSCA(t testing.TB) *TLSCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(tlsSerial.Add(1)),
		Subject:               pkix.Name{CommonName: "keyward test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &TLSCA{cert: cert, key: key, Pool: pool}
}

// TLSLeaf is an issued certificate: PEM of the certificate and of its
// key, and its common name (unique per leaf, to tell them apart).
type TLSLeaf struct {
	CertPEM, KeyPEM []byte
	CN              string
}

// Leaf issues a server certificate for 127.0.0.1 and localhost, valid
// from notBefore to notAfter (zero: an hour ago to a day from now).
func (ca *TLSCA) Leaf(t testing.TB, cn string, notBefore, notAfter time.Time) TLSLeaf {
	t.Helper()
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(tlsSerial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return TLSLeaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		CN:      cn,
	}
}

// Write puts the leaf at certPath and keyPath (0600), each replaced
// atomically (a temporary file renamed into place), key first.
func (l TLSLeaf) Write(t testing.TB, certPath, keyPath string) {
	t.Helper()
	WriteFileAtomic(t, keyPath, l.KeyPEM, 0o600)
	WriteFileAtomic(t, certPath, l.CertPEM, 0o644)
}

// WriteFileAtomic replaces path with data (mode) by renaming a temporary
// file into place.
func WriteFileAtomic(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		t.Fatal(err)
	}
}

// TLSClientConfig trusts ca only, for 127.0.0.1.
func (ca *TLSCA) TLSClientConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}
