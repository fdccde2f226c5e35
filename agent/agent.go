package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/workflow"
)

// Image is what the agent needs of a pulled image.
type Image struct {
	Digest               string
	Rootfs               string
	Entrypoint, Cmd, Env []string
	WorkingDir, User     string
}

// Images pulls images (or finds them locally when the registry is away).
type Images interface {
	Pull(ctx context.Context, ref string) (Image, error)
}

// Runtime runs containers; *runtime.Runtime is the real one.
type Runtime interface {
	Start(ctx context.Context, s runtime.Spec) error
	Stop(ctx context.Context, id string, grace time.Duration) error
	Remove(ctx context.Context, id string) error
	State(id string) (runtime.State, error)
	// CreatePodNetNS makes (or finds) the network namespace a pod's
	// containers share, owned by the pod's user namespace, with lo up.
	CreatePodNetNS(name string, ids runtime.IDRange) (string, error)
	RemovePodNetNS(name string) error
}

// Options configure an agent.
type Options struct {
	Name    string // node name
	DataDir string // state file and runtime root
	Client  *client.Client
	Images  Images
	Runtime Runtime
	Labels  map[string]string
	Address string // underlay address reported in status
	// Network programs pod networking (veths, routes, egress); nil runs
	// pods with only a loopback device.
	Network Network
	// EgressRange is the IPv4 range pods' egress addresses come from;
	// default DefaultEgressRange.
	EgressRange netip.Prefix
	// Lease is how long the node counts as alive after a heartbeat
	// reached a server; cut off for longer, it fences its fast pods.
	// Default DefaultLease (tests shorten it).
	Lease time.Duration
	// Heartbeat is how often the node reports; default 10s.
	Heartbeat time.Duration
	Log       *slog.Logger
}

// Agent runs one node.
type Agent struct {
	o      Options
	st     *state
	rt     Runtime
	net    Network // nil: no pod networking
	images Images
	c      *client.Client
	log    *slog.Logger

	grantsChecked time.Time // used by the supervision loop only

	apiURL atomic.Value  // string: where the node's API is served, reported in status
	beat   chan struct{} // asks for a heartbeat now
	// settled is set once the pods were squared with the servers after
	// the agent started (heartbeatLoop only).
	settled bool

	// lastContact is when the last heartbeat a server took was sent
	// (unix ns; 0: none yet).
	lastContact atomic.Int64
	// lease and margin are the servers' node lease and failover margin,
	// in nanoseconds, as the last heartbeat answer said (0 before one):
	// fencing must not wait longer than the servers do.
	lease, margin atomic.Int64

	routesMu  sync.Mutex   // serializes syncRoutes
	ownPrefix netip.Prefix // this node's pod /64, once known; guarded by routesMu

	mu      sync.Mutex             // guards podLock and allocation
	podLock map[string]*sync.Mutex // one per pod: steps and supervision of a pod never overlap
}

