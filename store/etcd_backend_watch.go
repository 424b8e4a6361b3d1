package store

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
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
	applied := int64(from) // "the commits after from"
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			if sleepCtx(ctx, backoff(attempt)) != nil {
				return
			}
		}
		switch b.watchOnce(ctx, wctx, &applied, emit) {
		case watchRelist:
			emit(WatchEvent{Rev: Rev(applied), Relist: true})
			return
		case watchHealthy:
			attempt = 0
		case watchStopped:
			return
		}
	}
}

// How a watch stream ended (watchOnce).
const (
	watchBroken  = iota // it failed before delivering anything: back off
	watchHealthy        // it delivered, then failed or fell silent: watch again at once
	watchRelist         // it fell behind a compaction
	watchStopped        // ctx ended
)

// watchSeq numbers watch streams (see watchOnce).
var watchSeq atomic.Uint64

// etcdWatchSilence is how long a watch stream may go without any answer,
// progress marks included, before it is abandoned for a new one.
var etcdWatchSilence = 3 * time.Second

// watchOnce runs one watch stream until it fails, falls silent or ends,
// advancing applied as it emits.
//
// It starts from the revision already applied, not the next one: etcd
// answers RequestProgress only when every watcher of the stream starts at
// or below the current revision, and on a quiet cluster the next one does
// not exist yet (the silence would look like a partition). That
// revision's events are skipped.
//
// Each attempt gets a gRPC stream of its own. The client multiplexes
// watches with equal metadata onto one stream, and when the connection
// under it breaks (a paused member, a partition that outlived the
// keepalive) the client resumes its watchers from the next revision,
// which (as above) silences progress for good on a quiet cluster: the
// stream stayed mute, without an error, though the connection worked
// again, and a new watch with the same metadata would join it. So every
// attempt adds a unique metadata value, asks for progress on its own
// context (RequestProgress finds the stream by the context's metadata;
// given a shorter-lived context it would open a stream that dies with
// it), and is abandoned when it hears nothing for etcdWatchSilence (three progress
// requests unanswered).
func (b *etcdBackend) watchOnce(ctx, wctx context.Context, applied *int64, emit func(WatchEvent) bool) int {
	sctx, scancel := context.WithCancel(metadata.AppendToOutgoingContext(wctx, "keyward-watch", strconv.FormatUint(watchSeq.Add(1), 10)))
	defer scancel()
	wch := b.cli.Watch(sctx, b.prefix, clientv3.WithPrefix(), clientv3.WithRev(max(*applied, 1)), clientv3.WithProgressNotify())
	defer func() {
		// An abandoned stream's channel may close late: drain it aside.
		go func() {
			for range wch {
			}
		}()
	}()
	go func() {
		t := time.NewTicker(etcdProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				_ = b.cli.RequestProgress(sctx)
			}
		}
	}()
	silence := time.NewTimer(etcdWatchSilence)
	defer silence.Stop()
	result := watchBroken
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return watchStopped
		case <-silence.C:
			return watchHealthy // a mute stream: a new one at once
		case resp, ok = <-wch:
		}
		if !ok {
			return result
		}
		if resp.CompactRevision != 0 {
			return watchRelist
		}
		if resp.Canceled || resp.Err() != nil {
			return result // no leader, or the stream ended: watch again
		}
		silence.Reset(etcdWatchSilence)
		result = watchHealthy
		if len(resp.Events) == 0 {
			// A progress mark vouches for every revision up to its
			// header; the creation answer only says the cluster is there.
			at := *applied
			if resp.IsProgressNotify() {
				at = max(resp.Header.Revision, *applied)
			}
			if !emit(WatchEvent{Rev: Rev(at), Progress: true}) {
				return watchStopped
			}
			continue
		}
		for _, ev := range b.translate(resp.Events, *applied) {
			if ev.Relist {
				return watchRelist
			}
			if !emit(ev) {
				return watchStopped
			}
			*applied = int64(ev.Rev)
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
