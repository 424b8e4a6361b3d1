package server

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyward/keyward/store"
)

// HTTPTLS serves the HTTP side over TLS (Config.TLS): a certificate
// chain and its private key, both PEM, reloaded without a restart on
// SIGHUP and when either file changes (polled every PollInterval). A
// reload that fails (a half-written pair, a key that does not match, an
// expired certificate) keeps the certificate in use and logs why.
//
// The key file is read like every secret file of keyward
// (store.ReadSecretFile): not through a symbolic link, a regular file
// owned by this user, readable by nobody else, at most 64 KiB. The
// certificate is public: it may be a symbolic link (certbot's live/
// layout), but must lead to a regular file of at most maxCertFile bytes.
type HTTPTLS struct {
	CertFile, KeyFile string
	// PollInterval is how often both files are checked for a change
	// (identity, size, modification time); 0: DefaultTLSPoll; negative:
	// never (SIGHUP only).
	PollInterval time.Duration
}

// DefaultTLSPoll is how often the certificate files are checked when
// HTTPTLS.PollInterval is 0. A stat of two files every few seconds costs
// nothing; SIGHUP reloads at once.
const DefaultTLSPoll = 5 * time.Second

// maxCertFile bounds the certificate file: a chain of a few certificates
// is a few KiB.
const maxCertFile = 1 << 20

func (t HTTPTLS) enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

func (t HTTPTLS) check() error {
	switch {
	case t.CertFile == "" && t.KeyFile != "":
		return errors.New("a TLS key without a certificate: give both --http-tls-cert and --http-tls-key")
	case t.CertFile != "" && t.KeyFile == "":
		return errors.New("a TLS certificate without a key: give both --http-tls-cert and --http-tls-key")
	}
	return nil
}

// certReloader holds the certificate the listener presents. Handshakes
// read it through an atomic pointer (tls.Config.GetCertificate), so a
// reload never blocks or fails a handshake: connections that started
// with the old certificate keep it, new handshakes get the new one.
type certReloader struct {
	certPath, keyPath string
	log               *logSink
	cur               atomic.Pointer[tls.Certificate]

	mu   sync.Mutex // one reload at a time; guards seen
	seen pairStamp  // the files as last loaded or tried
}

// pairStamp identifies what is at the two paths, to notice a change
// without reading them.
type pairStamp struct{ cert, key fileStamp }

type fileStamp struct {
	fi    fs.FileInfo // for os.SameFile: a file renamed into place is a new file
	size  int64
	mtime time.Time
}

func (a fileStamp) same(b fileStamp) bool {
	if a.fi == nil || b.fi == nil {
		return a.fi == nil && b.fi == nil
	}
	return os.SameFile(a.fi, b.fi) && a.size == b.size && a.mtime.Equal(b.mtime)
}

func statPair(certPath, keyPath string) pairStamp {
	st := func(p string) fileStamp {
		fi, err := os.Stat(p)
		if err != nil {
			return fileStamp{}
		}
		return fileStamp{fi: fi, size: fi.Size(), mtime: fi.ModTime()}
	}
	return pairStamp{cert: st(certPath), key: st(keyPath)}
}

// newCertReloader loads the pair once; serve does not start without it.
func newCertReloader(t HTTPTLS, log *logSink) (*certReloader, error) {
	r := &certReloader{certPath: t.CertFile, keyPath: t.KeyFile, log: log}
	r.seen = statPair(r.certPath, r.keyPath)
	cert, err := loadPair(r.certPath, r.keyPath, time.Now())
	if err != nil {
		return nil, err
	}
	r.cur.Store(cert)
	logCert(log, "http tls: serving certificate", cert, time.Now())
	return r, nil
}

// reload reads the pair again and, if it is sound, presents it from the
// next handshake on. On failure the certificate in use stays and the
// reason is logged. why says what asked for it (one word: sighup,
// file_change).
func (r *certReloader) reload(why string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = statPair(r.certPath, r.keyPath)
	return r.reloadLocked(why)
}

func (r *certReloader) reloadLocked(why string) error {
	now := time.Now()
	cert, err := loadPair(r.certPath, r.keyPath, now)
	if err != nil {
		r.log.Printf("warning: http tls: reload failed reason=%s, still serving the previous certificate: %s", why, err)
		return err
	}
	r.cur.Store(cert)
	logCert(r.log, "http tls: reloaded reason="+why+", serving certificate", cert, now)
	return nil
}

// poll reloads when either file differs from when it was last loaded or
// tried. A failed try is not repeated until a file changes again (a
// half-written pair is retried when its second half lands), so a broken
// pair costs one log line, not one per poll.
func (r *certReloader) poll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := statPair(r.certPath, r.keyPath)
	if now.cert.same(r.seen.cert) && now.key.same(r.seen.key) {
		return
	}
	r.seen = now
	_ = r.reloadLocked("file_change")
}

// watch reloads on a signal on hup and on a file change until quit
// closes.
func (r *certReloader) watch(every time.Duration, hup <-chan os.Signal, quit <-chan struct{}) {
	if every == 0 {
		every = DefaultTLSPoll
	}
	var tick <-chan time.Time // nil: no polling
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-quit:
			return
		case <-hup:
			_ = r.reload("sighup")
		case <-tick:
			r.poll()
		}
	}
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// tlsConfig is the listener's TLS configuration: TLS 1.2 at least, Go's
// default cipher suites and curves (for TLS 1.2, ECDHE suites only, so
// forward secrecy, AEAD preferred; no RSA key exchange, no 3DES),
// HTTP/1.1 only (see useTLS).
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
		NextProtos:     []string{"http/1.1"},
	}
}

