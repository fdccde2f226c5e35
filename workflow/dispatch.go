package workflow

import (
	"context"
	"sync"
)

// Handler runs one work item of an in-process controller. log appends a
// line to the step's record. It returns the item's result; the engine is
// told by the dispatcher, never by the handler.
type Handler func(ctx context.Context, item *WorkItem, log func(msg string, attrs map[string]any)) Result

// Local dispatches to in-process controllers and passes everything else to
// a fallback dispatcher (the queue remote controllers take work from).
// Built-in controllers use it; they go through the same engine, records and
// ownership checks as external ones.
type Local struct {
	Engine   *Engine
	Fallback Dispatcher

	mu       sync.Mutex
	handlers map[string]Handler            // controller → handler
	cancels  map[string]context.CancelFunc // item ID → cancel
}

// Handle registers the handler of an in-process controller.
func (l *Local) Handle(controller string, h Handler) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handlers == nil {
		l.handlers = map[string]Handler{}
		l.cancels = map[string]context.CancelFunc{}
	}
	l.handlers[controller] = h
}

func (l *Local) Dispatch(item *WorkItem) bool {
	l.mu.Lock()
	h := l.handlers[item.Controller]
	if h == nil || item.Where == "node" {
		l.mu.Unlock()
		if l.Fallback == nil {
			return false
		}
		return l.Fallback.Dispatch(item)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancels[item.ID] = cancel
	l.mu.Unlock()
	go func() {
		res := h(ctx, item, func(msg string, attrs map[string]any) { l.Engine.Log(item.ID, msg, attrs) })
		l.mu.Lock()
		delete(l.cancels, item.ID)
		l.mu.Unlock()
		cancel()
		l.Engine.Complete(item.ID, res) // ErrStale if the run moved on
	}()
	return true
}

func (l *Local) Cancel(itemID string) {
	l.mu.Lock()
	cancel := l.cancels[itemID]
	delete(l.cancels, itemID)
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		return
	}
	if l.Fallback != nil {
		l.Fallback.Cancel(itemID)
	}
}

// Queue holds work items for remote takers, one queue per destination:
// "controller:NAME" for cluster steps, "node:NAME" for node steps. Takers
// long-poll it through the API, one destination each, or a group of them
// (TakeGroup: a simulator of many nodes).
type Queue struct {
	mu      sync.Mutex
	pending map[string][]*WorkItem // destination → items, oldest first; guarded by mu
	wake    map[string]chan struct{}
	groups  map[string]*group // group name → its destinations with items; guarded by mu
	cleared chan struct{}     // closed by Clear, so that takers waiting return; guarded by mu
}

// group is a set of destinations taken from together.
type group struct {
	match func(dest string) bool
	dests map[string]bool // destinations of the group that may have items
	wake  chan struct{}   // closed when one gets an item; nil if no one waits
}

func (q *Queue) initLocked() {
	if q.pending == nil {
		q.pending = map[string][]*WorkItem{}
		q.wake = map[string]chan struct{}{}
		q.groups = map[string]*group{}
		q.cleared = make(chan struct{})
	}
}

// Destination is where an item goes.
func Destination(item *WorkItem) string {
	if item.Where == "node" {
		return "node:" + item.Node
	}
	return "controller:" + item.Controller
}

func (q *Queue) Dispatch(item *WorkItem) bool {
	if item.Where == "node" && item.Node == "" {
		return false // waits until it has a node; the run says so
	}
	d := Destination(item)
	q.mu.Lock()
	q.initLocked()
	q.pending[d] = append(q.pending[d], item)
	if ch := q.wake[d]; ch != nil {
		close(ch)
		delete(q.wake, d)
	}
	for _, g := range q.groups {
		if g.match(d) {
			g.dests[d] = true
			if g.wake != nil {
				close(g.wake)
				g.wake = nil
			}
		}
	}
	q.mu.Unlock()
	return false
}

func (q *Queue) Cancel(itemID string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for d, items := range q.pending {
		for i, it := range items {
			if it.ID == itemID {
				q.pending[d] = append(items[:i:i], items[i+1:]...)
				return
			}
		}
	}
}

// Take removes and returns up to max items for a destination, waiting
// until at least one is there or ctx ends.
func (q *Queue) Take(ctx context.Context, dest string, max int) []*WorkItem {
	for {
		q.mu.Lock()
		q.initLocked()
		if items := q.pending[dest]; len(items) > 0 {
			n := min(max, len(items))
			out := append([]*WorkItem(nil), items[:n]...)
			q.pending[dest] = items[n:]
			q.mu.Unlock()
			return out
		}
		ch := q.wake[dest]
		if ch == nil {
			ch = make(chan struct{})
			q.wake[dest] = ch
		}
		cleared := q.cleared
		q.mu.Unlock()
		select {
		case <-ch:
		case <-cleared:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// Clear drops every item waiting, and takers waiting return with none: a
// server that stops leading withdraws its work (takers reporting on it
// are told it is stale), and its takers ask again, of the next leader.
func (q *Queue) Clear() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.initLocked()
	clear(q.pending)
	for _, g := range q.groups {
		clear(g.dests)
	}
	close(q.cleared)
	q.cleared = make(chan struct{})
}

// Pending counts items waiting for a destination.
func (q *Queue) Pending(dest string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending[dest])
}

// TakeGroup is Take for a taker of many destinations, those match accepts,
// known as name (the same name must always come with the same match): it
// removes and returns up to max items from any of them, waiting until at
// least one is there or ctx ends. Destinations are drained in no
// particular order, each oldest first.
//
// Dispatch keeps, per group, the destinations that got items since they
// were last drained, so a take costs what it returns, not the number of
// destinations; the first take of a group looks at every destination once.
func (q *Queue) TakeGroup(ctx context.Context, name string, match func(dest string) bool, max int) []*WorkItem {
	for {
		q.mu.Lock()
		q.initLocked()
		g := q.groups[name]
		if g == nil {
			g = &group{match: match, dests: map[string]bool{}}
			for d, items := range q.pending {
				if len(items) > 0 && match(d) {
					g.dests[d] = true
				}
			}
			q.groups[name] = g
		}
		var out []*WorkItem
		for d := range g.dests {
			items := q.pending[d]
			n := min(max-len(out), len(items))
			out = append(out, items[:n]...)
			if n == len(items) {
				delete(q.pending, d)
				delete(g.dests, d)
			} else {
				q.pending[d] = items[n:]
			}
			if len(out) == max {
				break
			}
		}
		if len(out) > 0 {
			q.mu.Unlock()
			return out
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		ch, cleared := g.wake, q.cleared
		q.mu.Unlock()
		select {
		case <-ch:
		case <-cleared:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
