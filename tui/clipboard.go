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

// oscBlank is the OSC 52 payload a clear sends: one space. An empty
// payload clears the clipboard in xterm, kitty and ghostty, but tmux
// ignores it (its maintainer will not let a program delete paste
// buffers), so the secret stayed on tmux's clipboard while we said it
// was cleared. A space replaces the secret everywhere: tmux makes it the
// newest paste buffer and passes it on to the outer terminal. tmux keeps
// the older buffer in its list, and no terminal confirms an OSC 52, so a
// clear is reported as sent, never as done.
const oscBlank = "IA==" // base64 of " "

// Clear overwrites the clipboard with a blank: the terminal cannot tell
// us what it holds, so this is unconditional.
func (o *osc52Clipboard) Clear(string) error { return o.write(oscBlank) }
func (o *osc52Clipboard) clearIfSum([32]byte) (clearResult, error) {
	return clearSent, o.write(oscBlank)
}
func (o *osc52Clipboard) Name() string { return "OSC 52 (terminal clipboard)" }

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
	_, err := n.clearIfSum(sha256.Sum256([]byte(text)))
	return err
}

// clearIfSum empties the system clipboard only if it still holds the text
// whose SHA-256 is sum, so we never wipe something the admin copied since,
// and reads it back to know that it worked.
func (n *nativeClipboard) clearIfSum(sum [32]byte) (clearResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fellBack {
		return n.osc.clearIfSum(sum)
	}
	cur, err := clipboard.ReadAll()
	if err != nil {
		return 0, errors.New("could not read the clipboard to clear it: it may still hold the secret")
	}
	if sha256.Sum256([]byte(cur)) != sum {
		return clearNotOurs, nil
	}
	if err := clipboard.WriteAll(""); err != nil {
		return 0, errors.New("could not clear the clipboard: it still holds the secret")
	}
	if cur, err := clipboard.ReadAll(); err != nil || sha256.Sum256([]byte(cur)) == sum {
		return 0, errors.New("the clipboard still holds the secret after clearing it")
	}
	return clearDone, nil
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
// holding only its hash, and says what the clear achieved.
type sumClearer interface {
	clearIfSum([32]byte) (clearResult, error)
}

// clearResult is what a clear achieved, as far as can be known.
type clearResult int

const (
	clearSent    clearResult = iota + 1 // OSC 52: a blank was written; no terminal confirms it
	clearDone                           // system clipboard: emptied, and read back so
	clearNotOurs                        // system clipboard: it held something else; left alone
)

// message is the status-bar sentence for r: only what is known.
func (r clearResult) message() string {
	switch r {
	case clearDone:
		return "Clipboard cleared (30 s passed; checked)."
	case clearNotOurs:
		return "Clipboard left alone: it no longer held the secret."
	}
	return "Sent a blank over the clipboard (OSC 52; terminals do not confirm it)."
}

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
