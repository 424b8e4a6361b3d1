package model

import "strconv"

// Count writes n with the noun in the right number: "1 key", "2 keys",
// "0 keys". many is the plural; "" means one + "s". Every screen, CLI
// message and audit detail that counts something uses it.
func Count(n int, one, many string) string {
	if many == "" {
		many = one + "s"
	}
	if n == 1 || n == -1 {
		return strconv.Itoa(n) + " " + one
	}
	return strconv.Itoa(n) + " " + many
}

// CreatorConsequence says what disabling or deleting operator name does to
// the n keys it created: "1 key created by bob stops verifying
// (CREATOR_DISABLED)", "2 keys … stop …". The one wording for the TUI's
// dialogs, the CLI and the audit log.
func CreatorConsequence(n int, name string) string {
	verb := "stop"
	if n == 1 {
		verb = "stops"
	}
	return Count(n, "key", "") + " created by " + Sanitize(name) + " " + verb + " verifying (CREATOR_DISABLED)"
}
