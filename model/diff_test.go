package model

import (
	"testing"
	"time"
)

func TestAuditDiff(t *testing.T) {
	t1 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a := &Key{Name: "a", Description: "d", Role: RoleReadonly, Scopes: []string{"x", "y"}, Resources: []string{"r"},
		Status: StatusActive, Hint: "h1"}
	b := a.Clone()
	if got := AuditDiff(a, b); got != "" {
		t.Fatalf("no change: %q", got)
	}
	b.Scopes = []string{"y", "x"} // reordered: a change for DiffKeys, none for the audit
	if got := AuditDiff(a, b); got != "" {
		t.Fatalf("reordered scopes: %q", got)
	}
	if d := DiffKeys(a, b); len(d) != 1 || d[0].Field != FieldScopes {
		t.Fatalf("DiffKeys reordered: %+v", d)
	}
	b.Name, b.Description, b.Role = "b", "e", RoleAdmin
	b.Scopes, b.Resources = []string{"y", "z"}, nil
	b.ExpiresAt, b.Status, b.Hint = &t1, StatusDisabled, "h2"
	want := `name "a" -> "b"; description changed; role READONLY -> ADMIN; scopes +z -x; resources -r; ` +
		`expires never -> 2030-01-02 03:04 UTC; status active -> disabled`
	if got := AuditDiff(a, b); got != want {
		t.Fatalf("AuditDiff:\n got %q\nwant %q", got, want)
	}
	if d := DiffKeys(a, b); len(d) != 8 || d[7].Field != FieldSecret {
		t.Fatalf("DiffKeys: %+v", d)
	}
}
