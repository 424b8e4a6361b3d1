package cli

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// noArgs refuses stray arguments, including unknown subcommands, as a
// usage error.
func (a *app) noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// exactArgs wants the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf("%s needs %s; got %s", cmd.CommandPath(), strings.Join(names, " "), model.Count(len(args), "argument", ""))
		}
		return nil
	}
}

// keyFlags are the editable fields shared by create and edit.
type keyFlags struct {
	name, description, role, expires string
	scopes, resources                []string
}

func (f *keyFlags) register(fs *pflag.FlagSet, roleDefault string) {
	fs.StringVar(&f.name, "name", "", "name, 1-64 printable characters, unique among keys")
	fs.StringVar(&f.description, "description", "", "free-text description (up to 256 characters)")
	fs.StringVar(&f.role, "role", roleDefault, "admin (every scope on every resource), editor or readonly (only :read scopes)")
	fs.StringSliceVar(&f.scopes, "scope", nil, "scope to grant, e.g. coupons:read (repeat or comma-separate)")
	fs.StringSliceVar(&f.resources, "resource", nil, "resource to limit the key to, e.g. web-shop (repeat or comma-separate; none means all)")
	fs.StringVar(&f.expires, "expires", "", `expiry: YYYY-MM-DD (00:00 UTC), an RFC 3339 time, a duration (30d, 90d, 1y) or "never"`)
}

func parseRoleFlag(s string) (model.Role, error) {
	r, err := model.ParseRole(s)
	if err != nil {
		return "", usageErrorf("--role: %v", err)
	}
	return r, nil
}

var relExpiry = regexp.MustCompile(`^([0-9]{1,6})([hdwy])$`)

// parseExpiry turns an --expires value into a time (nil for never).
func parseExpiry(s string, now time.Time) (*time.Time, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "never") {
		return nil, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return &t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		t = t.UTC()
		return &t, nil
	}
	if m := relExpiry.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour}[m[2]]
		if time.Duration(n) > 100*365*24*time.Hour/unit {
			return nil, usageErrorf("--expires: %q is more than 100 years away; use \"never\" instead", s)
		}
		t := now.UTC().Add(time.Duration(n) * unit)
		return &t, nil
	}
	return nil, usageErrorf(`--expires: %q is not a date (YYYY-MM-DD), an RFC 3339 time, a duration such as 30d, 90d or 1y, or "never"`, s)
}

// graceHelp is the rule parseGrace applies, for --help.
const graceHelp = "0 to 30 days: 0, a duration such as 90m, 1h or 24h, or days/weeks such as 7d or 2w"

// parseGrace accepts 0, Go durations (90m, 1h, 24h) and days/weeks (7d,
// 2w), from 0 to 30 days: the TUI's choices (none, 1 h, 24 h, 7 d) are
// examples, not the only values.
func parseGrace(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if m := relExpiry.FindStringSubmatch(s); m != nil && m[2] != "y" {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		d = time.Duration(n) * unit // n < 10^6: no overflow
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, usageErrorf("--grace: %q is not a duration; give %s", s, graceHelp)
		}
	}
	if d < 0 || d > model.MaxGrace {
		return 0, usageErrorf("--grace: %q is out of range; give %s", s, graceHelp)
	}
	return d, nil
}

func parseOperatorRole(s string) (model.OperatorRole, error) {
	r, err := model.ParseOperatorRole(s)
	if err != nil {
		return "", usageErrorf("%v", err)
	}
	return r, nil
}

func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// readInput reads a file, or stdin for "-", refusing more than max bytes.
func (a *app) readInput(path string, max int64) ([]byte, error) {
	r := a.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", displayName(path), err)
	}
	if int64(len(data)) > max {
		return nil, usageErrorf("%s is larger than %d bytes", displayName(path), max)
	}
	return data, nil
}
