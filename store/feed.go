package store

import "sync"

// ChangeKind says what a Change is about.
type ChangeKind int

const (
	KeyCreated ChangeKind = iota + 1
	KeyUpdated
	KeyDeleted
	LastUsed
	OperatorsChanged
	SecretChanged
	CatalogChanged
	AuditAppended
	// Resync means too much changed to list: reload everything.
	Resync
)

// Change is one committed change, published after the commit.
type Change struct {
	Kind ChangeKind
	ID   string   // key id or operator name, when one
	IDs  []string // for LastUsed batches
}

// Touches says whether a batch of changes may have changed what kind
// covers: it holds a change of that kind, or a Resync (which covers
// everything). Screens and watchers reload on it.
func Touches(changes []Change, kind ChangeKind) bool {
	for _, ch := range changes {
		if ch.Kind == kind || ch.Kind == Resync {
			return true
		}
	}
	return false
}

// maxPending bounds a slow subscriber's queue; past it the queue collapses
// into a single Resync.
const maxPending = 4096

// Subscription receives the store's change feed. Ready is signalled when
// changes are pending; Next takes them. A subscriber that falls behind gets
// one Resync instead of an unbounded queue.
type Subscription struct {
	s       *Store
	watch   bool // from Watch: not counted by Subscribers
	ready   chan struct{}
	mu      sync.Mutex
	pending []Change
	closed  bool
}

// Subscribe starts a change feed. Call Close when done.
func (s *Store) Subscribe() *Subscription { return s.subscribe(false) }

// Watch starts a change feed for a watcher that reads no keys (the SSH
// side watching operator changes to end sessions): it is not counted by
// Subscribers, so a Lean store keeps no key snapshots for it.
func (s *Store) Watch() *Subscription { return s.subscribe(true) }

func (s *Store) subscribe(watch bool) *Subscription {
	sub := &Subscription{s: s, watch: watch, ready: make(chan struct{}, 1)}
	s.subsMu.Lock()
	if s.subs != nil {
		s.subs[sub] = struct{}{}
	} else {
		sub.closed = true
		close(sub.ready)
	}
	s.subsMu.Unlock()
	return sub
}

// Ready is signalled (or closed, when the store closes) when Next has
// something.
func (sub *Subscription) Ready() <-chan struct{} { return sub.ready }

// Next returns and clears the pending changes.
func (sub *Subscription) Next() []Change {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	out := sub.pending
	sub.pending = nil
	return out
}

// Close stops the feed. A Lean store drops its snapshots when its last
// subscriber leaves (see Keys).
func (sub *Subscription) Close() {
	sub.s.subsMu.Lock()
	last := false
	if sub.s.subs != nil {
		if _, ok := sub.s.subs[sub]; ok {
			delete(sub.s.subs, sub)
			last = !sub.watch && sub.s.subscribersLocked() == 0
		}
	}
	sub.s.subsMu.Unlock()
	sub.close()
	if last {
		sub.s.dropSnapshots()
	}
}

func (sub *Subscription) close() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if !sub.closed {
		sub.closed = true
		close(sub.ready)
	}
}

func (sub *Subscription) push(cs []Change) {
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return
	}
	switch {
	case len(sub.pending) == 1 && sub.pending[0].Kind == Resync:
		// A pending Resync already covers these: the subscriber reloads
		// everything, which includes every change committed before Next.
	case len(sub.pending)+len(cs) > maxPending:
		sub.pending = []Change{{Kind: Resync}}
	default:
		sub.pending = append(sub.pending, cs...)
	}
	sub.mu.Unlock()
	select {
	case sub.ready <- struct{}{}:
	default:
	}
}

// Subscribers returns how many change feeds are open (to check that
// sessions release theirs).
func (s *Store) Subscribers() int {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	return s.subscribersLocked()
}

// subscribersLocked counts the subscriptions that are not watches. Caller
// holds s.subsMu.
func (s *Store) subscribersLocked() int {
	n := 0
	for sub := range s.subs {
		if !sub.watch {
			n++
		}
	}
	return n
}

func (s *Store) publish(cs ...Change) {
	if len(cs) == 0 {
		return
	}
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for sub := range s.subs {
		sub.push(cs)
	}
}
