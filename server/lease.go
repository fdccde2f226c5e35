package server

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Node leases: when each node's agent was last heard from.
//
// A heartbeat renews the node's lease and is not an object revision: the
// Node's history shows what changed about a node (its capacity, its
// address, becoming unreachable), not that it was alive every ten seconds.
// Each lease is a plain etcd key, PREFIX/leases/NODE, holding the time the
// server took the heartbeat, so that every server (and whoever takes over
// the node lifecycle) sees the same leases. Renewals are written in
// batches (group commit): a heartbeat is answered once its lease is in
// etcd, and a burst of thousands of heartbeats is a handful of
// transactions.
type leaseTable struct {
	kv     *clientv3.Client
	prefix string // PREFIX/leases/

	mu      sync.Mutex
	heard   map[string]time.Time // node → last renewal in etcd
	pending map[string]time.Time // renewals not written yet
	batch   *leaseBatch          // the batch pending renewals join
	wake    chan struct{}
	onRenew func(node string, at time.Time) // called for each renewal written or seen
}

// leaseBatch is one group commit; done is closed once it is written.
type leaseBatch struct {
	done chan struct{}
	err  error
}

func newLeaseBatch() *leaseBatch { return &leaseBatch{done: make(chan struct{})} }

// fail ends the batch with err and returns a new one to gather the next.
func (b *leaseBatch) fail(err error) *leaseBatch {
	b.err = err
	close(b.done)
	return newLeaseBatch()
}

// maxLeaseOps bounds the puts of one transaction (etcd's default
// --max-txn-ops is 128).
const maxLeaseOps = 100

func newLeaseTable(kv *clientv3.Client, prefix string) *leaseTable {
	return &leaseTable{kv: kv, prefix: prefix + "/leases/", heard: map[string]time.Time{},
		pending: map[string]time.Time{}, batch: newLeaseBatch(), wake: make(chan struct{}, 1)}
}

// renew records that node was heard from now, and returns once that is in
// etcd.
func (l *leaseTable) renew(ctx context.Context, node string) error {
	l.mu.Lock()
	l.pending[node] = time.Now().UTC()
	b := l.batch
	l.mu.Unlock()
	return b.wait(ctx, l.wake)
}

// wait wakes the writer of the batch (a send on wake that never blocks)
// and returns once the batch is written, with its error.
func (b *leaseBatch) wait(ctx context.Context, wake chan<- struct{}) error {
	select {
	case wake <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// lastHeard returns when node was last heard from, zero if never.
func (l *leaseTable) lastHeard(node string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heard[node]
}

// forget drops a node's lease.
func (l *leaseTable) forget(ctx context.Context, node string) error {
	l.mu.Lock()
	delete(l.heard, node)
	delete(l.pending, node)
	l.mu.Unlock()
	_, err := l.kv.Delete(ctx, l.prefix+node)
	return err
}

// run writes renewals until ctx ends, and takes in those other servers
// write.
func (l *leaseTable) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); l.follow(ctx) }()
	for {
		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.batch = l.batch.fail(errStopping)
			l.mu.Unlock()
			return
		case <-l.wake:
		}
		// Let a burst gather: one transaction carries many renewals.
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
		l.mu.Lock()
		pending, b := l.pending, l.batch
		l.pending, l.batch = map[string]time.Time{}, newLeaseBatch()
		l.mu.Unlock()
		b.err = l.write(ctx, pending)
		if b.err != nil && ctx.Err() != nil {
			b.err = errStopping // cut short by the server stopping, not failed
		}
		if b.err == nil {
			for node, at := range pending {
				l.saw(node, at)
			}
		}
		close(b.done)
	}
}

// write puts renewals in transactions of at most maxLeaseOps.
func (l *leaseTable) write(ctx context.Context, renewals map[string]time.Time) error {
	ops := make([]clientv3.Op, 0, min(len(renewals), maxLeaseOps))
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := l.kv.Txn(wctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for node, at := range renewals {
		ops = append(ops, clientv3.OpPut(l.prefix+node, at.Format(time.RFC3339Nano)))
		if len(ops) == maxLeaseOps {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// saw takes in a renewal, keeping the latest.
func (l *leaseTable) saw(node string, at time.Time) {
	l.mu.Lock()
	if !at.After(l.heard[node]) {
		l.mu.Unlock()
		return
	}
	l.heard[node] = at
	f := l.onRenew
	l.mu.Unlock()
	if f != nil {
		f(node, at)
	}
}

// follow loads the leases in etcd, then watches them: renewals other
// servers took count as much as this one's.
func (l *leaseTable) follow(ctx context.Context) {
	for ctx.Err() == nil {
		resp, err := l.kv.Get(ctx, l.prefix, clientv3.WithPrefix())
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		for _, kv := range resp.Kvs {
			if at, err := time.Parse(time.RFC3339Nano, string(kv.Value)); err == nil {
				l.saw(string(kv.Key[len(l.prefix):]), at)
			}
		}
		for wr := range l.kv.Watch(ctx, l.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					l.mu.Lock()
					delete(l.heard, string(ev.Kv.Key[len(l.prefix):]))
					l.mu.Unlock()
					continue
				}
				if at, err := time.Parse(time.RFC3339Nano, string(ev.Kv.Value)); err == nil {
					l.saw(string(ev.Kv.Key[len(l.prefix):]), at)
				}
			}
		}
	}
}
