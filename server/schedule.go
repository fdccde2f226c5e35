package server

import (
	"context"
	"fmt"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/controllers/scheduler"
	"skiff.dev/skiff/workflow"
)

// schedule is the scheduler's step: place the pod on a node that fits it,
// or keep it on its node, or fail saying why. It reads the orchestrator's
// placement cache, never etcd, and reserves the node there at once, so the
// next placement counts this one before the store confirms it.
func (o *Orchestrator) schedule(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	if err := o.places.wait(ctx); err != nil {
		return workflow.Result{Err: fmt.Sprintf("nodes and pods not loaded yet: %v", err)}
	}
	pod := api.Object{Kind: "Pod", Namespace: item.Namespace, Name: item.Name}
	setBody(&pod, item.Object)
	spec, err := api.DecodeSpecAs[api.PodSpec](&pod)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	req := podRequest(spec)
	cur := str(pod.Status["node"])
	// A pod evicted from its node is placed anew, anywhere else.
	if req.Avoid = evictedFrom(&pod); req.Avoid != cur {
		req.Current = cur
	}
	name, err := o.places.place(pod.Namespace, pod.Name, groupOf(pod.Namespace, pod.Labels), req)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	if name == cur {
		return workflow.Result{}
	}
	if cur != "" {
		log("moved", map[string]any{"from": cur, "node": name})
	} else {
		log("placed", map[string]any{"node": name})
	}
	return workflow.Result{Writes: map[string]any{"status.node": name}}
}

// podRequest is what a pod asks of its node.
func podRequest(spec *api.PodSpec) scheduler.Request {
	var req scheduler.Request
	for _, c := range spec.Containers {
		req.CPUMilli += c.Resources.CPU.Milli()
		req.MemoryBytes += c.Resources.Memory.Bytes()
	}
	if spec.Placement != nil {
		req.Placement = *spec.Placement
	}
	return req
}
