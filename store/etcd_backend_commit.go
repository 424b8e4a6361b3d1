package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyward/keyward/model"
)

// etcdTxn is one transaction to send: its conditions, its writes, the
// reads its Else branch makes to explain a failed condition, and the
// record that identifies it (to resolve an ambiguous outcome).
type etcdTxn struct {
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	diag    []clientv3.Op
	explain func(resp *clientv3.TxnResponse) error
	// identKey holds identVal once the transaction committed (nothing
	// else writes that value there): an audit key, or a new key's record.
	identKey string
	identVal []byte
	bytes    int
}

func (t *etcdTxn) put(k string, v []byte) {
	t.ops = append(t.ops, clientv3.OpPut(k, string(v)))
	t.bytes += len(k) + len(v) + 8
}

func (t *etcdTxn) del(k string) {
	t.ops = append(t.ops, clientv3.OpDelete(k))
	t.bytes += len(k) + 8
}

// check refuses a transaction beyond etcd's limits.
func (t *etcdTxn) check() error {
	if len(t.ops) > etcdMaxOps || len(t.cmps) > etcdMaxOps || len(t.diag) > etcdMaxOps {
		return fmt.Errorf("etcd: one write of %d operations (%d conditions) is more than a transaction holds (%d): split it (bulk writes go through Import)", len(t.ops), len(t.cmps), etcdMaxOps)
	}
	if t.bytes > etcdMaxTxnBytes {
		return fmt.Errorf("etcd: one write of %d bytes is more than a transaction holds (%d)", t.bytes, etcdMaxTxnBytes)
	}
	return nil
}

// Commit sends w as one transaction (see planWrite for its conditions).
func (b *etcdBackend) Commit(ctx context.Context, w *Write) (Rev, error) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	t, err := b.planWrite(ctx, w)
	if err != nil {
		return 0, err
	}
	if t == nil { // nothing for etcd to keep (only expired hashes)
		resp, err := b.cli.Get(ctx, b.k("meta/schema"))
		if err != nil {
			return 0, err
		}
		return Rev(resp.Header.Revision), nil
	}
	return b.send(ctx, t)
}

