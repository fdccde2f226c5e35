package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Writes are committed in groups. Each etcd transaction costs etcd a raft
// entry, a trace and an apply of its own, and the client a round trip
// through etcd's server: about a third of what a write costs etcd, more
// than the puts themselves. While a few transactions are in flight, the
// writes that arrive meanwhile wait and then go together, each as a
// transaction nested in one: its compares decide its own puts, so one
// write losing its race leaves the others be. A write alone is sent at
// once, as it would be without grouping.
//
// Writes go together only under the same guard (a leader's term, or
// none): the guard is the one compare of the outer transaction. Two
// writes of one object never share a transaction (etcd refuses a key put
// twice in one), so the later waits for the next.

// maxInflight is how many transactions of a guard are in flight at once
// before writes wait to be grouped.
const maxInflight = 4

// maxGroup bounds a group: etcd takes at most 128 operations in a
// transaction, counting a nested one's against what is left by its
// parent (each write is 2-4 puts and 1-2 compares), and at most
// MaxRequestBytes in a request.
const (
	maxGroup      = 48
	maxGroupBytes = MaxRequestBytes / 2
)

type committer struct {
	kv      *clientv3.Client
	mu      sync.Mutex
	groups  map[*clientv3.Cmp]*commitGroup // by the guard's first compare; nil: unguarded
	grouped atomic.Int64                   // writes that went in a transaction with others
}

// commitGroup is the writes of one guard.
type commitGroup struct {
	guard    []clientv3.Cmp
	inflight int
	queue    []*pendingWrite
}

// pendingWrite is a write waiting for its transaction.
type pendingWrite struct {
	ctx   context.Context
	key   string // the object's key: one write of an object per transaction
	cmps  []clientv3.Cmp
	ops   []clientv3.Op
	bytes int

	done chan struct{}
	resp *clientv3.TxnResponse
	ok   bool // the write's compares held
	err  error
}

// commit runs a write's transaction, with others of the same guard when
// several are waiting: cmps then ops on key, the object's key. ok reports
// whether cmps held; a guard that does not hold is ErrGuard. A write
// whose ctx ends while it waits returns ctx's error, and may still be
// committed (as any write whose caller stops waiting).
func (c *committer) commit(ctx context.Context, guard []clientv3.Cmp, key string, cmps []clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, bool, error) {
	p := &pendingWrite{ctx: ctx, key: key, cmps: cmps, ops: ops, done: make(chan struct{})}
	for _, op := range ops {
		p.bytes += len(op.KeyBytes()) + len(op.ValueBytes())
	}
	var id *clientv3.Cmp
	if len(guard) > 0 {
		id = &guard[0]
	}
	c.mu.Lock()
	if c.groups == nil {
		c.groups = map[*clientv3.Cmp]*commitGroup{}
	}
	g := c.groups[id]
	if g == nil {
		g = &commitGroup{guard: guard}
		c.groups[id] = g
	}
	g.queue = append(g.queue, p)
	send := g.inflight < maxInflight
	if send {
		g.inflight++
	}
	c.mu.Unlock()
	if send {
		c.send(g, id, p)
	}
	select {
	case <-p.done:
		return p.resp, p.ok, p.err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// send commits what g has queued, holding one of its in-flight slots;
// while more is queued when a transaction returns, it goes on in another
// goroutine, so that no writer waits for others' transactions. own is the
// write of the goroutine sending, if any: sent alone, it is sent with its
// caller's context, as it would be without grouping.
func (c *committer) send(g *commitGroup, id *clientv3.Cmp, own *pendingWrite) {
	c.mu.Lock()
	batch := c.takeLocked(g)
	c.mu.Unlock()
	c.run(g.guard, batch, own)
	c.mu.Lock()
	if len(g.queue) == 0 {
		g.inflight--
		if g.inflight == 0 && id != nil {
			delete(c.groups, id) // a term's guard is not seen again once it ends
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	go c.send(g, id, nil)
}

// takeLocked takes from g's queue the writes of one transaction: in
// order, at most one per object, within etcd's bounds. Writes whose
// callers stopped waiting are dropped.
func (c *committer) takeLocked(g *commitGroup) []*pendingWrite {
	var batch, rest []*pendingWrite
	keys := map[string]bool{}
	size := 0
	for _, p := range g.queue {
		if err := p.ctx.Err(); err != nil {
			p.err = err
			close(p.done)
			continue
		}
		if len(batch) == maxGroup || keys[p.key] || (len(batch) > 0 && size+p.bytes > maxGroupBytes) {
			rest = append(rest, p)
			continue
		}
		keys[p.key] = true
		size += p.bytes
		batch = append(batch, p)
	}
	g.queue = rest
	return batch
}

// run commits batch in one transaction, or a lone write as its own.
func (c *committer) run(guard []clientv3.Cmp, batch []*pendingWrite, own *pendingWrite) {
	switch len(batch) {
	case 0:
		return
	case 1:
		p := batch[0]
		ctx := p.ctx
		if p != own {
			ctx = context.WithoutCancel(ctx)
		}
		p.resp, p.ok, p.err = c.alone(ctx, guard, p)
		close(p.done)
		return
	}
	c.grouped.Add(int64(len(batch)))
	subs := make([]clientv3.Op, len(batch))
	for i, p := range batch {
		subs[i] = clientv3.OpTxn(p.cmps, p.ops, nil)
	}
	resp, err := c.kv.Txn(context.Background()).If(guard...).Then(subs...).Commit()
	if errors.Is(err, rpctypes.ErrDuplicateKey) {
		// Two writes touched one key beyond their objects' (an
		// operation passed along with a write): each goes alone.
		for _, p := range batch {
			p.resp, p.ok, p.err = c.alone(context.WithoutCancel(p.ctx), guard, p)
			close(p.done)
		}
		return
	}
	for i, p := range batch {
		switch {
		case err != nil:
			p.err = err
		case !resp.Succeeded:
			p.err = ErrGuard
		default:
			sub := resp.Responses[i].GetResponseTxn()
			p.resp = &clientv3.TxnResponse{Header: resp.Header, Succeeded: sub.Succeeded, Responses: sub.Responses}
			p.ok = sub.Succeeded
		}
		close(p.done)
	}
}

// alone commits one write in a transaction of its own.
func (c *committer) alone(ctx context.Context, guard []clientv3.Cmp, p *pendingWrite) (*clientv3.TxnResponse, bool, error) {
	if len(guard) == 0 {
		resp, err := c.kv.Txn(ctx).If(p.cmps...).Then(p.ops...).Commit()
		return resp, err == nil && resp.Succeeded, err
	}
	resp, err := c.kv.Txn(ctx).If(guard...).Then(clientv3.OpTxn(p.cmps, p.ops, nil)).Commit()
	if err != nil {
		return nil, false, err
	}
	if !resp.Succeeded {
		return nil, false, ErrGuard
	}
	return resp, resp.Responses[0].GetResponseTxn().Succeeded, nil
}
