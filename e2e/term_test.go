package e2e

import "github.com/keyward/keyward/internal/testkit"

// Keys as a terminal sends them.
const (
	keyEnter = testkit.KeyEnter
	keyUp    = testkit.KeyUp
	keyEsc   = testkit.KeyEsc
)
