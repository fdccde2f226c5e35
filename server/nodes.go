package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/ownership"
	"skiff.dev/skiff/store"
	"skiff.dev/skiff/workflow"
)

// The node lifecycle (built-in controller `nodes`).
//
// A node is, from the servers' side:
//
//	ready ──no heartbeat for a lease──▶ unreachable ──heartbeat──▶ ready
//	                                        │
//	                   lease + margin more  ▼
//	           its failover:fast pods are evicted and placed elsewhere
//	           (its agent fenced them: it stops them after a lease alone)
//
// and, by the operator's word: cordoned (spec.unschedulable: no new
// pods), draining (spec.drain: every pod is moved away, each stopped on
// the node before it is placed elsewhere), gone (`skiff node forget`:
// every pod it held is placed elsewhere at once). `failover: manual` pods
// on an unreachable node stay where they are until the operator drains or
// forgets it.
//
// Evicting a pod writes its status.evicted (the node and why) and runs its
// workflow again: the schedule step reads status.evicted and places the
// pod anywhere but that node; the steps after it follow the new node.
// When an unreachable node comes back with evicted pods still on it (none
// fitted elsewhere), the eviction is withdrawn and they stay.

// Node lease defaults: DefaultNodeLease is how long a node counts as alive
// after its last heartbeat (agents fence after the same lease), and
// DefaultFailoverMargin how much longer the servers wait before moving
// fast pods: more than the time a fenced pod takes to stop.
const (
	DefaultNodeLease      = 40 * time.Second
	DefaultFailoverMargin = 20 * time.Second
)

// Node reachability, in Node:status.reachability.
const (
	reachable   = "reachable"
	unreachable = "unreachable"
)

// lifecycle is the node lifecycle controller's state.
type lifecycle struct {
	o       *Orchestrator
	lease   time.Duration
	margin  time.Duration
	started time.Time // leases count from here at the earliest: a server that was down heard nothing
	// release stops a pod on a reachable node before it moves (drain);
	// set by the API server, which can call agents.
	release func(ctx context.Context, node, ns, name string) error

	mu    sync.Mutex
	nodes map[string]*nodeView // as the store shows them

	// settled remembers, for a node whose pods were all dealt with by an
	// eviction pass (evicted, or not to be), the placement cache's
	// generation of its pods then: a node whose pods did not change since
	// needs no pass, so a node unreachable for weeks costs nothing per
	// check. Used by check only.
	settled map[settledPass]uint64
}

// settledPass names an eviction pass over a node's pods: which node, and
// what it evicts (the fast pods of an unreachable node, or every pod of
// a forgotten one).
type settledPass struct {
	node string
	all  bool
}

// nodeView is what the lifecycle needs of a Node.
type nodeView struct {
	reachability string // status.reachability as stored
	drain        bool   // spec.drain
	drainStatus  string // status.drain as stored
}

func newLifecycle(o *Orchestrator) *lifecycle {
	return &lifecycle{o: o, lease: DefaultNodeLease, margin: DefaultFailoverMargin, nodes: map[string]*nodeView{}, settled: map[settledPass]uint64{}}
}

// SetNodeLease sets the node lease and the failover margin after it
// (tests shorten both); call it before Run.
func (o *Orchestrator) SetNodeLease(lease, margin time.Duration) {
	if lease > 0 {
		o.life.lease = lease
	}
	if margin > 0 {
		o.life.margin = margin
	}
}

// nodeEvent takes in a Node as the store shows it.
func (l *lifecycle) nodeEvent(ev store.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ev.Type == store.Deleted {
		delete(l.nodes, ev.Object.Name)
		return
	}
	l.setLocked(&ev.Object)
}

func (l *lifecycle) nodeList(objs []api.Object) {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.nodes)
	for i := range objs {
		l.setLocked(&objs[i])
	}
}

