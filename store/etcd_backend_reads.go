package store

import (
	"context"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/keyward/keyward/model"
)

// etcdPager walks a key range page by page at one revision (brief §2.1:
// every page after the first WithRev of the first page's header).
type etcdPager struct {
	cli      *clientv3.Client
	ctx      context.Context
	next     string // the next page starts here
	end      string
	rev      int64
	pageSize int64
	page     []*mvccpb.KeyValue
	more     bool
	started  bool
	// prefetch: ask for the next page as soon as one arrives, so etcd
	// reads it while this process decodes the last (the load). Not for
	// walks that may stop after a page (the audit log's newest N).
	prefetch bool
	ahead    chan pageResult
}

type pageResult struct {
	resp *clientv3.GetResponse
	err  error
}

// get reads the page that starts at from.
func (p *etcdPager) get(from string) (*clientv3.GetResponse, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(p.end), clientv3.WithLimit(p.pageSize)}
	if p.rev != 0 {
		opts = append(opts, clientv3.WithRev(p.rev))
	}
	return p.cli.Get(p.ctx, from, opts...)
}

// newPager walks the keys starting with prefix, at rev (0: the current
// revision, learnt from the first page: see rev).
func newPager(ctx context.Context, cli *clientv3.Client, prefix string, rev int64) *etcdPager {
	return &etcdPager{cli: cli, ctx: ctx, next: prefix, end: clientv3.GetPrefixRangeEnd(prefix), rev: rev, pageSize: etcdPage}
}

// nextKV returns the next record, nil at the end.
func (p *etcdPager) nextKV() (*mvccpb.KeyValue, error) {
	if len(p.page) == 0 {
		if p.started && !p.more {
			return nil, nil
		}
		var resp *clientv3.GetResponse
		var err error
		if p.ahead != nil {
			r := <-p.ahead
			p.ahead, resp, err = nil, r.resp, r.err
		} else {
			resp, err = p.get(p.next)
		}
		if err != nil {
			return nil, err
		}
		if p.rev == 0 {
			p.rev = resp.Header.Revision
		}
		p.started, p.more, p.page = true, resp.More, resp.Kvs
		if len(p.page) == 0 {
			p.more = false
			return nil, nil
		}
		p.next = string(p.page[len(p.page)-1].Key) + "\x00"
		if p.prefetch && p.more {
			ch, from := make(chan pageResult, 1), p.next
			go func() {
				resp, err := p.get(from)
				ch <- pageResult{resp, err}
			}()
			p.ahead = ch
		}
	}
	kv := p.page[0]
	p.page[0] = nil
	p.page = p.page[1:]
	return kv, nil
}

// keyWalk walks keys/ and, beside it, lu/ (both in id order) at rev.
type keyWalk struct {
	b      *etcdBackend
	keys   *etcdPager
	lu     *etcdPager
	luKV   *mvccpb.KeyValue
	luDone bool
}

func (b *etcdBackend) newKeyWalk(ctx context.Context, rev int64) *keyWalk {
	w := &keyWalk{b: b, keys: newPager(ctx, b.cli, b.k("keys/"), rev), lu: newPager(ctx, b.cli, b.k("lu/"), rev)}
	w.keys.prefetch, w.lu.prefetch = true, true
	return w
}

// next returns the next key's id, its keys/ value and its lu/ value (nil
// if none); ok false at the end.
func (w *keyWalk) next() (id string, val, lu []byte, ok bool, err error) {
	kv, err := w.keys.nextKV()
	if err != nil || kv == nil {
		return "", nil, nil, false, err
	}
	if w.lu.rev == 0 {
		w.lu.rev = w.keys.rev
	}
	id = string(kv.Key[len(w.b.k("keys/")):])
	luPrefix := len(w.b.k("lu/"))
	for !w.luDone {
		if w.luKV == nil {
			if w.luKV, err = w.lu.nextKV(); err != nil {
				return "", nil, nil, false, err
			}
			if w.luKV == nil {
				w.luDone = true
				break
			}
		}
		lid := string(w.luKV.Key[luPrefix:])
		if lid < id {
			w.luKV = nil
			continue
		}
		if lid == id {
			lu = w.luKV.Value
			if lu == nil {
				lu = []byte{}
			}
			w.luKV = nil
		}
		break
	}
	return id, kv.Value, lu, true, nil
}