// loadPair reads and checks a certificate chain and its key.
func loadPair(certPath, keyPath string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := readCertFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if fi, err := os.Lstat(keyPath); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		// ReadSecretFile refuses it too, but speaks of the database.
		return nil, fmt.Errorf("key %s: it is a symbolic link; keyward reads a private key only from the file itself (copy it into place, mode 0600)", keyPath)
	}
	keyPEM, err := store.ReadSecretFile(keyPath) // its errors name the path
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		// X509KeyPair's errors name what is wrong (no PEM block, a key
		// that does not match the certificate) and never quote the key.
		return nil, fmt.Errorf("certificate %s and key %s: %w", certPath, keyPath, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", certPath, err)
		}
		cert.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %s expired at %s", certPath, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// readCertFile reads the certificate: a regular file (symbolic links are
// followed: the certificate is public) of at most maxCertFile bytes.
func readCertFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCertFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxCertFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxCertFile)
	}
	return data, nil
}

// logCert logs what a certificate is: its names, validity and the
// leaf's SHA-256 fingerprint (first 16 hex digits), never anything
// secret. The names come from a file: Printf sanitises them.
func logCert(log *logSink, what string, c *tls.Certificate, now time.Time) {
	leaf := c.Leaf
	names := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) > 8 {
		names = append(names[:8], fmt.Sprintf("+%d", len(names)-8))
	}
	sum := sha256.Sum256(leaf.Raw)
	note := ""
	if now.Before(leaf.NotBefore) {
		note = " warning=not_yet_valid"
	}
	log.Printf(what+" subject=%s names=%s not_before=%s not_after=%s sha256=%s"+note, leaf.Subject.CommonName, strings.Join(names, ","),
		leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), hex.EncodeToString(sum[:8]))
}

// useTLS makes srv serve HTTP/1.1 only over TLS with r's certificate.
// HTTP/2 is off: gateways speak HTTP/1.1 to an auth service, and the
// HTTP side's limits (connection cap, idle eviction, header block) are
// defined and tested per HTTP/1.1 connection.
func useTLS(srv *http.Server, r *certReloader) *foldLog {
	srv.TLSConfig = r.tlsConfig()
	fold := newFoldLog(r.log)
	fold.prefix = "http tls"
	srv.ErrorLog = stdlog.New(tlsErrorLog{fold}, "", 0)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	srv.Protocols = p
	return fold
}

// tlsErrorLog is a TLS server's ErrorLog. net/http logs every failed
// handshake ("http: TLS handshake error from ADDR: ERR"): a port scanner or a
// crowd of TLS 1.1 clients would write a line each, so those lines are
// folded (at most logFoldBurst per logFoldEvery, then a count). Other
// lines go to the sink as newStdLogger's do.
type tlsErrorLog struct{ fold *foldLog }

func (w tlsErrorLog) Write(p []byte) (int, error) {
	s := strings.TrimPrefix(strings.TrimRight(string(p), "\n"), "http: ")
	if rest, ok := strings.CutPrefix(s, "TLS handshake error from "); ok {
		addr, why, _ := strings.Cut(rest, ": ")
		w.fold.Printf("tls-handshake", "http tls: handshake failed from=%s err=%s", addr, why)
		return len(p), nil
	}
	return sinkWriter{w.fold.l}.Write([]byte("http: " + s))
}

// tlsSide is the HTTP side's TLS: the certificate, and the watch that
// reloads it while the listener serves.
type tlsSide struct {
	srv   *http.Server
	certs *certReloader
	fold  *foldLog // failed handshakes
	poll  time.Duration
	hup   chan os.Signal
	quit  chan struct{}
	once  sync.Once
}

// listenTLS loads t's pair and sets srv up to serve it (nil, nil when t
// is empty). lim then refuses over-cap connections without a plain-text
// answer a TLS client could not read.
func listenTLS(t HTTPTLS, srv *http.Server, lim *connLimiter, log *logSink) (*tlsSide, error) {
	if !t.enabled() {
		return nil, nil
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	certs, err := newCertReloader(t, log)
	if err != nil {
		return nil, err
	}
	fold := useTLS(srv, certs)
	lim.tls = true
	ts := &tlsSide{srv: srv, certs: certs, fold: fold, poll: t.PollInterval, hup: make(chan os.Signal, 1), quit: make(chan struct{})}
	// From now on, not once serving: a SIGHUP right after "listening"
	// must reload, not end the process (SIGHUP's default action).
	signal.Notify(ts.hup, syscall.SIGHUP)
	return ts, nil
}

// serve runs the reload watch and serves TLS on ln until shutdown.
func (t *tlsSide) serve(ln net.Listener) error {
	go t.certs.watch(t.poll, t.hup, t.quit)
	return t.srv.ServeTLS(ln, "", "")
}

// stop ends the watch and SIGHUP's capture, and logs the count of
// folded handshake failures. Idempotent.
func (t *tlsSide) stop() {
	t.once.Do(func() {
		signal.Stop(t.hup)
		close(t.quit)
		t.fold.flush()
	})
}
