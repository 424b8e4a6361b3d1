package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keyward/keyward/model"
)

// Export reads everything at one revision R (the meta/ list's): the
// store's creation time, the keys with their hashes and last use (in id
// order), the operators, the metadata, then the audit log oldest first.
// The audit log is read newest first (its key order) and handed out in
// reverse, so it is held in memory meanwhile.
func (b *etcdBackend) Export(ctx context.Context, x ExportSink) (Rev, error) {
	meta, err := b.cli.Get(ctx, b.k("meta/"), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: export: %w", err)
	}
	rev := meta.Header.Revision
	vals := map[string][]byte{}
	for _, kv := range meta.Kvs {
		vals[string(kv.Key[len(b.k("meta/")):])] = kv.Value
	}
	if s, ok := vals["schema"]; ok {
		_, created, err := decodeEtcdSchema(s)
		if err != nil {
			return 0, err
		}
		if err := x.Created(created); err != nil {
			return 0, err
		}
	}
	walk := b.newKeyWalk(ctx, rev)
	for {
		id, v, lu, ok, err := walk.next()
		if err != nil {
			return 0, fmt.Errorf("etcd: export: %w", err)
		}
		if !ok {
			break
		}
		k, h, err := decodeEtcdKey(id, v)
		if err != nil {
			return 0, err
		}
		var rec *LastUsedRec
		if at, from, err := decodeLastUsed(lu); err == nil && at != 0 {
			rec = &LastUsedRec{ID: id, At: at, From: from}
			applyLastUsed(k, lu)
		}
		if err := x.Key(k, h, rec); err != nil {
			return 0, err
		}
	}
	ops, err := decodeEtcdOperators(vals["operators"])
	if err != nil {
		return 0, err
	}
	for _, op := range ops {
		if err := x.Operator(op); err != nil {
			return 0, err
		}
	}
	for _, name := range []MetaName{MetaCatalog, MetaSecret} {
		if v, ok := vals[string(name)]; ok {
			if err := x.Meta(name, v); err != nil {
				return 0, err
			}
		}
	}
	var evs []model.AuditEvent
	p := newPager(ctx, b.cli, b.k("audit/"), rev)
	for {
		kv, err := p.nextKV()
		if err != nil {
			return 0, fmt.Errorf("etcd: export: %w", err)
		}
		if kv == nil {
			break
		}
		ev, err := decodeAuditValue(kv.Key, kv.Value, kv.CreateRevision)
		if err != nil {
			return 0, err
		}
		evs = append(evs, ev)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if err := x.Audit(evs[i]); err != nil {
			return 0, err
		}
	}
	return Rev(rev), nil
}

