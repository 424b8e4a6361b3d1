package store

import "errors"

// Errors callers can test with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("the key was changed by someone else since you loaded it")
	ErrForbidden   = errors.New("permission denied")
	ErrNameTaken   = errors.New("name is already used by another key")
	ErrLocked      = errors.New("database is in use by another keyward process")
	ErrNewerSchema = errors.New("database was written by a newer keyward")
	ErrForeign     = errors.New("file is not a keyward database")
	ErrLastAdmin   = errors.New("that would leave no active ADMIN operator")
	ErrClosed      = errors.New("store is closed")
	// ErrReadOnly: the file (or its file system) is read-only. Open still
	// succeeds, so reads work; every change is refused with this error.
	ErrReadOnly = errors.New("database is read-only: changes are refused")
	// ErrDamaged: the file is a bbolt file but cannot be complete (for
	// example it was truncated). Open refuses it without writing.
	ErrDamaged = errors.New("database file is damaged")
)
