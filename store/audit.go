package store

import (
	"context"

	"github.com/keyward/keyward/model"
)

// AuditFilter narrows Audit.
type AuditFilter struct {
	Target string // key id or operator name; empty for all
	Query  string // case-insensitive substring of actor, action, target or detail
	Limit  int    // newest first; 0 means no limit
}

// Audit returns events newest first.
func (s *Store) Audit(f AuditFilter) ([]model.AuditEvent, error) {
	return s.be.Audit(context.Background(), f)
}