// Restore copies src into this prefix, which must be empty, in batches
// (not atomic): keys, operators, metadata, the audit log (in its order,
// with its times, actors and details; Seqs are this cluster's), and the
// schema record last, so an interrupted restore leaves no store that
// opens (a prefix with records but no schema is refused) until it is
// cleared and run again.
func (b *etcdBackend) Restore(ctx context.Context, src Backend) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	resp, err := b.cli.Get(ctx, b.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("etcd: restore: %w", err)
	}
	if resp.Count > 0 {
		return fmt.Errorf("etcd: restore: prefix %q holds %d records; a restore only writes into an empty prefix", b.prefix, resp.Count)
	}
	created := time.Now().UTC()
	var t etcdTxn
	var flush func() error
	// room makes sure n more ops fit in t (with the schema's two).
	room := func(n int) error {
		if len(t.ops)+n > etcdMaxOps-2 || t.bytes > etcdMaxTxnBytes/2 {
			return flush()
		}
		return nil
	}
	flush = func() error {
		if len(t.ops) == 0 {
			return nil
		}
		// The first record identifies the batch (see send): it must be
		// absent, so a retry never doubles the batch.
		first := t.ops[0]
		t.identKey, t.identVal = string(first.KeyBytes()), first.ValueBytes()
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(t.identKey), "=", 0))
		t.explain = func(*clientv3.TxnResponse) error {
			return fmt.Errorf("%w (a record of this batch exists: the prefix was written to during the restore)", ErrConflict)
		}
		if err := t.check(); err != nil {
			return err
		}
		if _, err := b.send(ctx, &t); err != nil {
			return fmt.Errorf("etcd: restore: %w", err)
		}
		t = etcdTxn{}
		return nil
	}
	var ops []model.Operator
	var lastNS int64
	ctr := b.counter.Add(1)
	x := ExportSink{
		Created: func(at time.Time) error { created = at; return nil },
		Key: func(k *model.Key, h KeyHashes, lu *LastUsedRec) error {
			if err := room(3); err != nil {
				return err
			}
			kk, nk := b.keyKey(k.ID), b.nameKey(k.Name)
			t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(kk), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(nk), "=", 0))
			t.put(kk, encodeEtcdKey(k, h))
			t.put(nk, []byte(k.ID))
			luv := zeroLastUsed
			if lu != nil {
				luv = encodeLastUsed(lu.At, lu.From)
			}
			t.put(b.luKey(k.ID), luv)
			return nil
		},
		Operator: func(op model.Operator) error { ops = append(ops, op); return nil },
		Meta: func(name MetaName, v []byte) error {
			if err := room(1); err != nil {
				return err
			}
			t.put(b.metaKey(name), v)
			return nil
		},
		Audit: func(ev model.AuditEvent) error {
			if err := room(2); err != nil {
				return err
			}
			// The log's order is kept: each event's ns follows the last.
			lastNS = max(ev.Time.UnixNano(), lastNS+1)
			suffix := b.auditSuffix(lastNS, ctr, 0) // unique: lastNS only grows
			t.put(b.k("audit/"+suffix), encodeAuditValue(ev, 0))
			if ev.Target != "" {
				t.put(b.k("audit_target/"+ev.Target+"\x00"+suffix), nil)
			}
			return nil
		},
	}
	if _, err := src.Export(ctx, x); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	b.seeAudit(b.auditSuffix(lastNS, 0, 0))
	opsJSON, err := json.Marshal(applyOperatorPuts(ops, nil))
	if err != nil {
		return err
	}
	t.put(b.opsKey(), opsJSON)
	sk := b.k("meta/schema")
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(sk), "=", 0))
	t.put(sk, encodeEtcdSchema(created))
	return flush()
}

// Backup writes a bbolt file holding everything at one revision (see
// Export), which `keyward --db FILE` opens: it is built in a temporary
// directory, then streamed to w.
func (b *etcdBackend) Backup(w io.Writer, announce func(size int64) error) (int64, error) {
	dir, err := os.MkdirTemp("", "keyward-backup-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "keyward.db")
	opts := Options{NoSync: true}
	opts.fill()
	bb, err := openBolt(path, &opts)
	if err != nil {
		return 0, err
	}
	if err := bb.Restore(b.ctx, b); err != nil {
		bb.Close()
		return 0, fmt.Errorf("etcd backup: %w", err)
	}
	if err := bb.Close(); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if announce != nil {
		if err := announce(fi.Size()); err != nil {
			return 0, err
		}
	}
	return io.Copy(w, f)
}

// Check reads every key, name and last-use record at one revision: each
// record decodes under its own id, names/ and keys/ agree both ways, and
// lu/ holds records only of existing keys.
func (b *etcdBackend) Check() error {
	ctx := b.ctx
	var errs []error
	names := map[string]string{} // id -> folded name
	walk := b.newKeyWalk(ctx, 0)
	for {
		id, v, _, ok, err := walk.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		k, _, err := decodeEtcdKey(id, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names[id] = foldName(k.Name)
	}
	rev := walk.keys.rev
	named := 0
	p := newPager(ctx, b.cli, b.k("names/"), rev)
	for {
		kv, err := p.nextKV()
		if err != nil {
			return err
		}
		if kv == nil {
			break
		}
		name, id := string(kv.Key[len(b.k("names/")):]), string(kv.Value)
		if n, ok := names[id]; !ok || n != name {
			errs = append(errs, fmt.Errorf("etcd: name %q points to key %q, which does not have it", model.Sanitize(name), model.Sanitize(id)))
			continue
		}
		named++
	}
	if named != len(names) {
		errs = append(errs, fmt.Errorf("etcd: %d keys but %d names in the name index", len(names), named))
	}
	p = newPager(ctx, b.cli, b.k("lu/"), rev)
	for {
		kv, err := p.nextKV()
		if err != nil {
			return err
		}
		if kv == nil {
			break
		}
		if id := string(kv.Key[len(b.k("lu/")):]); names[id] == "" {
			if _, ok := names[id]; !ok {
				errs = append(errs, fmt.Errorf("etcd: a last-use record for key %q, which does not exist", model.Sanitize(id)))
			}
		}
	}
	return errors.Join(errs...)
}