// Load lists everything at one revision R (the meta/ list's): the
// catalog, the keys with their last use, then the hashes the key records
// hold, the operators and the secret.
func (b *etcdBackend) Load(ctx context.Context, sink LoadSink) (Rev, error) {
	meta, err := b.cli.Get(ctx, b.k("meta/"), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: loading: %w", err)
	}
	rev := meta.Header.Revision
	var pending sync.WaitGroup
	err = b.load(ctx, sink, meta, rev, &pending)
	if ferr := sink.Flush(); err == nil {
		err = ferr
	}
	pending.Wait()
	return Rev(rev), err
}

func (b *etcdBackend) load(ctx context.Context, sink LoadSink, meta *clientv3.GetResponse, rev int64, pending *sync.WaitGroup) error {
	metaVals := map[string][]byte{}
	for _, kv := range meta.Kvs {
		metaVals[string(kv.Key[len(b.k("meta/")):])] = kv.Value
	}
	if err := sink.Meta(MetaCatalog, metaVals[string(MetaCatalog)]); err != nil {
		return err
	}
	// The hashes are collected while the keys pass, copied into slabs so
	// the pages' records can go.
	var hashes, refs [][]byte
	var slab []byte
	take := func(n int) []byte {
		if len(slab) < n {
			slab = make([]byte, 64<<10)
		}
		s := slab[:n:n]
		slab = slab[n:]
		return s
	}
	var cur *KeyPage
	send := func() error {
		p := cur
		cur = nil
		pending.Add(1)
		p.Done = func() { pending.Done() }
		return sink.KeyPage(p)
	}
	walk := b.newKeyWalk(ctx, rev)
	for {
		id, v, lu, ok, err := walk.next()
		if err != nil {
			return fmt.Errorf("etcd: loading the keys: %w", err)
		}
		if !ok {
			break
		}
		h, rec, err := splitEtcdKey(v)
		if err != nil {
			return fmt.Errorf("etcd key record %q: %w", model.Sanitize(id), err)
		}
		if cur == nil {
			cur = &KeyPage{IDs: make([][]byte, 0, loadBatchSize), Vals: make([][]byte, 0, loadBatchSize), LastUsed: make([][]byte, 0, loadBatchSize)}
		}
		if lu != nil {
			if at, _, err := decodeLastUsed(lu); err == nil && at == 0 {
				lu = nil // never used
			}
		}
		cur.IDs = append(cur.IDs, []byte(id))
		cur.Vals = append(cur.Vals, rec)
		cur.LastUsed = append(cur.LastUsed, lu)
		addHash := func(hash [32]byte, prev bool) {
			hb := take(32)
			copy(hb, hash[:])
			rb := take(1 + len(id))
			if prev {
				rb[0] = 1
			} else {
				rb[0] = 0
			}
			copy(rb[1:], id)
			hashes, refs = append(hashes, hb), append(refs, rb)
		}
		if h.HasPrev {
			addHash(h.Prev, true)
		}
		addHash(h.Cur, false)
		if len(cur.IDs) == loadBatchSize {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if cur != nil {
		if err := send(); err != nil {
			return err
		}
	}
	for i := 0; i < len(hashes); i += loadBatchSize {
		j := min(i+loadBatchSize, len(hashes))
		pending.Add(1)
		if err := sink.HashPage(&HashPage{Hashes: hashes[i:j:j], Refs: refs[i:j:j], Done: pending.Done}); err != nil {
			return err
		}
	}
	ops, err := decodeEtcdOperators(metaVals["operators"])
	if err != nil {
		return err
	}
	for _, op := range ops {
		if err := sink.Operator(op); err != nil {
			return err
		}
	}
	return sink.Meta(MetaSecret, metaVals[string(MetaSecret)])
}

// Key reads key id and its last use in one transaction.
func (b *etcdBackend) Key(ctx context.Context, id string) (*model.Key, Rev, error) {
	resp, err := b.cli.Txn(ctx).Then(clientv3.OpGet(b.keyKey(id)), clientv3.OpGet(b.luKey(id))).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("etcd: reading key %q: %w", model.Sanitize(id), err)
	}
	kr := resp.Responses[0].GetResponseRange()
	if kr == nil || len(kr.Kvs) == 0 {
		return nil, 0, fmt.Errorf("key %q: %w", model.Sanitize(id), ErrNotFound)
	}
	k, _, err := decodeEtcdKey(id, kr.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	if lr := resp.Responses[1].GetResponseRange(); lr != nil && len(lr.Kvs) == 1 {
		applyLastUsed(k, lr.Kvs[0].Value)
	}
	return k, Rev(resp.Header.Revision), nil
}

// Keys pages through keys/ and lu/ at one revision.
func (b *etcdBackend) Keys(ctx context.Context, fn func(k *model.Key)) (Rev, error) {
	walk := b.newKeyWalk(ctx, 0)
	for {
		id, v, lu, ok, err := walk.next()
		if err != nil {
			return 0, fmt.Errorf("etcd: reading the keys: %w", err)
		}
		if !ok {
			break
		}
		k, _, err := decodeEtcdKey(id, v)
		if err != nil {
			return 0, err
		}
		applyLastUsed(k, lu)
		fn(k)
	}
	if walk.keys.rev == 0 { // no page was read: an empty range
		resp, err := b.cli.Get(ctx, b.k("meta/schema"), clientv3.WithKeysOnly())
		if err != nil {
			return 0, err
		}
		return Rev(resp.Header.Revision), nil
	}
	return Rev(walk.keys.rev), nil
}

// Similar reads limited ranges of keys/ and names/ from prefix.
func (b *etcdBackend) Similar(ctx context.Context, prefix string, n int) ([]*model.Key, error) {
	if n <= 0 {
		return nil, nil
	}
	var out []*model.Key
	seen := map[string]bool{}
	add := func(id string) error {
		if len(out) >= n || seen[id] {
			return nil
		}
		seen[id] = true
		k, _, err := b.Key(ctx, id)
		if err == nil {
			out = append(out, k)
		}
		return nil
	}
	r, err := b.cli.Get(ctx, b.keyKey(prefix), clientv3.WithPrefix(), clientv3.WithLimit(int64(n)), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	for _, kv := range r.Kvs {
		_ = add(string(kv.Key[len(b.k("keys/")):]))
	}
	if len(out) < n {
		r, err = b.cli.Get(ctx, b.k("names/"+foldName(prefix)), clientv3.WithPrefix(), clientv3.WithLimit(int64(n)))
		if err != nil {
			return nil, err
		}
		for _, kv := range r.Kvs {
			_ = add(string(kv.Value))
		}
	}
	return out, nil
}

// NameOwner reads names/<fold(name)>.
func (b *etcdBackend) NameOwner(ctx context.Context, name string) (string, bool, error) {
	r, err := b.cli.Get(ctx, b.nameKey(name))
	if err != nil {
		return "", false, err
	}
	if len(r.Kvs) == 0 {
		return "", false, nil
	}
	return string(r.Kvs[0].Value), true, nil
}

// Meta reads meta/<name> (nil if absent).
func (b *etcdBackend) Meta(ctx context.Context, name MetaName) ([]byte, error) {
	r, err := b.cli.Get(ctx, b.metaKey(name))
	if err != nil {
		return nil, err
	}
	if len(r.Kvs) == 0 {
		return nil, nil
	}
	return r.Kvs[0].Value, nil
}
