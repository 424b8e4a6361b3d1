package store

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keyward/keyward/model"
)

// etcdAuditPage is how many audit records one read takes.
const etcdAuditPage = 500

// Audit reads audit/ in key order (newest first) page by page, or a
// target's index entries and then their events (one transaction of gets
// per page), keeping at most Limit events: memory is bounded by the
// answer and one page, whatever the log's size.
func (b *etcdBackend) Audit(ctx context.Context, f AuditFilter) ([]model.AuditEvent, error) {
	var out []model.AuditEvent
	q := strings.ToLower(f.Query)
	keep := func(ev model.AuditEvent) {
		if q == "" || strings.Contains(strings.ToLower(ev.Actor+" "+ev.Action+" "+ev.Target+" "+ev.Detail), q) {
			out = append(out, ev)
		}
	}
	full := func() bool { return f.Limit > 0 && len(out) >= f.Limit }
	auditP := b.k("audit/")
	prefix := auditP
	if f.Target != "" {
		prefix = b.k("audit_target/" + f.Target + "\x00")
	}
	p := newPager(ctx, b.cli, prefix, 0)
	p.pageSize = etcdAuditPage
	if f.Limit > 0 && q == "" {
		p.pageSize = int64(min(f.Limit, etcdAuditPage))
	}
	var batch []string // audit keys of index entries, to read together
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ops := make([]clientv3.Op, len(batch))
		for i, k := range batch {
			ops[i] = clientv3.OpGet(k)
		}
		batch = batch[:0]
		resp, err := b.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return err
		}
		for _, r := range resp.Responses {
			kvs := r.GetResponseRange().GetKvs()
			if len(kvs) != 1 || full() {
				continue
			}
			ev, err := decodeAuditValue(kvs[0].Key, kvs[0].Value, kvs[0].CreateRevision)
			if err != nil {
				return err
			}
			keep(ev)
		}
		return nil
	}
	for !full() {
		kv, err := p.nextKV()
		if err != nil {
			return nil, fmt.Errorf("etcd: reading the audit log: %w", err)
		}
		if kv == nil {
			break
		}
		if f.Target == "" {
			ev, err := decodeAuditValue(kv.Key, kv.Value, kv.CreateRevision)
			if err != nil {
				return nil, err
			}
			keep(ev)
			continue
		}
		batch = append(batch, auditP+string(kv.Key[len(prefix):]))
		if len(batch) == etcdMaxOps || (f.Limit > 0 && len(batch) >= f.Limit-len(out)) {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("etcd: reading the audit log: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("etcd: reading the audit log: %w", err)
	}
	return out, nil
}
