package server

import (
	"encoding/base64"
	"fmt"
	"io"
)

// osc52Clipboard copies over SSH by writing an OSC 52 "set clipboard"
// sequence to the session: the admin's terminal (or tmux with
// set-clipboard on) puts the text on *their* clipboard. The server's own
// clipboard is never touched. The text is base64-encoded, so nothing in
// it can break out of the sequence.
type osc52Clipboard struct{ w io.Writer }

// maxOSC52 keeps sequences within what terminals accept (xterm: 100000).
const maxOSC52 = 74994 // base64 of this many bytes is 99992 characters

func (c *osc52Clipboard) Copy(text string) error {
	if len(text) > maxOSC52 {
		return fmt.Errorf("too long to copy over OSC 52 (%d bytes)", len(text))
	}
	if _, err := io.WriteString(c.w, "\x1b]52;c;"+base64.StdEncoding.EncodeToString([]byte(text))+"\a"); err != nil {
		return fmt.Errorf("could not send the copy to your terminal")
	}
	return nil
}

// Clear asks the terminal to empty the clipboard. OSC 52 cannot read it
// back first, so this is unconditional (and terminals may ignore it).
func (c *osc52Clipboard) Clear(string) error {
	if _, err := io.WriteString(c.w, "\x1b]52;c;\a"); err != nil {
		return fmt.Errorf("could not send the clear to your terminal")
	}
	return nil
}

func (c *osc52Clipboard) Name() string { return "OSC 52" }
