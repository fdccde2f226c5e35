package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Serving without a quorum.
//
// A server whose etcd member has no leader (it is cut off from the
// majority of its cluster, or the cluster is electing) cannot read or
// write anything: etcd would hold each request until its own timeout,
// seconds later, and then fail it. Such a server answers every API request
// at once with 503 Service Unavailable (code "unavailable") instead, which
// tells clients that the request was not carried out and another server
// may serve it (package client moves on to the next server). Streams under
// way (watches, work long polls) are ended when the member loses its
// leader, so that their clients resume on another server rather than wait
// on one that sees no more changes.
//
// The check asks the in-process member for its status (a function call,
// no network), at most every quorumCheckEvery. With an external etcd
// cluster the server is no member and skips the check: its etcd client
// moves between endpoints itself, and etcd's own "no leader" and timeout
// errors are answered with 503 as well (httpStatus).

// quorumCheckEvery bounds how often the member's status is asked for.
const quorumCheckEvery = 100 * time.Millisecond

// quorum tells whether this server's etcd member has a leader.
type quorum struct {
	kv *clientv3.Client // nil: no check

	mu         sync.Mutex // guards the fields below
	checked    time.Time
	checking   bool // a check is asking the member
	err        error
	lost       chan struct{} // closed (and dropped) when a check finds no leader
	streams    int           // streams waiting on lost
	monitoring bool          // monitor runs
}

func newQuorum(kv *clientv3.Client) *quorum {
	if kv == nil || len(kv.Endpoints()) > 0 {
		// An external cluster (or none): not a member.
		return &quorum{}
	}
	return &quorum{kv: kv}
}

// check returns an error of kind errUnavailable while the member has no
// leader, as last seen at most quorumCheckEvery ago.
func (q *quorum) check(ctx context.Context) error {
	if q.kv == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.checking || time.Since(q.checked) < quorumCheckEvery {
		return q.err // as last seen: one request at a time asks the member
	}
	q.checking = true
	q.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	// The in-process client ignores the endpoint: it asks its member.
	st, err := q.kv.Status(ctx, "")
	cancel()
	q.mu.Lock()
	q.checking = false
	switch {
	case err != nil:
		q.err = &statusError{kind: errUnavailable, msg: "this server's etcd member does not answer (" + err.Error() + "): try another server"}
	case st.Leader == 0:
		q.err = &statusError{kind: errUnavailable, msg: "this server's etcd member has no leader (cut off from the majority, or electing): try another server"}
	default:
		q.err = nil
	}
	q.checked = time.Now()
	if q.err != nil && q.lost != nil {
		close(q.lost)
		q.lost = nil
	}
	return q.err
}

// watch returns a context that ends with ctx or when the member loses its
// leader, for streams that must not outlive the quorum. While streams
// run, one goroutine checks the member every 4*quorumCheckEvery.
func (q *quorum) watch(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	if q.kv == nil {
		return ctx, cancel
	}
	q.mu.Lock()
	if q.lost == nil {
		q.lost = make(chan struct{})
	}
	lost := q.lost
	q.streams++
	if !q.monitoring {
		q.monitoring = true
		go q.monitor()
	}
	q.mu.Unlock()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
		q.mu.Lock()
		q.streams--
		q.mu.Unlock()
	}()
	return ctx, cancel
}

// monitor checks the member while streams wait on it.
func (q *quorum) monitor() {
	for {
		time.Sleep(4 * quorumCheckEvery)
		q.mu.Lock()
		if q.streams == 0 {
			q.monitoring = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		q.check(context.Background())
	}
}

// etcdUnavailable reports whether err is etcd saying it cannot serve now
// (no leader, a leader change, a request timed out waiting for one).
func etcdUnavailable(err error) bool {
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost} {
		if errors.Is(err, e) {
			return true
		}
	}
	return errors.Is(err, errUnavailable)
}

// etcdTimedOut reports whether err is etcd giving up on a request it had
// taken: a write it may yet commit.
func etcdTimedOut(err error) bool {
	for _, e := range []error{rpctypes.ErrLeaderChanged, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
