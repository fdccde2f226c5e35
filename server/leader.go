package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/store"
)

// Leadership: every server runs an Orchestrator, and one at a time leads.
//
// The leader is elected through etcd (concurrency.Election on the key
// prefix PREFIX/leader): each candidate's key is tied to its session's
// lease, and the oldest key leads. Only the leader feeds the workflow
// engine and dispatches its work, and runs the cluster controllers
// (scheduler, IPAM, node lifecycle, pinned, grant checks, retries). The
// others keep what the API needs from watches (the placement cache behind
// Node status.allocated, leases, registrations) and pass the requests
// that need the leader's engine (work items, runs) to its API.
//
// A leader's time in office is a term:
//
//	campaign ──elected──▶ term: Reset engine, list every kind, resume runs,
//	   ▲                        run the controllers, guard every write
//	   │                          │
//	   └── session lost, or ◀─────┘ its context is cancelled: every piece of
//	       Run's ctx ended            leader work stops, the engine is Reset
//
// Fencing. The session's lease has a short TTL (LeaderTTL): a killed or
// partitioned leader's key goes when its lease expires, and the next
// candidate leads. The old one's session ends on its side about when the
// lease expires on etcd's, but not exactly then, and writes it sent may
// still be in flight; so every write a leader makes as leader (step
// writes and their completions, run records, evictions, pods of a
// PinnedDeployment) carries a compare on its election key's create
// revision (store.Write.Guard), and etcd applies it only while that key
// exists. Since the next leader's key is created after the old one's is
// deleted, every write of the old leader that etcd applied comes before
// the new leader's term starts, and the new leader, which lists
// everything after it is elected, sees them all.

// DefaultLeaderTTL is the TTL of a candidate's session: a leader killed
// or cut off from the etcd majority is replaced about this long after
// its last keepalive (plus up to half a second for etcd to expire the
// lease). Shorter makes failover quicker and a busy leader likelier to
// lose its lease to a slow etcd (keepalives go every third of it); etcd
// refuses TTLs much below 2 s.
const DefaultLeaderTTL = 3 * time.Second

// leaderValue is what a candidate puts in its election key.
type leaderValue struct {
	Name   string `json:"name"`
	APIURL string `json:"apiURL,omitempty"`

	// gone is closed when another server leads (or none): requests passed
	// to this one are then cancelled, and their callers try again (see
	// toLeader). Not stored.
	gone chan struct{}
}

// SetIdentity names this server and the URL of its API, as other servers
// reach it; call it before Run. A server with no name ("") is a lone
// server: it leads without an election.
func (o *Orchestrator) SetIdentity(name, apiURL string) {
	o.name, o.apiURL = name, apiURL
}

// SetLeaderTTL sets the TTL of the election session (DefaultLeaderTTL if
// not set); call it before Run.
func (o *Orchestrator) SetLeaderTTL(ttl time.Duration) {
	if ttl > 0 {
		o.leaderTTL = ttl
	}
}

// IsLeader reports whether this server leads now.
func (o *Orchestrator) IsLeader() bool { return o.cur.Load() != nil }

// electionPrefix is where the servers of a store prefix campaign.
func electionPrefix(prefix string) string { return prefix + "/leader" }

// Leader returns the name and API URL of the server that leads the
// servers of a store prefix, "" if none does.
func Leader(ctx context.Context, kv *clientv3.Client, prefix string) (name, apiURL string, err error) {
	resp, err := kv.Get(ctx, electionPrefix(prefix)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", "", fmt.Errorf("read the leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", "", nil
	}
	var v leaderValue
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return "", "", fmt.Errorf("read the leader: damaged election key %s: %v", resp.Kvs[0].Key, err)
	}
	return v.Name, v.APIURL, nil
}

// term is one time in office of this server.
type term struct {
	ctx   context.Context // ends with the term
	guard []clientv3.Cmp  // on the election key; none for a lone server
	epoch int64           // the engine's epoch during the term
	marks *markWriter     // completions of steps that write nothing
}

// termKey carries a term in the contexts of leader work.
type termKey struct{}

