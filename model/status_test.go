package model

import (
	"testing"
	"time"
)

// TestStatusOfSaysWhatVerifyAnswers walks every combination of stored
// status, expiry and creator account and checks that the displayed status
// names the code verification gives the key (asked for no scope), so no
// screen shows ACTIVE for a key verify refuses (issue 12.3: a disabled or
// deleted creator used to show ACTIVE).
func TestStatusOfSaysWhatVerifyAnswers(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	created := now.Add(-30 * 24 * time.Hour)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	expiries := map[string]*time.Time{
		"never": nil, "far": at(100 * 24 * time.Hour), "soon": at(24 * time.Hour),
		"now": at(0), "past": at(-time.Hour),
	}
	creators := map[string]*Operator{
		"deleted":        nil,
		"active":         {Name: "alice", Role: OperatorAdmin, CreatedAt: created.Add(-time.Hour)},
		"readonly":       {Name: "alice", Role: OperatorReadonly, CreatedAt: created.Add(-time.Hour)},
		"disabled":       {Name: "alice", Role: OperatorAdmin, Disabled: true, CreatedAt: created.Add(-time.Hour)},
		"re-added later": {Name: "alice", Role: OperatorAdmin, CreatedAt: created.Add(time.Hour)},
		"same instant":   {Name: "alice", Role: OperatorAdmin, CreatedAt: created},
	}
	want := map[Code][]DisplayStatus{
		CodeValid:           {ShowActive, ShowExpiring},
		CodeDisabled:        {ShowDisabled},
		CodeExpired:         {ShowExpired},
		CodeCreatorDisabled: {ShowCreatorDisabled},
	}
	for _, status := range []Status{StatusActive, StatusDisabled} {
		for en, exp := range expiries {
			for cn, op := range creators {
				k := &Key{ID: "key_aaaaaaaaaaaa", Role: RoleAdmin, Status: status, CreatedAt: created, CreatedBy: "alice", ExpiresAt: exp}
				got := StatusOf(k, op, now)
				code := Decide(VerifyInput{Key: k, CreatorActive: CreatorActive(op, k.CreatedAt.UnixNano()), Now: now}).Code
				ok := false
				for _, s := range want[code] {
					ok = ok || s == got
				}
				if !ok || got.Verifies() != (code == CodeValid) {
					t.Errorf("%s key, expiry %s, creator %s: shown %s, verify answers %s", status, en, cn, got, code)
				}
			}
		}
	}
	// The creator cases named in the issue, spelled out.
	k := &Key{Status: StatusActive, CreatedAt: created, CreatedBy: "alice", ExpiresAt: expiries["far"]}
	for cn, wantS := range map[string]DisplayStatus{"deleted": ShowCreatorDisabled, "disabled": ShowCreatorDisabled,
		"re-added later": ShowCreatorDisabled, "active": ShowActive, "readonly": ShowActive, "same instant": ShowActive} {
		if got := StatusOf(k, creators[cn], now); got != wantS {
			t.Errorf("creator %s: shown %s, want %s", cn, got, wantS)
		}
	}
	if got := StatusOf(&Key{Status: StatusActive, CreatedAt: created, ExpiresAt: expiries["soon"]}, creators["disabled"], now); got != ShowCreatorDisabled {
		t.Errorf("expiring key of a disabled creator: shown %s, want %s (verify refuses it)", got, ShowCreatorDisabled)
	}
}

// TestUnused: a key is stale from UnusedAfter since its last use, or
// since its creation when never used.
func TestUnused(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	for _, c := range []struct {
		created time.Duration
		used    *time.Time
		want    bool
	}{
		{UnusedAfter, nil, true},
		{UnusedAfter - time.Second, nil, false},
		{2 * UnusedAfter, at(UnusedAfter - time.Second), false},
		{2 * UnusedAfter, at(UnusedAfter), true},
		{time.Hour, at(0), false},
	} {
		k := &Key{CreatedAt: now.Add(-c.created), LastUsedAt: c.used}
		if got := k.Unused(now); got != c.want {
			t.Errorf("created %v ago, used %v: Unused %v, want %v", c.created, c.used, got, c.want)
		}
	}
}
