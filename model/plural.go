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