// planWrite turns w into a transaction. nil: nothing to write.
//
// Conditions: a created key's id and name are absent; a changed or
// deleted key was not modified after KeyPut.OldRev (its stored value is
// Old's when OldRev is 0); a renamed key's new name is absent; the
// operators were not modified after w.Seen; no key was modified after
// w.KeysAt; a new store's schema is absent; the first audit key is absent
// (so a retried transaction never doubles).
func (b *etcdBackend) planWrite(ctx context.Context, w *Write) (*etcdTxn, error) {
	t := &etcdTxn{}
	type check struct {
		op clientv3.Op
		fn func(r *clientv3.GetResponse) error
	}
	var checks []check
	addCheck := func(op clientv3.Op, fn func(r *clientv3.GetResponse) error) {
		checks = append(checks, check{op, fn})
	}
	if !w.InitAt.IsZero() {
		sk := b.k("meta/schema")
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(sk), "=", 0))
		t.put(sk, encodeEtcdSchema(w.InitAt))
		addCheck(clientv3.OpGet(sk, clientv3.WithKeysOnly()), func(r *clientv3.GetResponse) error {
			if len(r.Kvs) > 0 {
				return fmt.Errorf("creating the database: %w (it exists)", ErrConflict)
			}
			return nil
		})
	}
	for _, kp := range w.Keys {
		if err := b.planKey(t, kp, addCheck); err != nil {
			return nil, err
		}
	}
	if w.Seen != 0 || len(w.Operators) > 0 {
		ok := b.opsKey()
		seen := int64(w.Seen)
		modRev := int64(-1) // the revision of the set read, when the write changes it
		if w.Seen != 0 {
			t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(ok), "<", seen+1))
		}
		if len(w.Operators) > 0 {
			// The whole set is one value: read it now, apply the puts, and
			// write it back only if nobody changed it meanwhile.
			resp, err := b.cli.Get(ctx, ok)
			if err != nil {
				return nil, fmt.Errorf("etcd: reading the operators: %w", err)
			}
			var ops []model.Operator
			modRev = 0
			if len(resp.Kvs) == 1 {
				if ops, err = decodeEtcdOperators(resp.Kvs[0].Value); err != nil {
					return nil, err
				}
				modRev = resp.Kvs[0].ModRevision
			}
			if w.Seen != 0 && modRev > seen {
				return nil, fmt.Errorf("%w (the operators changed since this was authorised)", ErrConflict)
			}
			ops = applyOperatorPuts(ops, w.Operators)
			v, err := json.Marshal(ops)
			if err != nil {
				return nil, err
			}
			t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(ok), "=", modRev))
			t.put(ok, v)
		}
		addCheck(clientv3.OpGet(ok, clientv3.WithKeysOnly()), func(r *clientv3.GetResponse) error {
			var now int64
			if len(r.Kvs) > 0 {
				now = r.Kvs[0].ModRevision
			}
			if w.Seen != 0 && now > seen || modRev >= 0 && now != modRev {
				return fmt.Errorf("%w (the operators changed since this was authorised)", ErrConflict)
			}
			return nil
		})
	}
	if w.KeysAt != 0 {
		kp := b.k("keys/")
		at := int64(w.KeysAt)
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(kp), "<", at+1).WithPrefix())
		addCheck(clientv3.OpGet(kp, clientv3.WithPrefix(), clientv3.WithMinModRev(at+1), clientv3.WithCountOnly()), func(r *clientv3.GetResponse) error {
			if r.Count > 0 {
				return fmt.Errorf("%w (a key changed since they were checked)", ErrConflict)
			}
			return nil
		})
	}
	for _, name := range []MetaName{MetaCatalog, MetaSecret} { // a fixed order
		if v, ok := w.Meta[name]; ok {
			t.put(b.metaKey(name), v)
		}
	}
	b.planAudit(t, w.Audit)
	if t.identKey == "" && len(t.ops) == 0 {
		return nil, nil
	}
	if t.identKey != "" {
		// Absent, so that a retry after an ambiguous outcome never
		// doubles the write (it refuses, and the read-back finds it).
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(t.identKey), "=", 0))
		ik := t.identKey
		addCheck(clientv3.OpGet(ik, clientv3.WithKeysOnly()), func(r *clientv3.GetResponse) error {
			if len(r.Kvs) > 0 {
				return fmt.Errorf("%w (this write is already stored)", ErrConflict)
			}
			return nil
		})
	}
	for _, c := range checks {
		t.diag = append(t.diag, c.op)
	}
	t.explain = func(resp *clientv3.TxnResponse) error {
		for i, r := range resp.Responses {
			if i >= len(checks) {
				break
			}
			rr := r.GetResponseRange()
			if rr == nil {
				continue
			}
			if err := checks[i].fn((*clientv3.GetResponse)(rr)); err != nil {
				return err
			}
		}
		return fmt.Errorf("%w (a condition of the write no longer holds)", ErrConflict)
	}
	return t, t.check()
}

