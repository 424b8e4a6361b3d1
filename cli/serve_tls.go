package cli

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/keyward/keyward/server"
	"github.com/spf13/pflag"
)

// serveTLSLong is the part of serve's --help about TLS and the log
// format (README, "TLS" and "Logs").
const serveTLSLong = `

TLS: --http-tls-cert and --http-tls-key (both, PEM) serve the HTTP side
over TLS (1.2 at least, Go's default ciphers, HTTP/1.1). The key file must
be the file itself (no symbolic link), owned by this user, mode 0600; the
certificate may be a symbolic link. SIGHUP reloads the pair at once, and
a change to either file is picked up within --http-tls-poll (0: SIGHUP
only). Connections already open keep their certificate; a pair that does
not load (half-written, mismatched, expired) is refused, logged, and the
certificate in use stays.

--log-format json writes each log line as a JSON object (log/slog): time,
level, msg (the text line) and its key=value pairs as fields; the same
sanitising and token masking as text.`

// serveTLSFlags are serve's TLS and log-format flags.
type serveTLSFlags struct {
	cert, key string
	poll      time.Duration
	logFormat string
	stderr    io.Writer // the real stderr, for the server's own sink
}

func (f *serveTLSFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.cert, "http-tls-cert", "", "serve HTTPS: the certificate chain (PEM); needs --http-tls-key")
	fl.StringVar(&f.key, "http-tls-key", "", "serve HTTPS: the private key (PEM, mode 0600, not a symlink); needs --http-tls-cert")
	fl.DurationVar(&f.poll, "http-tls-poll", server.DefaultTLSPoll, "reload the TLS pair when its files change, checked this often (0: only on SIGHUP)")
	fl.StringVar(&f.logFormat, "log-format", server.LogText, `log lines as "text" or "json" (one object per line)`)
}

func (f *serveTLSFlags) check(httpAddr string) error {
	if err := server.CheckLogFormat(f.logFormat); err != nil {
		return usageErrorf("--log-format: %s", err)
	}
	if f.cert == "" && f.key == "" {
		return nil
	}
	switch {
	case f.cert == "":
		return usageErrorf("--http-tls-key needs --http-tls-cert")
	case f.key == "":
		return usageErrorf("--http-tls-cert needs --http-tls-key")
	case httpAddr == "":
		return usageErrorf("--http-tls-cert and --http-tls-key need the HTTP side (--http is off)")
	case f.poll < 0:
		return usageErrorf("--http-tls-poll must be 0 (SIGHUP only) or more")
	}
	return nil
}

// apply puts the flags into the server's config.
func (f *serveTLSFlags) apply(cfg *server.Config) {
	cfg.LogFormat = f.logFormat
	if f.stderr != nil {
		cfg.Log = f.stderr // the sink writes JSON itself
	}
	if f.cert == "" {
		return
	}
	cfg.TLS = server.HTTPTLS{CertFile: f.cert, KeyFile: f.key, PollInterval: f.poll}
	if f.poll == 0 {
		cfg.TLS.PollInterval = -1 // never
	}
}

// jsonStderr runs serve with the command's own stderr lines (warnings
// from opening the store, the error serve ends with) written as JSON
// records too, when --log-format json: stderr then carries JSON only.
func (f *serveTLSFlags) jsonStderr(a *app, serve func() error) error {
	if f.logFormat != server.LogJSON {
		return serve()
	}
	f.stderr = a.stderr
	jw := server.NewJSONLogWriter(a.stderr)
	a.stderr = jw
	defer func() { a.stderr = f.stderr }()
	err := serve()
	if err == nil {
		return nil
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	fmt.Fprintln(jw, "error: "+err.Error())
	return &exitError{code: code} // reported; run prints nothing more
}
