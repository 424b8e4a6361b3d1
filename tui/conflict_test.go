package tui

import (
	"testing"
	"time"

	"github.com/keyward/keyward/model"
)

// The edit form's conflict banner names what the other writer changed, in
// the words the admin has always seen. Expiries compare to the minute
// shown, so a sub-minute difference is no change to report.
func TestConflictChangesWording(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	base := &model.Key{Name: "a", Description: "d", Role: model.RoleReadonly, Scopes: []string{"x", "y"},
		Resources: []string{"r"}, Status: model.StatusActive, Hint: "h1", ExpiresAt: &at}
	for _, c := range []struct {
		name string
		edit func(k *model.Key)
		want string
	}{
		{"nothing", func(k *model.Key) {}, "changed: last-used only"},
		{"last used", func(k *model.Key) { k.LastUsedAt = &at }, "changed: last-used only"},
		{"expiry within the minute", func(k *model.Key) { e := at.Add(30 * time.Second); k.ExpiresAt = &e }, "changed: last-used only"},
		{"expiry same day", func(k *model.Key) { e := at.Add(time.Hour); k.ExpiresAt = &e }, "changed: expiry is now 2030-01-02"},
		{"expiry removed", func(k *model.Key) { k.ExpiresAt = nil }, "changed: expiry is now never"},
		{"scopes reordered", func(k *model.Key) { k.Scopes = []string{"y", "x"} }, "changed: scopes"},
		{"hostile name", func(k *model.Key) { k.Name = "b\x1b]52;c;x\x07" }, `changed: name is now "b"`},
		{"everything", func(k *model.Key) {
			e := at.AddDate(0, 1, 0)
			k.Name, k.Description, k.Role = "b", "e", model.RoleAdmin
			k.Scopes, k.Resources, k.ExpiresAt = []string{"z"}, nil, &e
			k.Status, k.Hint = model.StatusDisabled, "h2"
		}, `changed: name is now "b", description, role is now ADMIN, scopes, resources, expiry is now 2030-02-02, status is now disabled, secret regenerated`},
	} {
		b := base.Clone()
		c.edit(b)
		if got := conflictChanges(base, b); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}
