// Package server is `keyward serve`: the SSH listener (one TUI program per
// session) and the HTTP verification API, both over one open store.
package server

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/keyward/keyward/store"
)

// Config configures Serve.
type Config struct {
	Store *store.Store
	// SSHAddr and HTTPAddr are listen addresses; empty disables that side.
	SSHAddr  string
	HTTPAddr string
	// HostKeyPath is the ed25519 SSH host key, generated once (0600).
	HostKeyPath string
	// IdleTimeout ends idle SSH sessions (0: default 30m).
	IdleTimeout time.Duration
	// Log receives one sanitised line per event; never key material.
	Log io.Writer
	// Ready, if set, is called with the bound addresses once listening.
	Ready func(sshAddr, httpAddr string)
}

// Serve listens until ctx is cancelled, then shuts down gracefully.
func Serve(ctx context.Context, cfg Config) error {
	return errors.New("keyward serve is not built yet")
}
