package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyward/keyward/model"
)

// Export reads the file in one read transaction: the creation time, the
// keys in id order (their hashes from the hash bucket, read first into a
// map by id), the operators, the metadata and the audit log oldest first.
func (b *boltBackend) Export(ctx context.Context, x ExportSink) (Rev, error) {
	var rev Rev
	err := b.db.View(func(tx *bolt.Tx) error {
		rev = Rev(tx.ID())
		if _, fresh, err := readSchema(tx, b.path); err != nil {
			return err
		} else if fresh {
			return errors.New("export: the database is empty")
		}
		if err := checkBuckets(tx, b.path, allBuckets); err != nil {
			return err
		}
		meta := tx.Bucket(bMeta)
		if v := meta.Get(kCreated); v != nil {
			at, err := time.Parse(time.RFC3339Nano, string(v))
			if err != nil {
				return fmt.Errorf("%s: created_at: %w", b.path, errCorruptRecord)
			}
			if err := x.Created(at); err != nil {
				return err
			}
		}
		hashes := map[string]KeyHashes{}
		err := tx.Bucket(bHashes).ForEach(func(h, v []byte) error {
			ref, err := decodeHashRef(v)
			if err != nil || len(h) != 32 {
				return fmt.Errorf("hash index: %w", errCorruptRecord)
			}
			kh := hashes[ref.id]
			if ref.previous {
				copy(kh.Prev[:], h)
				kh.HasPrev = true
			} else {
				copy(kh.Cur[:], h)
			}
			hashes[ref.id] = kh
			return nil
		})
		if err != nil {
			return err
		}
		lb := tx.Bucket(bLastUsed)
		err = tx.Bucket(bKeys).ForEach(func(id, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			k, err := decodeKey(v, nil)
			if err != nil {
				return fmt.Errorf("key %q: %w", model.Sanitize(string(id)), err)
			}
			var lu *LastUsedRec
			if at, from, err := decodeLastUsed(lb.Get(id)); err == nil {
				lu = &LastUsedRec{ID: k.ID, At: at, From: from}
				t := time.Unix(0, at).UTC()
				k.LastUsedAt, k.LastUsedFrom = &t, from
			}
			return x.Key(k, hashes[string(id)], lu)
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bOperators).ForEach(func(k, v []byte) error {
			var op model.Operator
			if err := json.Unmarshal(v, &op); err != nil {
				return fmt.Errorf("operator %q: %w", model.Sanitize(string(k)), err)
			}
			return x.Operator(op)
		})
		if err != nil {
			return err
		}
		for _, name := range []MetaName{MetaCatalog, MetaSecret} {
			if v := meta.Get(metaKeys[name]); v != nil {
				if err := x.Meta(name, bytes.Clone(v)); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bAudit).ForEach(func(k, v []byte) error {
			var ev model.AuditEvent
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("audit record %x: %w", k, errCorruptRecord)
			}
			return x.Audit(ev)
		})
	})
	return rev, err
}

// Restore writes src's export into this file, which must hold no
// database yet, in one transaction: all or nothing. Records go in sorted
// per bucket (see putBulk); audit events keep their Seq while it
// increases (an etcd export's does), else they are numbered on.
func (b *boltBackend) Restore(ctx context.Context, src Backend) error {
	err := b.db.Update(func(tx *bolt.Tx) error {
		if _, fresh, err := readSchema(tx, b.path); err != nil {
			return err
		} else if !fresh {
			return fmt.Errorf("restore: %s already holds a database; a restore only writes into a new file", b.path)
		}
		for _, bk := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(bk); err != nil {
				return err
			}
		}
		kb, lb, ab := tx.Bucket(bKeys), tx.Bucket(bLastUsed), tx.Bucket(bAudit)
		kb.FillPercent, lb.FillPercent, ab.FillPercent = 0.9, 0.9, 1
		type hashPut struct {
			h   [32]byte
			ref []byte
		}
		var hashes []hashPut
		var names []foldedName
		var auditIdx [][]byte
		var ops []model.Operator
		created := time.Now().UTC()
		var seq uint64
		n := 0
		x := ExportSink{
			Created: func(at time.Time) error { created = at; return nil },
			Key: func(k *model.Key, h KeyHashes, lu *LastUsedRec) error {
				// Keys arrive in id order: appended, as putBulk does.
				if err := kb.Put([]byte(k.ID), encodeKey(k)); err != nil {
					return err
				}
				if lu != nil {
					if err := lb.Put([]byte(k.ID), encodeLastUsed(lu.At, lu.From)); err != nil {
						return err
					}
				}
				hashes = append(hashes, hashPut{h.Cur, encodeHashRef(hashRef{id: k.ID})})
				if h.HasPrev {
					hashes = append(hashes, hashPut{h.Prev, encodeHashRef(hashRef{id: k.ID, previous: true})})
				}
				names = append(names, foldedName{foldName(k.Name), k.ID})
				n++
				return nil
			},
			Operator: func(op model.Operator) error { ops = append(ops, op); return nil },
			Meta: func(name MetaName, v []byte) error {
				mk, ok := metaKeys[name]
				if !ok {
					return fmt.Errorf("restore: unknown metadata record %q", model.Sanitize(string(name)))
				}
				return tx.Bucket(bMeta).Put(mk, v)
			},
			Audit: func(ev model.AuditEvent) error {
				if ev.Seq <= seq {
					ev.Seq = seq + 1
				}
				seq = ev.Seq
				ev.Actor, ev.Detail = model.Sanitize(ev.Actor), model.Sanitize(ev.Detail)
				data, err := json.Marshal(ev)
				if err != nil {
					return err
				}
				if err := ab.Put(u64(seq), data); err != nil {
					return err
				}
				if ev.Target != "" {
					auditIdx = append(auditIdx, append([]byte(ev.Target+"\x00"), u64(seq)...))
				}
				return nil
			},
		}
		if _, err := src.Export(ctx, x); err != nil {
			return err
		}
		if err := ab.SetSequence(seq); err != nil {
			return err
		}
		slices.SortFunc(hashes, func(a, b hashPut) int { return bytes.Compare(a.h[:], b.h[:]) })
		hb := tx.Bucket(bHashes)
		hb.FillPercent = 0.9
		for _, h := range hashes {
			if err := hb.Put(h.h[:], h.ref); err != nil {
				return err
			}
		}
		if err := checkUniqueNames(names); err != nil {
			return err
		}
		if err := putNames(tx.Bucket(bNames), names, 0.9); err != nil {
			return err
		}
		if err := putSortedIndex(tx.Bucket(bAuditKey), auditIdx); err != nil {
			return err
		}
		ob := tx.Bucket(bOperators)
		for _, op := range ops {
			data, err := json.Marshal(op)
			if err != nil {
				return err
			}
			if err := ob.Put([]byte(op.Name), data); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		if err := meta.Put(kSchema, fmt.Appendf(nil, "%d", SchemaVersion)); err != nil {
			return err
		}
		if err := meta.Put(kKeyCount, u64(uint64(n))); err != nil {
			return err
		}
		return meta.Put(kCreated, []byte(created.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return err
	}
	b.fresh = false
	return nil
}

// checkUniqueNames refuses two keys whose names fold alike.
func checkUniqueNames(names []foldedName) error {
	seen := make(map[string]string, len(names))
	for _, n := range names {
		if other, dup := seen[n.folded]; dup {
			return fmt.Errorf("restore: keys %s and %s: %w", other, n.id, nameTaken(n.folded, other))
		}
		seen[n.folded] = n.id
	}
	return nil
}
