package store

import "context"

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
	ev := WatchEvent{Rev: rev}
	for _, kp := range w.Keys {
		if kp.New != nil {
			ev.Keys = append(ev.Keys, kp.New.ID)
		} else {
			ev.Keys = append(ev.Keys, kp.Old.ID)
		}
	}
	for _, op := range w.Operators {
		ev.Operators = append(ev.Operators, op.Name)
	}
	for name := range w.Meta {
		ev.Meta = append(ev.Meta, name)
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
