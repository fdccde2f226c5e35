package server

import (
	"context"
	"fmt"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/controllers/scheduler"
	"skiff.dev/skiff/workflow"
)

// Built-in controllers. They register like any other controller and take
// work through the same engine; admission and scheduler run in the server,
// the agent's steps run on nodes.
var builtinRegistrations = map[string]workflow.Registration{
	"admission": {Name: "admission", Builtin: true, Spec: api.ControllerSpec{
		Owns:  []api.FieldRef{"Pod:status.admission"},
		Reads: []api.FieldRef{"Pod:spec", "Pod:labels"},
		Steps: []api.Step{{Name: "admit", Kind: "Pod", Phase: workflow.Up, Where: "cluster",
			Before: []string{"admitted"}, RequiredBy: []string{"admitted"}, Timeout: "30s"}},
	}},
	"scheduler": {Name: "scheduler", Builtin: true, Spec: api.ControllerSpec{
		Owns:  []api.FieldRef{"Pod:status.node"},
		Reads: []api.FieldRef{"Pod:spec.containers[*].resources"},
		Steps: []api.Step{{Name: "schedule", Kind: "Pod", Phase: workflow.Up, Where: "cluster",
			After: []string{"admitted"}, Requires: []string{"admitted"}, Before: []string{"scheduled"}, RequiredBy: []string{"scheduled"}, Timeout: "30s"}},
	}},
	"ipam": {Name: "ipam", Builtin: true, Spec: api.ControllerSpec{
		Owns:  []api.FieldRef{"Node:status.podPrefix", "Pod:status.ip"},
		Reads: []api.FieldRef{"Pod:status.node", "Pod:spec.privileges"},
		Steps: []api.Step{
			{Name: "subnet", Kind: "Node", Phase: workflow.Up, Where: "cluster",
				Before: []string{"addressed"}, RequiredBy: []string{"addressed"}, Timeout: "30s"},
			{Name: "address", Kind: "Pod", Phase: workflow.Up, Where: "cluster",
				After: []string{"scheduled"}, Requires: []string{"scheduled"}, Before: []string{"network"}, RequiredBy: []string{"network"}, Timeout: "30s"},
		},
	}},
	"agent": {Name: "agent", Builtin: true, Spec: api.ControllerSpec{
		Owns: []api.FieldRef{"Pod:status.phase", "Pod:status.containers", "Pod:status.message",
			"Node:status.state", "Node:status.heartbeat", "Node:status.address", "Node:status.capacity",
			"Node:status.pods", "Node:status.agentURL", "Node:status.network"},
		Reads: []api.FieldRef{"Pod:spec.containers", "Pod:spec.restart", "Pod:spec.privileges", "Pod:status.node", "Pod:status.ip",
			"Node:status.podPrefix"},
		Steps: []api.Step{
			// A pod's network: its namespace, veth, addresses and routes.
			{Name: "netup", Kind: "Pod", Phase: workflow.Up, Where: "node",
				After: []string{"scheduled", "address"}, Requires: []string{"scheduled"}, Before: []string{"network"}, RequiredBy: []string{"network"},
				Timeout: "1m", Retry: 2},
			{Name: "start", Kind: "Pod", Phase: workflow.Up, Where: "node",
				After: []string{"storage", "network"}, Requires: []string{"storage", "network"}, Before: []string{"started"}, RequiredBy: []string{"started"},
				Timeout: "10m", Retry: 2},
			{Name: "stop", Kind: "Pod", Phase: workflow.Down, Where: "node",
				After: []string{"stopping"}, Before: []string{"stopped"}, RequiredBy: []string{"stopped"}, Timeout: "5m"},
			{Name: "netdown", Kind: "Pod", Phase: workflow.Down, Where: "node",
				After: []string{"stop"}, Before: []string{"stopped"}, RequiredBy: []string{"stopped"}, Timeout: "1m"},
			// A node's readiness: what its pods' traffic needs.
			{Name: "forwarding", Kind: "Node", Phase: workflow.Up, Where: "node",
				After: []string{"addressed"}, Requires: []string{"addressed"}, Before: []string{"ready"}, RequiredBy: []string{"ready"}, Timeout: "1m", Retry: 2},
			{Name: "egress", Kind: "Node", Phase: workflow.Up, Where: "node",
				After: []string{"addressed"}, Requires: []string{"addressed"}, Before: []string{"ready"}, RequiredBy: []string{"ready"}, Timeout: "1m", Retry: 2},
			{Name: "routes", Kind: "Node", Phase: workflow.Up, Where: "node",
				After: []string{"addressed", "forwarding"}, Requires: []string{"addressed"}, Before: []string{"ready"}, RequiredBy: []string{"ready"}, Timeout: "1m", Retry: 2},
		},
	}},
}