// New opens the agent's state.
func New(o Options) (*Agent, error) {
	if o.Name == "" {
		return nil, errors.New("agent: no node name")
	}
	if err := api.ValidateName(o.Name); err != nil {
		return nil, fmt.Errorf("agent: node name %w", err)
	}
	if !o.EgressRange.IsValid() {
		o.EgressRange = DefaultEgressRange
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	// Others may search (not list) the data directory: containers in user
	// namespaces reach their root file systems through it.
	if err := os.MkdirAll(o.DataDir, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(o.DataDir, 0o711); err != nil {
		return nil, err
	}
	st, err := openState(filepath.Join(o.DataDir, "agent.db"))
	if err != nil {
		return nil, err
	}
	return &Agent{o: o, st: st, rt: o.Runtime, net: o.Network, images: o.Images, c: o.Client, log: o.Log.With("node", o.Name),
		podLock: map[string]*sync.Mutex{}, beat: make(chan struct{}, 1)}, nil
}

// SetAPIURL sets where the node serves its API (status.agentURL), and
// reports it at once: until then the servers cannot reach the node for
// logs and exec.
func (a *Agent) SetAPIURL(u string) {
	a.apiURL.Store(u)
	select {
	case a.beat <- struct{}{}:
	default:
	}
}

// Close releases the state file.
func (a *Agent) Close() error { return a.st.close() }

func (a *Agent) lockPod(ns, name string) func() {
	a.mu.Lock()
	l := a.podLock[ns+"/"+name]
	if l == nil {
		l = &sync.Mutex{}
		a.podLock[ns+"/"+name] = l
	}
	a.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Run works until ctx ends. With no server reachable it still runs every
// pod it knows, and catches up when the server answers.
func (a *Agent) Run(ctx context.Context) error {
	a.loadContact()
	// First bring back what this node ran: after a restart containers are
	// re-adopted; after a cold boot they are started again, after the
	// node's network.
	a.prepareNode()
	a.supervise(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(5)
	go func() { defer wg.Done(); a.routeLoop(ctx) }()
	go func() { defer wg.Done(); a.fenceLoop(ctx) }()
	go func() { defer wg.Done(); a.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); a.workLoop(ctx) }()
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		lastGC := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.supervise(ctx)
				if time.Since(lastGC) > time.Hour {
					a.collectImages()
					lastGC = time.Now()
				}
			}
		}
	}()
	<-ctx.Done()
	return nil
}

func (a *Agent) nodeRef() api.Ref { return api.Ref{Kind: "Node", Name: a.o.Name} }

// heartbeatLoop registers the node and reports it alive.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	registered := false
	for {
		a.heartbeat(ctx, &registered)
		select {
		case <-ctx.Done():
			return
		case <-a.beat:
		case <-time.After(a.heartbeatPeriod()):
		}
	}
}

// heartbeat registers the node if it is not yet, and reports it alive; a
// server that does not answer within the heartbeat period is skipped.
func (a *Agent) heartbeat(ctx context.Context, registered *bool) {
	ctx, cancel := context.WithTimeout(ctx, a.heartbeatPeriod())
	defer cancel()
	{
		if !*registered {
			node := api.Object{Kind: "Node", Name: a.o.Name, Labels: a.o.Labels}
			if cur, err := a.c.Get(ctx, a.nodeRef()); err == nil {
				node.Spec = cur.Spec // keep what operators set (cordon, taints)
				if len(a.o.Labels) == 0 {
					node.Labels = cur.Labels
				}
			}
			if _, err := a.c.Apply(ctx, node, 0); err == nil {
				*registered = true
			} else if ctx.Err() == nil {
				a.log.Warn("register node", "err", err)
			}
		}
		if *registered {
			sent := time.Now()
			if lease, err := a.c.Heartbeat(ctx, a.o.Name, a.nodeStatus()); err != nil {
				if ctx.Err() == nil {
					a.log.Warn("heartbeat", "err", err)
				}
			} else {
				_, wasCut := a.cutOff(sent)
				a.contact(sent)
				a.setLease(lease)
				// After a cut, or at the agent's first contact, every pod
				// is checked: the servers may have moved some meanwhile.
				if first := !a.settled; wasCut || first || a.anyFenced() {
					a.settle(ctx, wasCut || first)
					a.settled = true
				}
			}
		}
	}
}

// heartbeatPeriod is Options.Heartbeat, or a quarter of the lease if
// that is shorter: a node must not lose its lease to one slow answer.
func (a *Agent) heartbeatPeriod() time.Duration {
	return min(a.o.Heartbeat, a.leaseNow()/4)
}

func (a *Agent) nodeStatus() map[string]any {
	var si unix.Sysinfo_t
	unix.Sysinfo(&si)
	pods, _ := a.st.all()
	return map[string]any{
		"status.state":   "ready",
		"status.address": a.o.Address,
		"status.capacity": map[string]any{
			"cpuMilli":    goruntime.NumCPU() * 1000,
			"memoryBytes": int64(si.Totalram) * int64(si.Unit),
			"pods":        idRanges,
		},
		"status.pods":     len(pods),
		"status.agentURL": a.apiURLString(),
	}
}