func (l *lifecycle) setLocked(o *api.Object) {
	v := &nodeView{reachability: str(o.Status["reachability"]), drainStatus: str(o.Status["drain"])}
	if spec, err := api.DecodeSpecAs[api.NodeSpec](o); err == nil {
		v.drain = spec.Drain
	}
	l.nodes[o.Name] = v
}

// run checks every node a few times per lease until ctx ends.
func (l *lifecycle) run(ctx context.Context) {
	if err := l.o.places.wait(ctx); err != nil {
		return
	}
	l.started = time.Now()
	period := min(max(l.lease/8, 50*time.Millisecond), 2*time.Second)
	every(ctx, period, func() { l.check(ctx, time.Now()) })
}

// check brings every node's state and its pods' placement up to date.
func (l *lifecycle) check(ctx context.Context, now time.Time) {
	l.mu.Lock()
	names := make([]string, 0, len(l.nodes))
	views := make(map[string]nodeView, len(l.nodes))
	for n, v := range l.nodes {
		names = append(names, n)
		views[n] = *v
	}
	l.mu.Unlock()
	sort.Strings(names)
	for _, name := range names {
		v := views[name]
		heard := l.o.leases.lastHeard(name)
		since := heard
		if since.Before(l.started) {
			since = l.started
		}
		silent := now.Sub(since)
		switch {
		case silent > l.lease && v.reachability != unreachable:
			l.writeNode(ctx, name, fmt.Sprintf("no heartbeat for %s (the lease)", l.lease.Round(time.Millisecond)), map[string]any{
				"status.reachability":     unreachable,
				"status.unreachableSince": since.Add(l.lease).UTC().Format(time.RFC3339Nano),
			})
		case silent <= l.lease && v.reachability == unreachable:
			l.writeNode(ctx, name, "heartbeat again", map[string]any{"status.reachability": reachable, "status.unreachableSince": nil})
			l.withdraw(ctx, name)
		case silent <= l.lease && v.reachability == "":
			l.writeNode(ctx, name, "first heartbeat", map[string]any{"status.reachability": reachable})
		}
		if silent > l.lease+l.margin {
			l.evictAll(ctx, name, fmt.Sprintf("node %s unreachable: no heartbeat since %s", name, heardText(heard)), false)
		}
		if v.drain {
			l.drain(ctx, name, v, silent <= l.lease)
		} else if v.drainStatus != "" {
			l.writeNode(ctx, name, "drain cancelled", map[string]any{"status.drain": nil})
		}
	}
	// Pods held by nodes that are gone (forgotten) are placed elsewhere.
	for _, node := range l.o.places.orphanNodes() {
		l.evictAll(ctx, node, fmt.Sprintf("node %s was forgotten", node), true)
	}
}

func heardText(t time.Time) string {
	if t.IsZero() {
		return "this server started"
	}
	return t.UTC().Format(time.RFC3339)
}

// drain moves every pod off a draining node: each is stopped by the
// node's agent first, so no two copies run. A pod whose agent does not
// answer waits (a fast one leaves once the node has been unreachable for
// the lease and margin); status.drain says how far it got.
func (l *lifecycle) drain(ctx context.Context, node string, v nodeView, reach bool) {
	pods, _ := l.o.places.placedOn(node)
	waiting := 0
	for _, k := range pods {
		p, err := l.o.store.Get(ctx, api.Ref{Kind: "Pod", Namespace: k.ns, Name: k.name})
		if err != nil || str(p.Status["node"]) != node || evictedFrom(&p) == node {
			continue
		}
		if reach && l.release != nil {
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			err = l.release(rctx, node, p.Namespace, p.Name)
			cancel()
		} else {
			err = fmt.Errorf("the node is unreachable")
		}
		if err != nil {
			waiting++
			l.o.log.Warn("drain: pod not stopped on its node yet", "node", node, "pod", p.Namespace+"/"+p.Name, "err", err)
			continue
		}
		l.evict(ctx, &p, node, "node "+node+" is draining")
	}
	msg := "drained"
	if waiting > 0 {
		msg = fmt.Sprintf("waiting for node %s to stop %d pod(s); `skiff node forget %s` if it is gone for good", node, waiting, node)
	} else if len(pods) > 0 {
		msg = fmt.Sprintf("moving %d pod(s)", len(pods))
	}
	if msg != v.drainStatus {
		l.writeNode(ctx, node, "drain", map[string]any{"status.drain": msg})
	}
}