// DefaultBuiltins are the built-in controllers a server runs by default.
var DefaultBuiltins = []string{"admission", "scheduler", "ipam", "agent"}

// Builtins returns the registrations of the named built-in controllers.
func Builtins(names []string) ([]workflow.Registration, error) {
	var regs []workflow.Registration
	for _, n := range names {
		r, ok := builtinRegistrations[n]
		if !ok {
			return nil, fmt.Errorf("no built-in controller %q (known: admission, scheduler, ipam, agent)", n)
		}
		regs = append(regs, r)
	}
	return regs, nil
}

// schedule is the scheduler's step: place the pod on a ready node with
// room for it, or fail saying why no node fits.
func (o *Orchestrator) schedule(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	pod, err := o.store.Get(ctx, api.Ref{Kind: "Pod", Namespace: item.Namespace, Name: item.Name})
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	req := podRequest(&pod)
	req.Current, _ = pod.Status["node"].(string)
	nodes, err := o.nodeSnapshot(ctx, pod.Ref())
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	name, err := scheduler.Place(req, nodes)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	if name == req.Current {
		return workflow.Result{}
	}
	log("placed", map[string]any{"node": name})
	return workflow.Result{Writes: map[string]any{"status.node": name}}
}

func podRequest(pod *api.Object) scheduler.Request {
	var req scheduler.Request
	spec, err := api.DecodeSpecAs[api.PodSpec](pod)
	if err != nil {
		return req
	}
	for _, c := range spec.Containers {
		req.CPUMilli += c.Resources.CPU.Milli()
		req.MemoryBytes += c.Resources.Memory.Bytes()
	}
	return req
}

// nodeSnapshot reads nodes and what pods (other than self) use on them.
func (o *Orchestrator) nodeSnapshot(ctx context.Context, self api.Ref) ([]scheduler.Node, error) {
	nodeObjs, _, err := o.store.List(ctx, "Node", "")
	if err != nil {
		return nil, err
	}
	pods, _, err := o.store.List(ctx, "Pod", "")
	if err != nil {
		return nil, err
	}
	used := map[string]scheduler.Request{}
	for i := range pods {
		p := &pods[i]
		n, _ := p.Status["node"].(string)
		if n == "" || p.Ref() == self {
			continue
		}
		r := podRequest(p)
		u := used[n]
		u.CPUMilli += r.CPUMilli
		u.MemoryBytes += r.MemoryBytes
		used[n] = u
	}
	var nodes []scheduler.Node
	for i := range nodeObjs {
		n := &nodeObjs[i]
		spec, _ := api.DecodeSpecAs[api.NodeSpec](n)
		sn := scheduler.Node{Name: n.Name}
		if spec != nil {
			sn.Unschedulable = spec.Unschedulable
		}
		capacity, _ := n.Status["capacity"].(map[string]any)
		cpu, _ := capacity["cpuMilli"].(float64)
		mem, _ := capacity["memoryBytes"].(float64)
		sn.CPUMilli, sn.MemoryBytes = int64(cpu), int64(mem)
		sn.NotReady = "no recent heartbeat"
		if hb, ok := n.Status["heartbeat"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, hb); err == nil && time.Since(t) < scheduler.HeartbeatTimeout {
				// Heard from lately; ready once its readiness run
				// programmed its network.
				sn.Ready = n.Status["network"] == "ready"
				sn.NotReady = "network not ready (skiff why node/NAME)"
			}
		}
		u := used[n.Name]
		sn.UsedCPU, sn.UsedMemory = u.CPUMilli, u.MemoryBytes
		nodes = append(nodes, sn)
	}
	return nodes, nil
}