// inTerm returns ctx carrying t (its guard goes on the writes made with
// it) and ending when t does.
func inTerm(ctx context.Context, t *term) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithValue(ctx, termKey{}, t))
	stop := context.AfterFunc(t.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// termOf returns the term leader work runs in, nil for other work.
func termOf(ctx context.Context) *term {
	t, _ := ctx.Value(termKey{}).(*term)
	return t
}

// errNotLeader refuses leader work on a server that does not lead (any
// more).
var errNotLeader = errors.New("this server does not lead the cluster (any more)")

// term returns the current term, nil while this server does not lead.
func (o *Orchestrator) term() *term { return o.cur.Load() }

// leading reports whether t is the current term.
func (o *Orchestrator) leading(t *term) bool {
	return t != nil && o.cur.Load() == t && t.ctx.Err() == nil
}

// setTerm starts or (nil) ends a term, and tells the follows to list
// again: the engine is fed only under one term from a list on.
func (o *Orchestrator) setTerm(t *term) {
	o.cur.Store(t)
	o.termMu.Lock()
	close(o.termChanged)
	o.termChanged = make(chan struct{})
	o.termMu.Unlock()
}

// termChange returns a channel closed when a term starts or ends.
func (o *Orchestrator) termChange() <-chan struct{} {
	o.termMu.Lock()
	defer o.termMu.Unlock()
	return o.termChanged
}

// lead campaigns, serves each term won, and campaigns again, until ctx
// ends. A lone server serves one term, for as long as ctx.
func (o *Orchestrator) lead(ctx context.Context, lone *term) {
	if lone != nil {
		o.serve(lone)
		return
	}
	val, _ := json.Marshal(leaderValue{Name: o.name, APIURL: o.apiURL})
	ttl := int((o.leaderTTL + time.Second - 1) / time.Second)
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(o.kv, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		if err != nil {
			o.log.Warn("leader election: no session", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		el := concurrency.NewElection(sess, electionPrefix(o.prefix))
		tctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(ctx, cancel)
		go func() {
			select {
			case <-sess.Done():
			case <-tctx.Done():
			}
			cancel()
		}()
		if err := el.Campaign(tctx, string(val)); err != nil {
			cancel()
			stop()
			sess.Close()
			if ctx.Err() == nil {
				o.log.Warn("leader election: campaign", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		o.log.Info("leading the cluster", "server", o.name, "key", el.Key(), "rev", el.Rev())
		o.serve(&term{ctx: tctx, guard: []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())}})
		o.log.Info("no longer leading the cluster", "server", o.name)
		cancel()
		stop()
		// Resign (the session's Close revokes its lease), so that the next
		// leader need not wait for the lease to expire.
		sess.Close()
	}
}

// begin readies a term: the engine and the queue start empty.
func (o *Orchestrator) begin(t *term) {
	o.Queue.Clear()
	t.epoch = o.Engine.Reset()
	t.marks = &markWriter{kv: o.kv, guard: t.guard, wake: make(chan struct{}, 1), batch: newLeaseBatch()}
}

// serve runs the leader work of a term until the term ends; when it
// returns, all of it has stopped and the engine holds nothing. A lone
// server's term has begun already, and is current.
func (o *Orchestrator) serve(t *term) {
	if o.term() != t {
		o.begin(t)
	}
	var wg sync.WaitGroup
	ctx, cancel := inTerm(t.ctx, t)
	defer cancel()
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(t.marks.run)
	run(o.rec.run)
	if o.term() != t {
		o.setTerm(t) // the follows list again and feed the engine
	}
	run(o.life.run)
	run(o.retryFailed)
	run(func(ctx context.Context) {
		o.follow(ctx, "Grant", func(store.Event, *term) { o.recheckGrants(ctx) }, func([]api.Object, *term) { o.recheckGrants(ctx) })
	})
	run(o.pinned.follow)
	<-ctx.Done()
	o.setTerm(nil)
	wg.Wait()
	o.Queue.Clear()
	o.Engine.Reset()
}

// retryFailed starts failed runs again every RetryFailedEvery: whatever
// failed (an image that would not pull, a registry away) is tried again
// every minute, like a backoff that never gives up; steps that succeeded
// with the same inputs are skipped.
func (o *Orchestrator) retryFailed(ctx context.Context) {
	every(ctx, RetryFailedEvery, func() {
		o.Engine.RetryFailed("Node")
		o.Engine.RetryFailed("Pod")
	})
}

// followLeader keeps the leader's name and API URL (o.leader) until ctx
// ends, for the requests this server passes on.
func (o *Orchestrator) followLeader(ctx context.Context) {
	for ctx.Err() == nil {
		resp, err := o.kv.Get(ctx, electionPrefix(o.prefix)+"/", clientv3.WithFirstCreate()...)
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		v := leaderValue{gone: make(chan struct{})}
		if len(resp.Kvs) > 0 {
			json.Unmarshal(resp.Kvs[0].Value, &v)
		}
		o.setLeader(&v)
		wctx, cancel := context.WithCancel(ctx)
		wc := o.kv.Watch(wctx, electionPrefix(o.prefix)+"/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wc {
			if wr.Err() != nil || len(wr.Events) > 0 {
				break // read the leader again
			}
		}
		cancel()
	}
}

// setLeader keeps v as the leader unless it is the one kept already; the
// one it replaces is gone.
func (o *Orchestrator) setLeader(v *leaderValue) {
	if old := o.leader.Load(); old != nil {
		if old.Name == v.Name && old.APIURL == v.APIURL {
			return
		}
		close(old.gone)
	}
	o.leader.Store(v)
}

// forwardedHeader marks a request one server passed to the leader; the
// leader does not pass it on again.
const forwardedHeader = "Skiff-Forwarded-By"

var errUnavailable = errors.New("unavailable")

// toLeader passes a request that needs the leader's engine (work items,
// runs in progress) to the leader's API, and its answer back, unless this
// server leads; it reports whether it did. The caller's token goes with
// it: every server knows every token. While no leader is known, it
// answers 503, or with orRecords passes nothing (the caller answers from
// what etcd has).
func (s *Server) toLeader(w http.ResponseWriter, r *http.Request, orRecords bool) (bool, error) {
	o := s.orch
	if o.IsLeader() {
		return false, nil
	}
	v := o.leader.Load()
	if r.Header.Get(forwardedHeader) != "" || v == nil || v.APIURL == "" {
		if orRecords {
			return false, nil
		}
		return true, &statusError{kind: errUnavailable, msg: "no server leads the cluster right now (an election is under way): try again in a few seconds"}
	}
	target, err := url.Parse(v.APIURL)
	if err != nil {
		return true, fmt.Errorf("leader %s's API URL %q: %v", v.Name, v.APIURL, err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			pr.Out.Header.Set(forwardedHeader, o.name)
		},
		Transport:     o.leaderTransport(s.nodeTLS),
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				writeError(w, r, &statusError{kind: errUnavailable, msg: fmt.Sprintf("the leader, server %s, did not answer: %v; try again", v.Name, err)})
				return
			}
			// The request may have reached the leader before it went
			// quiet.
			writeError(w, r, &statusError{kind: errPassedOn, msg: fmt.Sprintf("the leader, server %s, did not answer: %v; the request may or may not have been carried out", v.Name, err)})
		},
	}
	// A request passed to a leader that then loses office (or is cut off
	// from this server, its packets dropped) would otherwise wait as long
	// as its long poll, or for ever: it is cancelled once another leads.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-v.gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	proxy.ServeHTTP(w, r.WithContext(ctx))
	return true, nil
}

// leaderTransport is how a server calls the leader's API: with the
// cluster CA when it has one (tc, the server's TLS as a client).
func (o *Orchestrator) leaderTransport(tc *tls.Config) http.RoundTripper {
	o.rtOnce.Do(func() {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if tc != nil {
			t.TLSClientConfig = tc.Clone()
		}
		// A leader cut off from this server (packets dropped, no reset)
		// is found out by HTTP/2 pings, as clients find a dead server.
		t.ForceAttemptHTTP2 = true
		// (The same intervals as client.PingInterval and PingTimeout.)
		t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 4 * time.Second, PingTimeout: 3 * time.Second}
		o.rt = t
	})
	return o.rt
}

// markWriter stores the completions of steps that write nothing, in
// shared transactions (group commit) guarded like every leader write: a
// completion is stored before its step counts as done.
type markWriter struct {
	kv    *clientv3.Client
	guard []clientv3.Cmp

	mu    sync.Mutex
	ops   []clientv3.Op // guarded by mu
	batch *leaseBatch   // the batch ops join (a group commit, as leases'); guarded by mu
	wake  chan struct{}
}

// put stores op with the next batch and returns once it is written.
func (m *markWriter) put(ctx context.Context, op clientv3.Op) error {
	m.mu.Lock()
	m.ops = append(m.ops, op)
	b := m.batch
	m.mu.Unlock()
	return b.wait(ctx, m.wake)
}

// run writes batches until ctx ends.
func (m *markWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.batch = m.batch.fail(errNotLeader)
			m.mu.Unlock()
			return
		case <-m.wake:
		}
		m.mu.Lock()
		ops, b := m.ops, m.batch
		m.ops, m.batch = nil, newLeaseBatch()
		m.mu.Unlock()
		for chunk := range slices.Chunk(ops, recordOps) {
			resp, err := m.kv.Txn(ctx).If(m.guard...).Then(chunk...).Commit()
			if err == nil && !resp.Succeeded {
				err = errNotLeader
			}
			if err != nil {
				b.err = err
				break
			}
		}
		close(b.done)
	}
}

// leaderState is the Orchestrator's part for leadership.
type leaderState struct {
	cur         atomic.Pointer[term]        // the term in office, nil when not leading
	leader      atomic.Pointer[leaderValue] // the leader, as this server last read it
	termMu      sync.Mutex
	termChanged chan struct{} // closed when a term starts or ends; guarded by termMu
	leaderTTL   time.Duration
	rtOnce      sync.Once
	rt          http.RoundTripper // to the leader's API (leaderTransport)
}
