package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"strings"

	"github.com/keyward/keyward/model"
)

// bootstrap creates a new database: its schema, the catalog and its
// first ADMIN operator (opts.Bootstrap, or the local OS user), in one
// commit.
func (s *Store) bootstrap() error {
	if s.readOnly {
		return s.readOnlyError()
	}
	var cat model.Catalog
	if len(s.opts.DefaultCatalog) > 0 {
		var err error
		if cat, err = model.ParseCatalog(s.opts.DefaultCatalog); err != nil {
			return fmt.Errorf("default catalog: %w", err)
		}
	}
	boot := s.opts.Bootstrap
	if boot == "" {
		boot = LocalOperatorName()
	}
	if err := model.ValidateOperatorName(boot); err != nil {
		return fmt.Errorf("bootstrap operator: %w", err)
	}
	now := s.now().UTC()
	cb, _ := json.Marshal(cat)
	id, err := model.NewOperatorID()
	if err != nil {
		return err
	}
	op := &model.Operator{ID: id, Name: boot, Role: model.OperatorAdmin, CreatedAt: now, CreatedBy: "bootstrap"}
	_, err = s.be.Commit(context.Background(), &Write{
		InitAt:    now,
		Meta:      map[MetaName][]byte{MetaCatalog: cb},
		Operators: []OperatorPut{{Name: boot, New: op}},
		Audit: []model.AuditEvent{{Time: now, Actor: "bootstrap", Action: model.ActOperatorAdd, Target: boot,
			Detail: "first ADMIN operator of a new database (local OS user)"}},
	})
	return err
}

// LocalOperatorName turns the local OS user into a valid operator name.
func LocalOperatorName() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	name = strings.ToLower(name)
	var b strings.Builder
	for i, c := range name {
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '.' || c == '_' || c == '-'))
		if ok {
			b.WriteRune(c)
		} else if b.Len() > 0 {
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > 32 {
		out = out[:32]
	}
	if out == "" {
		out = "admin"
	}
	return out
}
