package tui

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"sync"

	"github.com/atotto/clipboard"
)

// OSC52Clipboard returns a Clipboard that sends OSC 52 escape sequences to
// w: the terminal (or tmux with set-clipboard on, or the SSH client's
// terminal when w is the session) puts the text on the admin's own
// clipboard. Over SSH pass the session; locally the program's output.
func OSC52Clipboard(w io.Writer) Clipboard { return &osc52Clipboard{w: w} }

type osc52Clipboard struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *osc52Clipboard) write(payload string) error {
	if o.w == nil {
		return errors.New("no terminal to send the clipboard sequence to")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	// One Write call, so the sequence is not split by the renderer's frames.
	_, err := io.WriteString(o.w, "\x1b]52;c;"+payload+"\x07")
	if err != nil {
		return errors.New("could not write to the terminal")
	}
	return nil
}

func (o *osc52Clipboard) Copy(text string) error {
	return o.write(base64.StdEncoding.EncodeToString([]byte(text)))
}

// Clear sends an empty OSC 52: the terminal cannot tell us what the
// clipboard holds, so this is unconditional.
func (o *osc52Clipboard) Clear(string) error        { return o.write("") }
func (o *osc52Clipboard) clearIfSum([32]byte) error { return o.write("") }
func (o *osc52Clipboard) Name() string              { return "OSC 52 (terminal clipboard)" }

// nativeClipboard uses the system clipboard (atotto), and falls back to
// OSC 52 when no clipboard tool is present or it fails (no X display, for
// example). atotto's own errors never reach the screen.
type nativeClipboard struct {
	mu       sync.Mutex
	osc      *osc52Clipboard
	fellBack bool
}

func newNativeClipboard(out io.Writer) *nativeClipboard {
	return &nativeClipboard{osc: &osc52Clipboard{w: out}}
}

func (n *nativeClipboard) Copy(text string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !clipboard.Unsupported {
		if err := clipboard.WriteAll(text); err == nil {
			n.fellBack = false
			return nil
		}
	}
	n.fellBack = true
	if err := n.osc.Copy(text); err != nil {
		return errors.New("no clipboard is available here; select the text with the mouse instead")
	}
	return nil
}

func (n *nativeClipboard) Clear(text string) error {
	return n.clearIfSum(sha256.Sum256([]byte(text)))
}

// clearIfSum empties the system clipboard only if it still holds the text
// whose SHA-256 is sum, so we never wipe something the admin copied since.
func (n *nativeClipboard) clearIfSum(sum [32]byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fellBack {
		return n.osc.clearIfSum(sum)
	}
	cur, err := clipboard.ReadAll()
	if err != nil {
		return nil
	}
	if sha256.Sum256([]byte(cur)) == sum {
		if err := clipboard.WriteAll(""); err != nil {
			return errors.New("could not clear the clipboard")
		}
	}
	return nil
}

func (n *nativeClipboard) Name() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fellBack {
		return "OSC 52 (no clipboard tool found)"
	}
	return "the system clipboard"
}

// sumClearer is implemented by this package's clipboards: it lets the
// 30-second clear run after the reveal screen has forgotten the secret,
// holding only its hash.
type sumClearer interface{ clearIfSum([32]byte) error }

// onSSH reports whether this process runs inside an SSH session, where the
// native clipboard would be the server's, not the admin's.
func onSSH() bool { return os.Getenv("SSH_TTY") != "" || os.Getenv("SSH_CONNECTION") != "" }

// pickClipboard chooses the clipboard for a local run.
func pickClipboard(out io.Writer) Clipboard {
	if onSSH() {
		return OSC52Clipboard(out)
	}
	return newNativeClipboard(out)
}
