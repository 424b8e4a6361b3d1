package store

import (
	"context"
	"encoding/json"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// appendAudit adds an event in the caller's transaction. Events are keyed
// by a monotonic sequence, and indexed by target for per-key history.
func appendAudit(tx *bolt.Tx, ev model.AuditEvent) error {
	idxKey, err := appendAuditEvent(tx, ev)
	if err != nil || idxKey == nil {
		return err
	}
	idx := tx.Bucket(bAuditKey)
	idx.FillPercent = 0.9
	return idx.Put(idxKey, nil)
}

// appendAuditEvent writes the event itself and returns its target-index
// key (nil without a target) for the caller to insert, so bulk writers can
// insert index keys in sorted order.
func appendAuditEvent(tx *bolt.Tx, ev model.AuditEvent) ([]byte, error) {
	b := tx.Bucket(bAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return nil, err
	}
	ev.Seq = seq
	ev.Actor = model.Sanitize(ev.Actor)
	ev.Detail = model.Sanitize(ev.Detail)
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	if err := b.Put(u64(seq), data); err != nil {
		return nil, err
	}
	if ev.Target == "" {
		return nil, nil
	}
	return append([]byte(ev.Target+"\x00"), u64(seq)...), nil
}

// appendAuditBulk appends a bulk write's events and returns their
// target-index keys, for the caller to insert in sorted order.
func appendAuditBulk(tx *bolt.Tx, evs []model.AuditEvent) ([][]byte, error) {
	tx.Bucket(bAudit).FillPercent = 1 // sequence keys only ever append
	idx := make([][]byte, 0, len(evs))
	for _, ev := range evs {
		ik, err := appendAuditEvent(tx, ev)
		if err != nil {
			return nil, err
		}
		if ik != nil {
			idx = append(idx, ik)
		}
	}
	return idx, nil
}

// Audit reads the audit bucket newest first, or a target's events through
// the per-target index.
func (b *boltBackend) Audit(_ context.Context, f AuditFilter) ([]model.AuditEvent, error) {
	var out []model.AuditEvent
	q := strings.ToLower(f.Query)
	keep := func(ev model.AuditEvent) bool {
		if q == "" {
			return true
		}
		return strings.Contains(strings.ToLower(ev.Actor+" "+ev.Action+" "+ev.Target+" "+ev.Detail), q)
	}
	full := func() bool { return f.Limit > 0 && len(out) >= f.Limit }
	err := b.db.View(func(tx *bolt.Tx) error {
		ab := tx.Bucket(bAudit)
		decode := func(v []byte) error {
			var ev model.AuditEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				return err
			}
			if keep(ev) {
				out = append(out, ev)
			}
			return nil
		}
		if f.Target == "" {
			c := ab.Cursor()
			for k, v := c.Last(); k != nil && !full(); k, v = c.Prev() {
				if err := decode(v); err != nil {
					return err
				}
			}
			return nil
		}
		prefix := []byte(f.Target + "\x00")
		c := tx.Bucket(bAuditKey).Cursor()
		// Seek past the target's last entry, then walk back.
		k, _ := c.Seek(append(append([]byte{}, prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && strings.HasPrefix(string(k), string(prefix)) && !full(); k, _ = c.Prev() {
			if v := ab.Get(k[len(prefix):]); v != nil {
				if err := decode(v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}
