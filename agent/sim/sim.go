// Package sim runs simulated ("hollow") nodes, as Kubernetes' kubemark
// does: N Node objects, PREFIX-00001 … PREFIX-0000N, that register, report
// a capacity, heartbeat, and take and complete the work the workflow
// engine dispatches to them at once, reporting every pod Running without
// starting a container. It goes through the real API over HTTPS as one
// identity, simulator:PREFIX (`skiff token create --simulator PREFIX`),
// so what it measures is the control plane: API, store, workflow engine,
// scheduler.
//
// It is not a fake agent for tests of the agent: it has no runtime, no
// network and no state; the pods it "runs" exist only in the API, and it
// forgets them when it stops. `skiff agent --simulate N` runs it as a
// process; tests and `skiff bench schedule` run it in theirs.
//
// One long poll takes the work of all its nodes (up to Batch items); the
// items are done at once and their outcomes reported in lists (POST
// /v1/work/done), over Conns HTTP/2 connections: a request per outcome
// (two per pod) was a large share of the CPU a pod cost, in the simulator
// and in the server.
// Heartbeats are spread evenly over the heartbeat period, so that N nodes
// write N/period times a second rather than N at once.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/workflow"
)

// Defaults of Options.
const (
	DefaultCPUMilli    = 16000    // 16 CPUs
	DefaultMemoryBytes = 64 << 30 // 64 GiB
	DefaultPods        = 110      // as Kubernetes' default max pods per node
	// DefaultHeartbeat is longer than a real agent's (10 s): at thousands
	// of nodes the heartbeats are most of the server's steady writes, and
	// 20 s still leaves two missed beats before the scheduler's 40 s.
	DefaultHeartbeat = 20 * time.Second
	DefaultBatch     = 1024
	// DefaultWorkers is how many registrations and heartbeats are in
	// flight at once.
	DefaultWorkers = 256
	DefaultConns   = 4
)

// Label marks the Node objects of a simulator; its value is the prefix.
const Label = "skiff.dev/simulator"

// Options configure a simulator. Zero values take the defaults.
type Options struct {
	// Config reaches the API with a simulator:PREFIX token. Required.
	Config client.Config
	// Prefix names the nodes PREFIX-00001…; it must be the token's.
	Prefix string
	// Nodes is how many nodes to run; at least 1.
	Nodes int
	// Capacity reported by every node: DefaultCPUMilli, DefaultMemoryBytes
	// and DefaultPods.
	CPUMilli, MemoryBytes int64
	Pods                  int
	// Heartbeat is each node's heartbeat period; default DefaultHeartbeat.
	Heartbeat time.Duration
	// Batch is the most work items one long poll takes; default
	// DefaultBatch.
	Batch int
	// Workers bounds the registrations and heartbeats in flight; default
	// DefaultWorkers.
	Workers int
	// Conns is how many HTTP/2 connections requests are spread over, and
	// how many lists of outcomes are reported at once; default
	// DefaultConns.
	Conns int
	// Labels are added to every Node, besides Label.
	Labels map[string]string
	Log    *slog.Logger
}

// Sim runs the nodes. Build it with New.
type Sim struct {
	o       Options
	clients []*client.Client
	next    atomic.Uint32 // round robin over clients

	mu   sync.Mutex
	pods map[string]string // "ns/name" → node, of pods started; guarded by mu
	per  map[string]int    // node → pods started on it; guarded by mu

	registered atomic.Int64
	isReg      []atomic.Bool // by node number: registered, so it heartbeats
	done       sync.Map      // step → *atomic.Int64, items completed
	failed     atomic.Int64
	beats      atomic.Int64
	ready      chan struct{} // closed once every node is registered
}

