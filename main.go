// Command keyward manages API keys from the terminal: a TUI, a scripting
// CLI and a server, all over one bbolt file. The commands live in package
// cli; this is only the process's entry point.
package main

import (
	"os"

	"github.com/keyward/keyward/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
