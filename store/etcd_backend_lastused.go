package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdMergeBatch is how many last-used records one transaction merges:
// each is a nested transaction, whose ops take budget from the parent's
// 128 (brief §5).
const etcdMergeBatch = 127

// MergeLastUsed writes each record as a nested If(Value(lu/id) < new)
// Then(Put): the later time wins, and a key deleted meanwhile (no lu/
// record: a Value compare on a missing key is false) is never brought
// back. The same id twice in recs keeps the later time.
func (b *etcdBackend) MergeLastUsed(ctx context.Context, recs []LastUsedRec) error {
	latest := make(map[string]int, len(recs))
	uniq := make([]LastUsedRec, 0, len(recs))
	for _, r := range recs {
		if i, ok := latest[r.ID]; ok {
			if r.At > uniq[i].At {
				uniq[i] = r
			}
			continue
		}
		latest[r.ID] = len(uniq)
		uniq = append(uniq, r)
	}
	for i := 0; i < len(uniq); i += etcdMergeBatch {
		batch := uniq[i:min(i+etcdMergeBatch, len(uniq))]
		ops := make([]clientv3.Op, len(batch))
		for j, r := range batch {
			k, v := b.luKey(r.ID), string(encodeLastUsed(r.At, r.From))
			ops[j] = clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "<", v)}, []clientv3.Op{clientv3.OpPut(k, v)}, nil)
		}
		// A merge is idempotent: an ambiguous outcome is simply retried.
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if attempt > 0 {
				if sleepCtx(ctx, backoff(attempt)) != nil {
					break
				}
			}
			actx, cancel := context.WithTimeout(ctx, b.commitTimeout)
			_, err = b.cli.Txn(actx).Then(ops...).Commit()
			cancel()
			if err == nil || !ambiguousErr(err) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("etcd: writing last-used times: %w", err)
		}
	}
	return nil
}

// compactLoop is the Kubernetes compactor without an election (brief §5):
// every compactEvery each node tries Txn(If(Version(compact) = seen))
// .Then(Put(compact)); the one that wins compacts to the revision it
// recorded compactKeep ago. Losers learn the version and try next round.
func (b *etcdBackend) compactLoop(ctx context.Context) {
	defer close(b.compactDone)
	if b.compactEvery <= 0 {
		return
	}
	key := b.k("compact")
	var version int64
	var revs []int64 // the revisions seen at each round, oldest first
	keep := int(max((b.compactKeep+b.compactEvery-1)/b.compactEvery, 1))
	t := time.NewTicker(b.compactEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, b.commitTimeout)
		resp, err := b.cli.Txn(tctx).If(clientv3.Compare(clientv3.Version(key), "=", version)).
			Then(clientv3.OpPut(key, strconv.FormatInt(time.Now().UnixNano(), 10))).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			cancel()
			continue
		}
		revs = append(revs, resp.Header.Revision)
		if len(revs) > keep+1 {
			revs = revs[len(revs)-keep-1:]
		}
		if !resp.Succeeded {
			if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
				version = kvs[0].Version
			}
			cancel()
			continue
		}
		version++
		if len(revs) > keep {
			// Already compacted further (by an earlier winner): fine.
			_, _ = b.cli.Compact(tctx, revs[len(revs)-1-keep])
		}
		cancel()
	}
}

// startCompactor starts compactLoop with the current settings.
func (b *etcdBackend) startCompactor() {
	ctx, cancel := context.WithCancel(b.ctx)
	b.stopCompact, b.compactDone = cancel, make(chan struct{})
	go b.compactLoop(ctx)
}

// stopCompactor ends compactLoop and waits for it.
func (b *etcdBackend) stopCompactor() {
	if b.stopCompact != nil {
		b.stopCompact()
		<-b.compactDone
		b.stopCompact = nil
	}
}
