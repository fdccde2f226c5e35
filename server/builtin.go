package server

import (
	"fmt"

	"skiff.dev/skiff/api"
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
	// The scheduler's schedule step runs again only when a pod's resources
	// or placement change. It also reads Node labels, taints and cordon;
	// the Node status it needs (capacity, heartbeat, network) it reads
	// without declaring: the agent owns those and reads Pod:status.node,
	// which the scheduler owns, so declaring them would make a read/write
	// cycle. Node reads do not enter a pod step's inputs either way.
	"scheduler": {Name: "scheduler", Builtin: true, Spec: api.ControllerSpec{
		Owns: []api.FieldRef{"Pod:status.node"},
		Reads: []api.FieldRef{"Pod:spec.containers[*].resources", "Pod:spec.placement", "Pod:status.evicted",
			"Node:labels", "Node:spec.unschedulable", "Node:spec.taints"},
		Steps: []api.Step{{Name: "schedule", Kind: "Pod", Phase: workflow.Up, Where: "cluster",
			After: []string{"admitted"}, Requires: []string{"admitted"}, Before: []string{"scheduled"}, RequiredBy: []string{"scheduled"}, Timeout: "30s"}},
	}},
	// The node lifecycle (nodes.go) has no steps: it watches leases and
	// evicts pods, whose workflows then run again. It also reads where
	// pods are (Pod:status.node) without declaring it: the scheduler,
	// which writes that, reads the evictions, and a step-less controller
	// is ordered against nothing.
	"nodes": {Name: "nodes", Builtin: true, Spec: api.ControllerSpec{
		Owns: []api.FieldRef{"Node:status.reachability", "Node:status.unreachableSince", "Node:status.drain",
			"Pod:status.evicted"},
		Reads: []api.FieldRef{"Node:spec.drain", "Pod:spec.failover"},
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
	// pinned keeps PinnedDeployments' pods matching their split
	// (server/pinned.go). Its rollout step declares no PinnedDeployment
	// reads so that it runs in every run: a run also starts when the pods
	// under an unchanged spec change (one lost with its node, say).
	"pinned": {Name: "pinned", Builtin: true, Spec: api.ControllerSpec{
		Owns:  []api.FieldRef{"PinnedDeployment:status"},
		Reads: []api.FieldRef{"Pod:labels", "Pod:spec", "Pod:status.phase", "Pod:status.containers"},
		Steps: []api.Step{
			{Name: "rollout", Kind: "PinnedDeployment", Phase: workflow.Up, Where: "cluster",
				Before: []string{"rolled-out"}, RequiredBy: []string{"rolled-out"}, Timeout: "1h"},
			{Name: "scale-down", Kind: "PinnedDeployment", Phase: workflow.Down, Where: "cluster",
				After: []string{"stopping"}, Before: []string{"stopped"}, RequiredBy: []string{"stopped"}, Timeout: "10m"},
		},
	}},
	"agent": {Name: "agent", Builtin: true, Spec: api.ControllerSpec{
		Owns: []api.FieldRef{"Pod:status.phase", "Pod:status.containers", "Pod:status.message",
			"Node:status.state", "Node:status.address", "Node:status.capacity",
			"Node:status.pods", "Node:status.agentURL", "Node:status.network"},
		Reads: []api.FieldRef{"Pod:spec.containers", "Pod:spec.restart", "Pod:spec.failover", "Pod:spec.privileges", "Pod:spec.keepImages", "Pod:status.node", "Pod:status.ip",
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
var DefaultBuiltins = []string{"admission", "scheduler", "nodes", "ipam", "agent", "pinned"}

// Builtins returns the registrations of the named built-in controllers.
func Builtins(names []string) ([]workflow.Registration, error) {
	var regs []workflow.Registration
	for _, n := range names {
		r, ok := builtinRegistrations[n]
		if !ok {
			return nil, fmt.Errorf("no built-in controller %q (known: admission, scheduler, nodes, ipam, agent, pinned)", n)
		}
		regs = append(regs, r)
	}
	return regs, nil
}