func (a *Agent) apiURLString() string {
	u, _ := a.apiURL.Load().(string)
	return u
}

// workLoop takes this node's work items and does them.
func (a *Agent) workLoop(ctx context.Context) {
	for ctx.Err() == nil {
		items, err := a.c.TakeWork(ctx, 30*time.Second, 16)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Debug("take work", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(2 * time.Second):
				}
			}
			continue
		}
		for i := range items {
			it := items[i]
			go a.do(ctx, &it)
		}
	}
}

// do runs one step for one pod and reports the outcome.
func (a *Agent) do(ctx context.Context, it *workflow.WorkItem) {
	unlock := a.lockPod(it.Namespace, it.Name)
	var res workflow.Result
	writes, err := a.step(ctx, it)
	unlock() // a hung server must not hold the pod
	if err != nil {
		res.Err = err.Error()
	} else {
		res.Writes = writes
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := a.c.CompleteWork(rctx, it.ID, res); err != nil {
		a.log.Warn("report step", "step", it.Step, "pod", it.Namespace+"/"+it.Name, "err", err)
	}
}

// decodePodSpec decodes the pod spec of a work item.
func decodePodSpec(it *workflow.WorkItem) (*api.PodSpec, error) {
	spec, _ := it.Object["spec"].(map[string]any)
	k, _ := api.LookupKind("Pod")
	typed, err := k.DecodeSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("pod spec: %w", err)
	}
	return typed.(*api.PodSpec), nil
}

// record returns the pod's record, making one (with a user namespace
// range of its own) for a pod new to this node.
//
// set, if given, changes the record, and tells whether it did; the record
// is written once, new or changed (each write is a sync to disk).
func (a *Agent) record(it *workflow.WorkItem, set func(*podRecord) bool) (*podRecord, error) {
	p, err := a.st.get(it.Namespace, it.Name)
	if err != nil {
		return nil, err
	}
	if p != nil {
		if set != nil && set(p) {
			return p, a.st.put(p)
		}
		return p, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	base, err := a.st.allocIDs()
	if err != nil {
		return nil, err
	}
	p = &podRecord{Namespace: it.Namespace, Name: it.Name, IDBase: base}
	if set != nil {
		set(p)
	}
	return p, a.st.put(p)
}

func (a *Agent) step(ctx context.Context, it *workflow.WorkItem) (map[string]any, error) {
	if it.Kind == "Node" {
		return a.nodeStep(ctx, it)
	}
	switch it.Step {
	case "netup":
		return nil, a.netup(it)
	case "netdown":
		return nil, a.netdown(it)
	case "start":
		typed, err := decodePodSpec(it)
		if err != nil {
			return nil, err
		}
		p, err := a.record(it, nil)
		if err != nil {
			return nil, err
		}
		if ip := podIP(it); ip != "" {
			p.IP = ip
		}
		p.Spec, p.Generation = *typed, it.Generation
		p.pin()
		if err := a.st.put(p); err != nil {
			return nil, err
		}
		err = a.ensure(ctx, p)
		st := a.status(p)
		p.Status, p.Uploaded = st, err == nil
		a.st.put(p)
		if err != nil {
			return nil, err
		}
		return map[string]any{"status.phase": st["phase"], "status.containers": st["containers"], "status.message": st["message"]}, nil
	case "stop":
		p, err := a.st.get(it.Namespace, it.Name)
		if err != nil {
			return nil, err
		}
		if p == nil {
			return map[string]any{"status.phase": "Stopped"}, nil
		}
		if err := a.stopPod(ctx, p); err != nil {
			return nil, err
		}
		go a.collectImages()
		return map[string]any{"status.phase": "Stopped", "status.containers": []any{}, "status.message": ""}, nil
	}
	return nil, fmt.Errorf("the agent has no step %q", it.Step)
}