// planKey adds one KeyPut's conditions, writes and explanations to t.
func (b *etcdBackend) planKey(t *etcdTxn, kp KeyPut, addCheck func(clientv3.Op, func(r *clientv3.GetResponse) error)) error {
	k := kp.New
	if k == nil {
		k = kp.Old
	}
	if k == nil {
		return errors.New("etcd: a key write with neither old nor new key")
	}
	id := k.ID
	if id == "" || strings.ContainsAny(id, "\x00/") {
		return fmt.Errorf("key id %q: %w", model.Sanitize(id), errCorruptRecord)
	}
	kk := b.keyKey(id)
	switch {
	case kp.Old == nil: // create
		nk := b.nameKey(k.Name)
		t.cmps = append(t.cmps,
			clientv3.Compare(clientv3.CreateRevision(kk), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(nk), "=", 0))
		addCheck(clientv3.OpGet(kk, clientv3.WithKeysOnly()), func(r *clientv3.GetResponse) error {
			if len(r.Kvs) > 0 {
				return fmt.Errorf("key %s: %w (the id is taken)", id, ErrConflict)
			}
			return nil
		})
		name := k.Name
		addCheck(clientv3.OpGet(nk), func(r *clientv3.GetResponse) error {
			if len(r.Kvs) > 0 {
				return nameTaken(name, model.Sanitize(string(r.Kvs[0].Value)))
			}
			return nil
		})
		v := encodeEtcdKey(kp.New, kp.Hashes)
		t.put(kk, v)
		t.put(nk, []byte(id))
		lu := zeroLastUsed
		if kp.New.LastUsedAt != nil {
			lu = encodeLastUsed(kp.New.LastUsedAt.UnixNano(), kp.New.LastUsedFrom)
		}
		t.put(b.luKey(id), lu)
		if t.identKey == "" {
			t.identKey, t.identVal = kk, v
		}
		return nil
	case kp.OldRev != 0:
		t.cmps = append(t.cmps,
			clientv3.Compare(clientv3.ModRevision(kk), "<", int64(kp.OldRev)+1),
			clientv3.Compare(clientv3.CreateRevision(kk), ">", 0))
	default:
		// No read revision: the stored record must be Old's, byte for byte.
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.Value(kk), "=", string(encodeEtcdKey(kp.Old, kp.Was))))
		// (see the check below)
	}
	old, oldRev, oldVal := kp.Old, int64(kp.OldRev), encodeEtcdKey(kp.Old, kp.Was)
	addCheck(clientv3.OpGet(kk), func(r *clientv3.GetResponse) error {
		if len(r.Kvs) == 0 {
			return fmt.Errorf("key %q: %w", model.Sanitize(id), ErrNotFound)
		}
		if oldRev != 0 && r.Kvs[0].ModRevision <= oldRev || oldRev == 0 && bytes.Equal(r.Kvs[0].Value, oldVal) {
			return nil // this condition holds
		}
		cur, _, err := decodeEtcdKey(id, r.Kvs[0].Value)
		if err != nil {
			return err
		}
		return fmt.Errorf("key %s: %w (you had version %d, it is now %d)", id, ErrConflict, old.Version, cur.Version)
	})
	if kp.New == nil { // delete
		t.del(kk)
		t.del(b.nameKey(kp.Old.Name))
		t.del(b.luKey(id))
		return nil
	}
	t.put(kk, encodeEtcdKey(kp.New, kp.Hashes))
	if foldName(kp.Old.Name) != foldName(kp.New.Name) { // rename
		nk := b.nameKey(kp.New.Name)
		t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(nk), "=", 0))
		name := kp.New.Name
		addCheck(clientv3.OpGet(nk), func(r *clientv3.GetResponse) error {
			if len(r.Kvs) > 0 && string(r.Kvs[0].Value) != id {
				return nameTaken(name, model.Sanitize(string(r.Kvs[0].Value)))
			}
			return nil
		})
		t.del(b.nameKey(kp.Old.Name))
		t.put(nk, []byte(id))
	}
	return nil
}

// applyOperatorPuts returns ops with puts applied, in name order.
func applyOperatorPuts(ops []model.Operator, puts []OperatorPut) []model.Operator {
	byName := make(map[string]model.Operator, len(ops)+len(puts))
	for _, op := range ops {
		byName[op.Name] = op
	}
	for _, p := range puts {
		if p.New == nil {
			delete(byName, p.Name)
		} else {
			delete(byName, p.Name)
			byName[p.New.Name] = *p.New
		}
	}
	out := make([]model.Operator, 0, len(byName))
	for _, op := range byName {
		out = append(out, op)
	}
	slices.SortFunc(out, func(a, b model.Operator) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// planAudit adds the events (in order) with their target index entries;
// the first event's key identifies the transaction.
func (b *etcdBackend) planAudit(t *etcdTxn, evs []model.AuditEvent) {
	if len(evs) == 0 {
		return
	}
	ctr := b.counter.Add(1)
	ns := b.nextAuditNS(time.Now().UnixNano())
	for i, ev := range evs {
		suffix := b.auditSuffix(ns, ctr, i)
		ak := b.k("audit/" + suffix)
		v := encodeAuditValue(ev, i)
		t.put(ak, v)
		if ev.Target != "" {
			t.put(b.k("audit_target/"+ev.Target+"\x00"+suffix), nil)
		}
		if i == 0 {
			// An audit key beats a key record: it is unique to this commit.
			t.identKey, t.identVal = ak, v
		}
	}
}

// errOutcomeUnknown: a commit's outcome could not be learnt in time.
var errOutcomeUnknown = errors.New("etcd: the outcome of the write is unknown (the cluster did not answer in time); check before retrying")

// send commits t, resolving an ambiguous outcome (a timeout or an
// unavailable leader: the transaction may or may not have been applied)
// by reading back its identifying record with a linearizable read, and
// sending it again only if that record is absent. The retry has the same
// conditions, including the identifying record's absence, so a write is
// never applied twice; a retry that fails its conditions is read back
// once more (present: it was the first attempt that committed). Total
// time is bounded by ambiguousFor; then errOutcomeUnknown.
func (b *etcdBackend) send(ctx context.Context, t *etcdTxn) (Rev, error) {
	deadline := time.Now().Add(b.ambiguousFor)
	ambiguous := false
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := sleepCtx(ctx, backoff(attempt)); err != nil || time.Now().After(deadline) {
				return 0, fmt.Errorf("%w: %v", errOutcomeUnknown, lastErr)
			}
		}
		if ambiguous {
			rev, found, err := b.readBack(ctx, t)
			if err != nil {
				lastErr = err
				continue
			}
			if found {
				return rev, nil
			}
		}
		actx, cancel := context.WithTimeout(ctx, b.commitTimeout)
		resp, err := b.cli.Txn(actx).If(t.cmps...).Then(t.ops...).Else(t.diag...).Commit()
		cancel()
		if err != nil {
			if !ambiguousErr(err) || ctx.Err() != nil {
				if ambiguous {
					return 0, fmt.Errorf("%w: %v", errOutcomeUnknown, err)
				}
				return 0, fmt.Errorf("etcd: %w", err)
			}
			if !ambiguous {
				b.ambiguous.Add(1)
			}
			ambiguous, lastErr = true, err
			continue
		}
		if resp.Succeeded {
			return Rev(resp.Header.Revision), nil
		}
		if ambiguous && t.identKey != "" {
			// The first attempt may be what made this one fail.
			rev, found, err := b.readBack(ctx, t)
			if err != nil {
				lastErr = err
				continue
			}
			if found {
				return rev, nil
			}
		}
		return 0, t.explain(resp)
	}
}

