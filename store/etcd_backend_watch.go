package store

import (
	"context"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdProgressEvery is how often Watch asks the cluster for a progress
// mark (brief §2.3): a node cut off from etcd gets no watch error at all,
// only silence, which the engine turns into staleness.
var etcdProgressEvery = time.Second

// Watch follows the prefix from rev from on. Each commit becomes one
// WatchEvent with its values; progress marks (asked for every second
// with RequestProgress on the watch's own context, as streams are keyed
// by its metadata) become Progress events. A compaction past the stream
// ends it with Relist. A lost leader or a closed stream is re-watched
// from the last revision delivered + 1, never relisted. The channel
// closes when ctx ends (or the backend closes).
func (b *etcdBackend) Watch(ctx context.Context, from Rev) <-chan WatchEvent {
	out := make(chan WatchEvent, 64)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(out)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { // the backend closing ends the watch too
			select {
			case <-b.ctx.Done():
				cancel()
			case <-ctx.Done():
			}
		}()
		b.watchLoop(ctx, from, out)
	}()
	return out
}

func (b *etcdBackend) watchLoop(ctx context.Context, from Rev, out chan<- WatchEvent) {
	emit := func(ev WatchEvent) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	wctx := clientv3.WithRequireLeader(ctx)
	// Progress requests go on the watch's context (its metadata names
	// the stream), for as long as the watch runs.
	go func() {
		t := time.NewTicker(etcdProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				rctx, cancel := context.WithTimeout(wctx, etcdProgressEvery)
				_ = b.cli.RequestProgress(rctx)
				cancel()
			}
		}
	}()
	applied := int64(from) - 1
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			if sleepCtx(ctx, backoff(attempt)) != nil {
				return
			}
		}
		sctx, scancel := context.WithCancel(wctx)
		// From the revision already applied, not the next one: etcd
		// answers RequestProgress only when every watcher of the stream
		// starts at or below the current revision, and on a quiet
		// cluster the next one does not exist yet (the silence would look
		// like a partition). That revision's events are skipped.
		wch := b.cli.Watch(sctx, b.prefix, clientv3.WithPrefix(), clientv3.WithRev(max(applied, 1)), clientv3.WithProgressNotify())
		relist := false
		for resp := range wch {
			if resp.CompactRevision != 0 || (resp.Canceled && resp.CompactRevision != 0) {
				relist = true
				break
			}
			if resp.Canceled || resp.Err() != nil {
				break // no leader, or the stream ended: watch again
			}
			attempt = 0
			if len(resp.Events) == 0 {
				// A progress mark vouches for every revision up to its
				// header; the creation answer only says the cluster is there.
				at := applied
				if resp.IsProgressNotify() {
					at = max(resp.Header.Revision, applied)
				}
				if !emit(WatchEvent{Rev: Rev(at), Progress: true}) {
					scancel()
					return
				}
				continue
			}
			for _, ev := range b.translate(resp.Events, applied) {
				if ev.Relist {
					relist = true
					break
				}
				if !emit(ev) {
					scancel()
					return
				}
				applied = int64(ev.Rev)
			}
			if relist {
				break
			}
		}
		scancel()
		if relist {
			emit(WatchEvent{Rev: Rev(applied), Relist: true})
			return
		}
	}
}

// translate turns a response's events into one WatchEvent per revision,
// skipping revisions already delivered (etcd 3.4 may repeat some). A
// record that does not decode asks for a relist, whose load reports it.
func (b *etcdBackend) translate(evs []*clientv3.Event, applied int64) []WatchEvent {
	var out []WatchEvent
	var cur *WatchEvent
	keysP, luP, metaP, auditP := b.k("keys/"), b.k("lu/"), b.k("meta/"), b.k("audit/")
	for _, e := range evs {
		rev := e.Kv.ModRevision
		if rev <= applied {
			continue
		}
		if cur == nil || int64(cur.Rev) != rev {
			out = append(out, WatchEvent{Rev: Rev(rev)})
			cur = &out[len(out)-1]
		}
		key := string(e.Kv.Key)
		del := e.Type == mvccpb.DELETE
		switch {
		case strings.HasPrefix(key, keysP):
			id := key[len(keysP):]
			if del {
				cur.Keys = append(cur.Keys, KeyEvent{ID: id})
				continue
			}
			k, h, err := decodeEtcdKey(id, e.Kv.Value)
			if err != nil {
				return append(out[:len(out)-1], WatchEvent{Rev: Rev(rev), Relist: true})
			}
			cur.Keys = append(cur.Keys, KeyEvent{ID: id, Key: k, Hashes: h})
		case key == b.opsKey():
			cur.OperatorsSet = true
			if !del {
				ops, err := decodeEtcdOperators(e.Kv.Value)
				if err != nil {
					return append(out[:len(out)-1], WatchEvent{Rev: Rev(rev), Relist: true})
				}
				cur.Operators = ops
			}
		case strings.HasPrefix(key, metaP):
			name := MetaName(key[len(metaP):])
			if name != MetaCatalog && name != MetaSecret {
				continue
			}
			if cur.Meta == nil {
				cur.Meta = map[MetaName][]byte{}
			}
			if del {
				cur.Meta[name] = nil
			} else {
				cur.Meta[name] = e.Kv.Value
			}
		case strings.HasPrefix(key, luP):
			if del {
				continue
			}
			at, from, err := decodeLastUsed(e.Kv.Value)
			if err != nil || at == 0 {
				continue // a damaged or never-used record: nothing to apply
			}
			cur.LastUsed = append(cur.LastUsed, LastUsedRec{ID: key[len(luP):], At: at, From: from})
		case strings.HasPrefix(key, auditP):
			if !del {
				cur.Audit++
				b.seeAudit(key[len(auditP):])
			}
		}
	}
	return out
}