// evictAll evicts the pods on node, all of them or only the failover:
// fast ones, unless they were already. A node whose pods have not
// changed since a pass that dealt with all of them is skipped; an
// eviction changes its pod, so the pass after it reads them again and
// then settles.
func (l *lifecycle) evictAll(ctx context.Context, node, why string, all bool) {
	pass := settledPass{node, all}
	pods, gen := l.o.places.placedOn(node)
	if len(pods) == 0 {
		delete(l.settled, pass)
		return
	}
	if g, ok := l.settled[pass]; ok && g == gen {
		return
	}
	done := true
	for _, k := range pods {
		p, err := l.o.store.Get(ctx, api.Ref{Kind: "Pod", Namespace: k.ns, Name: k.name})
		if err != nil {
			done = done && store.IsNotFound(err)
			continue
		}
		if str(p.Status["node"]) != node || evictedFrom(&p) == node || p.Meta.Deleting != nil || !all && failoverOf(&p) != api.FailoverFast {
			continue
		}
		done = l.evict(ctx, &p, node, why) && done
	}
	if done {
		l.settled[pass] = gen
	}
}

// evict records why a pod leaves node and runs its workflow again, which
// places it elsewhere; false if the eviction could not be written.
func (l *lifecycle) evict(ctx context.Context, p *api.Object, node, why string) bool {
	l.o.log.Info("evicting pod", "pod", p.Namespace+"/"+p.Name, "node", node, "why", why)
	return l.setEviction(ctx, p, map[string]any{"node": node, "reason": why, "at": time.Now().UTC().Format(time.RFC3339Nano)},
		why, "evicted: "+why)
}

// withdraw cancels the evictions of pods still on a node that is back:
// nowhere else took them, so they stay.
func (l *lifecycle) withdraw(ctx context.Context, node string) {
	pods, _ := l.o.places.placedOn(node)
	for _, k := range pods {
		p, err := l.o.store.Get(ctx, api.Ref{Kind: "Pod", Namespace: k.ns, Name: k.name})
		if err != nil || str(p.Status["node"]) != node || evictedFrom(&p) != node {
			continue
		}
		why := "node " + node + " is back before the pod found another node"
		l.setEviction(ctx, &p, nil, why, why)
	}
}

// setEviction writes a pod's status.evicted (nil withdraws it) for why,
// and runs the pod's workflow again for cause, reading the new value.
func (l *lifecycle) setEviction(ctx context.Context, p *api.Object, evicted map[string]any, why, cause string) bool {
	ref := workflow.Ref{Kind: "Pod", Namespace: p.Namespace, Name: p.Name}
	var v any
	if evicted != nil {
		v = evicted
	}
	body, err := l.o.writeAs(ctx, ref, "controller:nodes", why, map[string]any{"status.evicted": v})
	if err != nil {
		l.o.log.Warn("pod eviction", "pod", p.Namespace+"/"+p.Name, "err", err)
		return false
	}
	l.o.Engine.Rerun(workflow.Object{Ref: ref, Generation: p.Meta.Generation, Body: body}, cause)
	return true
}

func (l *lifecycle) writeNode(ctx context.Context, node, why string, writes map[string]any) {
	if _, err := l.o.writeAs(ctx, workflow.Ref{Kind: "Node", Name: node}, "controller:nodes", why, writes); err != nil {
		l.o.log.Warn("node lifecycle", "node", node, "err", err)
	}
}

// evictedFrom returns the node a pod was evicted from, or "".
func evictedFrom(p *api.Object) string {
	ev, _ := p.Status["evicted"].(map[string]any)
	return str(ev["node"])
}