// readBack looks for t's identifying record (a linearizable read).
func (b *etcdBackend) readBack(ctx context.Context, t *etcdTxn) (Rev, bool, error) {
	if t.identKey == "" {
		return 0, false, errors.New("the write has no record to read back")
	}
	rctx, cancel := context.WithTimeout(ctx, b.commitTimeout)
	defer cancel()
	resp, err := b.cli.Get(rctx, t.identKey)
	if err != nil {
		return 0, false, err
	}
	if len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, t.identVal) {
		return Rev(resp.Kvs[0].ModRevision), true, nil
	}
	return 0, false, nil
}

// ambiguousErr reports an error after which a transaction may or may not
// have been applied.
func ambiguousErr(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch {
	case errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(err, rpctypes.ErrLeaderChanged),
		errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrTimeoutWaitAppliedIndex):
		return true
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "request timed out") || strings.Contains(msg, "leader changed") || strings.Contains(msg, "no leader")
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 5)
	return min(d, time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Import writes keys in batches of at most batch keys (0 or more than
// fits: etcdImportBatch), each one transaction with create conditions. An
// event goes with the batch holding its target key; events that target
// none of the keys go with the first batch. A batch whose name is taken
// fails with ErrNameTaken naming it; done counts the keys of the batches
// written before.
func (b *etcdBackend) Import(ctx context.Context, keys []KeyPut, audit []model.AuditEvent, batch int) (int, error) {
	if batch <= 0 || batch > etcdImportBatch {
		batch = etcdImportBatch
	}
	batchOf := make(map[string]int, len(keys))
	for i, kp := range keys {
		if kp.New == nil || kp.Old != nil {
			return 0, fmt.Errorf("import: %w (a bulk write only creates keys)", ErrConflict)
		}
		batchOf[kp.New.ID] = i / batch
	}
	nb := (len(keys) + batch - 1) / batch
	evs := make([][]model.AuditEvent, max(nb, 1))
	for _, ev := range audit {
		i := 0
		if j, ok := batchOf[ev.Target]; ok {
			i = j
		}
		evs[i] = append(evs[i], ev)
	}
	done := 0
	for i := 0; i < max(nb, 1); i++ {
		lo, hi := i*batch, min((i+1)*batch, len(keys))
		if lo > hi {
			lo = hi
		}
		// A key takes 3 ops (record, name, last use), an event 2 (itself,
		// its target index entry). Events that do not fit beside the
		// keys follow them in commits of their own.
		fit := max((etcdMaxOps-(hi-lo)*3)/2, 0)
		w := &Write{Keys: keys[lo:hi], Audit: evs[i][:min(fit, len(evs[i]))]}
		rest := evs[i][len(w.Audit):]
		if len(w.Keys) == 0 && len(w.Audit) == 0 {
			continue
		}
		if _, err := b.Commit(ctx, w); err != nil {
			return done, fmt.Errorf("import batch %d (keys %d-%d; %d written before it): %w", i+1, lo+1, hi, done, err)
		}
		for len(rest) > 0 {
			n := min(len(rest), etcdMaxOps/2)
			if _, err := b.Commit(ctx, &Write{Audit: rest[:n]}); err != nil {
				return hi, fmt.Errorf("import batch %d: its keys are written, not all its audit events: %w", i+1, err)
			}
			rest = rest[n:]
		}
		done = hi
	}
	return done, nil
}
