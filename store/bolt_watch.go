package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/keyward/keyward/model"
	bolt "go.etcd.io/bbolt"
)

// Watch streams this process's own commits: one process owns the file,
// so no other writer exists. A consumer that falls 64 commits behind gets
// Relist and the stream ends.
func (b *boltBackend) Watch(ctx context.Context, from Rev) <-chan WatchEvent {
	ch := make(chan WatchEvent, 64)
	b.watchMu.Lock()
	b.watchers[ch] = struct{}{}
	b.watchMu.Unlock()
	go func() {
		<-ctx.Done()
		b.watchMu.Lock()
		if _, ok := b.watchers[ch]; ok {
			delete(b.watchers, ch)
			close(ch)
		}
		b.watchMu.Unlock()
	}()
	return ch
}

// notify sends the commit at rev to the watchers.
func (b *boltBackend) notify(rev Rev, w *Write) {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	if len(b.watchers) == 0 {
		return
	}
	ev := WatchEvent{Rev: rev, Meta: w.Meta, Audit: len(w.Audit)}
	for _, kp := range w.Keys {
		if kp.New != nil {
			ev.Keys = append(ev.Keys, KeyEvent{ID: kp.New.ID, Key: kp.New, Hashes: kp.Hashes})
		} else {
			ev.Keys = append(ev.Keys, KeyEvent{ID: kp.Old.ID})
		}
	}
	if len(w.Operators) > 0 {
		ev.OperatorsSet = true
		ops, err := b.operators()
		if err == nil {
			ev.Operators = ops
		}
	}
	for ch := range b.watchers {
		select {
		case ch <- ev:
		default:
			// Too far behind: say so and end the stream.
			select {
			case <-ch:
			default:
			}
			ch <- WatchEvent{Rev: rev, Relist: true}
			delete(b.watchers, ch)
			close(ch)
		}
	}
}

// operators reads every operator record.
func (b *boltBackend) operators() ([]model.Operator, error) {
	var ops []model.Operator
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bOperators).ForEach(func(k, v []byte) error {
			var op model.Operator
			if err := json.Unmarshal(v, &op); err != nil {
				return fmt.Errorf("operator %q: %w", model.Sanitize(string(k)), err)
			}
			ops = append(ops, op)
			return nil
		})
	})
	return ops, err
}