func failoverOf(p *api.Object) string {
	spec, err := api.DecodeSpecAs[api.PodSpec](p)
	if err != nil {
		return api.FailoverManual
	}
	return spec.Failover
}

// HeartbeatRequest is what an agent sends every heartbeat period: the
// status fields it owns, as "status.FIELD": VALUE.
type HeartbeatRequest struct {
	Status map[string]any `json:"status"`
}

// HeartbeatResponse tells the agent its lease and the failover margin.
type HeartbeatResponse struct {
	Lease          string `json:"lease"`
	FailoverMargin string `json:"failoverMargin"`
}

// heartbeat renews a node's lease and writes the status it reports, only
// the fields that changed: a heartbeat alone is not a revision.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, tok Token) error {
	ref := api.Ref{Kind: "Node", Name: r.PathValue("node")}
	if err := api.ValidateName(ref.Name); err != nil {
		return badRequest("node name %v", err)
	}
	tok, err := s.actAs(r.Context(), tok, ref)
	if err != nil {
		return err
	}
	if id := identityOf(tok); id.Kind != identity.Node || id.Name != ref.Name {
		return forbidden("%s may not heartbeat for node %s: only that node's agent does", tok.Identity, ref.Name)
	}
	var req HeartbeatRequest
	if err := decodeBody(r, &req, `heartbeat needs {"status": {"status.FIELD": VALUE, ...}}`); err != nil {
		return err
	}
	for p := range req.Status {
		if !strings.HasPrefix(p, "status.") {
			return badRequest("heartbeat writes %s: only status fields", p)
		}
	}
	for p := range req.Status {
		if _, err := fieldpath.Parse(p); err != nil {
			return badRequest("heartbeat writes %q: %v", p, err)
		}
	}
	// Every field reported is written; the store writes a revision only
	// if one changed, and proves the Node it compared against current
	// (a heartbeat reads no etcd when the store knows the Node).
	var writeErr error
	if len(req.Status) > 0 {
		_, writeErr = s.orch.Write(r.Context(), toRef(ref), tok.Identity, "", req.Status)
	} else {
		_, writeErr = s.store.Get(r.Context(), ref)
	}
	if errors.Is(writeErr, store.ErrNotFound) {
		return writeErr
	}
	if err := s.orch.leases.renew(r.Context(), ref.Name); err != nil {
		return fmt.Errorf("renew node %s's lease: %w", ref.Name, err)
	}
	if writeErr != nil {
		var no *ownership.NotOwnerError
		if errors.As(writeErr, &no) {
			return &statusError{kind: errForbidden, msg: writeErr.Error()}
		}
		return writeErr
	}
	writeJSON(w, 200, HeartbeatResponse{Lease: s.orch.life.lease.String(), FailoverMargin: s.orch.life.margin.String()})
	return nil
}

// withLease adds to a Node what the servers know of it and do not store
// in it: status.heartbeat, when its agent was last heard from (its
// lease), and status.allocated, what the pods placed on it hold.
func (s *Server) withLease(o *api.Object) {
	if o.Kind != "Node" {
		return
	}
	st := maps.Clone(o.Status)
	if st == nil {
		st = map[string]any{}
	}
	if at := s.orch.leases.lastHeard(o.Name); !at.IsZero() {
		st["heartbeat"] = at.Format(time.RFC3339Nano)
	}
	u := s.orch.places.allocated(o.Name)
	st["allocated"] = map[string]any{"cpuMilli": u.CPUMilli, "memoryBytes": u.MemoryBytes, "pods": u.Pods}
	o.Status = st
}

// releasePod asks a node's agent to stop a pod and forget it, before the
// pod is placed elsewhere (drain).
func (s *Server) releasePod(ctx context.Context, node, ns, name string) error {
	h, err := s.nodeAPI(ctx, node)
	if err != nil {
		return err
	}
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/pods/"+ns+"/"+name+"/release", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("node %s's agent: %s: %s", node, http.StatusText(rec.Code), strings.TrimSpace(rec.Body.String()))
	}
	return nil
}