// New checks o and builds a simulator.
func New(o Options) (*Sim, error) {
	if o.Nodes < 1 {
		return nil, errors.New("sim: at least one node")
	}
	if err := api.ValidateName(identity.SimulatedNode(o.Prefix, o.Nodes)); err != nil {
		return nil, fmt.Errorf("sim: prefix %q: node name %v", o.Prefix, err)
	}
	if o.CPUMilli == 0 {
		o.CPUMilli = DefaultCPUMilli
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.Pods == 0 {
		o.Pods = DefaultPods
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.Conns == 0 {
		o.Conns = DefaultConns
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Sim{o: o, pods: map[string]string{}, per: map[string]int{}, ready: make(chan struct{}), isReg: make([]atomic.Bool, o.Nodes+1)}
	for range o.Conns {
		c, err := client.New(o.Config)
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		s.clients = append(s.clients, c)
	}
	return s, nil
}

// Node is the name of the i-th node, from 1.
func (s *Sim) Node(i int) string { return identity.SimulatedNode(s.o.Prefix, i) }

// Ready is closed once every node is registered and has reported its
// capacity; readiness (status.network) follows from its Node workflow.
func (s *Sim) Ready() <-chan struct{} { return s.ready }

// Stats are what a simulator did so far.
type Stats struct {
	Registered int64            // nodes
	Heartbeats int64            // after registration
	Done       map[string]int64 // work items completed, by step
	Failed     int64            // completions the server refused or never answered (stale items excepted)
}

// Stats returns what the simulator did so far.
func (s *Sim) Stats() Stats {
	st := Stats{Registered: s.registered.Load(), Heartbeats: s.beats.Load(), Failed: s.failed.Load(), Done: map[string]int64{}}
	s.done.Range(func(k, v any) bool {
		st.Done[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return st
}

func (s *Sim) client() *client.Client {
	return s.clients[int(s.next.Add(1))%len(s.clients)]
}

// Run registers the nodes, then heartbeats them and does their work until
// ctx ends. It checks first that the token is simulator:PREFIX.
func (s *Sim) Run(ctx context.Context) error {
	who, _, err := s.client().Whoami(ctx)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if want := identity.Simulator + ":" + s.o.Prefix; who != want {
		return fmt.Errorf("sim: the token is for %s, not %s (skiff token create --simulator %s makes one)", who, want, s.o.Prefix)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before the wait: a failed registration stops the rest
	// Work is taken, and registered nodes heartbeat, from the start: a
	// node's readiness run begins as soon as it is registered, and the
	// first nodes must not go stale while the last register.
	done := make(chan outcome, s.o.Batch)
	wg.Add(2 + s.o.Conns)
	go func() { defer wg.Done(); s.takeLoop(ctx, done) }()
	for range s.o.Conns {
		go func() { defer wg.Done(); s.reportLoop(ctx, done) }()
	}
	go func() { defer wg.Done(); s.heartbeatLoop(ctx) }()
	if err := s.register(ctx); err != nil {
		return err
	}
	close(s.ready)
	s.o.Log.Info("simulated nodes registered", "nodes", s.o.Nodes, "prefix", s.o.Prefix)
	<-ctx.Done()
	return nil
}

// register applies every Node (keeping the spec operators set: cordons)
// and reports its status, with Workers requests in flight.
func (s *Sim) register(ctx context.Context) error {
	existing := map[string]api.Object{}
	for ctx.Err() == nil {
		l, err := s.client().List(ctx, "Node", "", "")
		if err == nil {
			for _, n := range l.Items {
				existing[n.Name] = n
			}
			break
		}
		s.o.Log.Warn("list nodes", "err", err)
		sleep(ctx, time.Second)
	}
	labels := map[string]string{Label: s.o.Prefix}
	for k, v := range s.o.Labels {
		labels[k] = v
	}
	next := make(chan int)
	var refused atomic.Bool // the server refused a registration: no use trying the rest
	var wg sync.WaitGroup
	for range s.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if refused.Load() {
					continue
				}
				name := s.Node(i)
				node := api.Object{Kind: "Node", Name: name, Labels: labels, Spec: existing[name].Spec}
				for ctx.Err() == nil {
					c := s.client()
					_, err := c.Apply(ctx, node, 0)
					if err == nil {
						_, err = c.Heartbeat(ctx, name, s.status(name, true))
					}
					if err == nil {
						s.registered.Add(1)
						s.isReg[i].Store(true)
						break
					}
					s.o.Log.Warn("register node", "node", name, "err", err)
					if client.IsCode(err, "forbidden") || client.IsCode(err, "unauthenticated") {
						refused.Store(true)
						break
					}
					sleep(ctx, time.Second)
				}
			}
		}()
	}
	for i := 1; i <= s.o.Nodes && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if n := s.registered.Load(); n < int64(s.o.Nodes) {
		return fmt.Errorf("sim: registered %d of %d nodes: the server refused the others (see the log)", n, s.o.Nodes)
	}
	return nil
}

// status is what a node reports: all of it at registration, the
// heartbeat and the pod count after.
func (s *Sim) status(node string, full bool) map[string]any {
	s.mu.Lock()
	pods := s.per[node]
	s.mu.Unlock()
	st := map[string]any{"status.pods": pods}
	if full {
		st["status.state"] = "ready"
		st["status.capacity"] = map[string]any{"cpuMilli": s.o.CPUMilli, "memoryBytes": s.o.MemoryBytes, "pods": s.o.Pods}
	}
	return st
}

// heartbeatLoop reports every registered node once per period, node i at
// offset (i-1)·period/N, with at most Workers reports in flight: a server
// slower than that delays beats rather than piling them up.
func (s *Sim) heartbeatLoop(ctx context.Context) {
	const tick = 50 * time.Millisecond
	due := make(chan int, s.o.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range min(s.o.Workers, s.o.Nodes) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range due {
				if !s.isReg[i].Load() {
					continue // reported when it registers
				}
				name := s.Node(i)
				rctx, cancel := context.WithTimeout(ctx, s.o.Heartbeat)
				_, err := s.client().Heartbeat(rctx, name, s.status(name, false))
				cancel()
				if err == nil {
					s.beats.Add(1)
				} else if ctx.Err() == nil {
					s.o.Log.Warn("heartbeat", "node", name, "err", err)
				}
			}
		}()
	}
	defer close(due)
	t := time.NewTicker(tick)
	defer t.Stop()
	start, sent := time.Now(), int64(0) // beats sent since start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			want := int64(now.Sub(start)) * int64(s.o.Nodes) / int64(s.o.Heartbeat)
			for ; sent < want; sent++ {
				select {
				case due <- int(sent%int64(s.o.Nodes)) + 1:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// outcome is a work item done, to report.
type outcome struct {
	client.Completion
	step, kind, namespace, name string // of the item, for the stats and the log
}

// takeLoop long-polls for the work of all the nodes, does it, and hands
// the outcomes to the reporters. It waits while they are behind: the
// items not taken yet wait in the server's queue instead.
func (s *Sim) takeLoop(ctx context.Context, out chan<- outcome) {
	defer close(out)
	for ctx.Err() == nil {
		items, err := s.client().TakeWork(ctx, 30*time.Second, s.o.Batch)
		if err != nil {
			if ctx.Err() == nil {
				s.o.Log.Warn("take work", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for i := range items {
			it := &items[i]
			o := outcome{Completion: client.Completion{ID: it.ID, Result: s.do(it)}, step: it.Step, kind: it.Kind, namespace: it.Namespace, name: it.Name}
			select {
			case out <- o:
			case <-ctx.Done():
				return
			}
		}
	}
}

// reportLoop reports outcomes in lists: whatever is waiting when it is
// free, so that a lone outcome goes at once and, while a list is in
// flight, the next ones gather for the one after.
func (s *Sim) reportLoop(ctx context.Context, in <-chan outcome) {
	// Reports are sent even once ctx ends, bounded by a timeout of their
	// own.
	reports := context.WithoutCancel(ctx)
	batch := make([]outcome, 0, s.o.Batch)
	list := make([]client.Completion, 0, s.o.Batch)
	for o := range in {
		batch = append(batch[:0], o)
	gather:
		for len(batch) < cap(batch) {
			select {
			case o, ok := <-in:
				if !ok {
					break gather
				}
				batch = append(batch, o)
			default:
				break gather
			}
		}
		list = list[:0]
		for i := range batch {
			list = append(list, batch[i].Completion)
		}
		rctx, cancel := context.WithTimeout(reports, 30*time.Second)
		errs, _ := s.client().CompleteWorkList(rctx, list)
		cancel()
		for i, err := range errs {
			o := &batch[i]
			switch {
			case err == nil:
				s.count(o.step)
			case client.IsCode(err, "conflict"):
				// Superseded or timed out meanwhile: nothing to report.
			default:
				s.failed.Add(1)
				s.o.Log.Warn("report step", "step", o.step, "object", o.kind+"/"+o.namespace+"/"+o.name, "err", err)
			}
		}
		clear(batch) // the outcomes are reported: let their writes go
		clear(list)
	}
}

func (s *Sim) count(step string) {
	v, ok := s.done.Load(step)
	if !ok {
		v, _ = s.done.LoadOrStore(step, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// do is a step of a simulated node: done at once. A pod started is
// Running, with each container running; nothing is started.
func (s *Sim) do(it *workflow.WorkItem) workflow.Result {
	if it.Kind == "Node" {
		switch it.Step {
		case "forwarding", "egress":
			return workflow.Result{}
		case "routes":
			return workflow.Result{Writes: map[string]any{"status.network": "ready"}}
		}
		return workflow.Result{Err: fmt.Sprintf("a simulated node has no node step %q", it.Step)}
	}
	key := it.Namespace + "/" + it.Name
	switch it.Step {
	case "netup", "netdown":
		return workflow.Result{}
	case "start":
		s.mu.Lock()
		if old, ok := s.pods[key]; !ok || old != it.Node {
			if ok {
				s.per[old]--
			}
			s.pods[key] = it.Node
			s.per[it.Node]++
		}
		s.mu.Unlock()
		now := time.Now().UTC().Format(time.RFC3339Nano)
		spec, _ := it.Object["spec"].(map[string]any)
		cs, _ := spec["containers"].([]any)
		var list []any // null when there are none, as before
		if len(cs) > 0 {
			list = make([]any, 0, len(cs))
		}
		for _, c := range cs {
			c, _ := c.(map[string]any)
			list = append(list, map[string]any{"name": c["name"], "image": c["image"], "state": "running", "restarts": 0, "startedAt": now})
		}
		return workflow.Result{Writes: map[string]any{"status.phase": "Running", "status.containers": list, "status.message": ""}}
	case "stop":
		s.mu.Lock()
		if old, ok := s.pods[key]; ok {
			s.per[old]--
			delete(s.pods, key)
		}
		s.mu.Unlock()
		return workflow.Result{Writes: map[string]any{"status.phase": "Stopped", "status.containers": []any{}, "status.message": ""}}
	}
	return workflow.Result{Err: fmt.Sprintf("a simulated node has no step %q", it.Step)}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Prefix returns the prefix of a simulator identity ("simulator:sim"), or
// "" if it is not one.
func Prefix(who string) string {
	p, ok := strings.CutPrefix(who, identity.Simulator+":")
	if !ok {
		return ""
	}
	return p
}
