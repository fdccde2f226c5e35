package server_test

import (
	"context"
	"fmt"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// placedPod is a pod asking for memory, placed by a node selector on
// region.
func placedPod(name, memory, region string, env map[string]any) api.Object {
	c := map[string]any{"name": "main", "image": "busybox:1", "resources": map[string]any{"memory": memory}}
	if env != nil {
		c["env"] = env
	}
	return api.Object{Kind: "Pod", Namespace: "default", Name: name, Labels: map[string]string{"app": name},
		Spec: map[string]any{"containers": []any{c},
			"placement": map[string]any{"nodeSelector": map[string]any{"region": region}}}}
}

// scheduleStep waits for the newest run of generation gen of a pod to
// finish its schedule step, and returns that step.
func (e *env) scheduleStep(name string, gen int64) workflow.StepRecord {
	e.t.Helper()
	return e.podStep(name, gen, "schedule")
}

// podStep waits for the newest run of generation gen of a pod in default
// to finish the step of that name, and returns that step.
func (e *env) podStep(name string, gen int64, stepName string) workflow.StepRecord {
	e.t.Helper()
	var step workflow.StepRecord
	eventually(e.t, fmt.Sprintf("pod/%s generation %d: %s finished", name, gen, stepName), func() (bool, string) {
		runs, err := e.admin.Runs(context.Background(), api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err != nil || len(runs) == 0 {
			return false, fmt.Sprint("no runs ", err)
		}
		if runs[0].Generation != gen {
			return false, fmt.Sprintf("newest run is of generation %d", runs[0].Generation)
		}
		for _, s := range runs[0].Steps {
			if s.Name == stepName {
				step = s
				return s.Finished != nil, s.State
			}
		}
		return false, "no " + stepName + " step"
	})
	return step
}

// TestScheduleNodeSelector: three nodes (agents faked by writing their
// Node status with node tokens), pods that name a region land there, and
// a pod no node fits says why, per class of node.
func TestScheduleNodeSelector(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, n := range []struct{ name, region string }{{"n1", "home"}, {"n2", "home"}, {"n3", "cloud"}} {
		c, _ := e.token("node:"+n.name, "")
		ref := api.Ref{Kind: "Node", Name: n.name}
		if _, err := c.Apply(ctx, api.Object{Kind: "Node", Name: n.name, Labels: map[string]string{"region": n.region}}, 0); err != nil {
			t.Fatalf("node %s registering: %v", n.name, err)
		}
		_, err := c.Heartbeat(ctx, ref.Name, map[string]any{
			"status.network":  "ready",
			"status.capacity": map[string]any{"cpuMilli": 4000, "memoryBytes": 4 << 30, "pods": 110},
		})
		if err != nil {
			t.Fatalf("node %s reporting ready: %v", n.name, err)
		}
	}
	apply := func(o api.Object) {
		t.Helper()
		if _, err := e.admin.Apply(ctx, o, 0); err != nil {
			t.Fatalf("apply pod/%s: %v", o.Name, err)
		}
	}
	nodeOf := func(name string) string {
		o, err := e.admin.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		n, _ := o.Status["node"].(string)
		return n
	}

	// Two pods of 3Gi for home: one on each home node, whichever goes first.
	apply(placedPod("a", "3Gi", "home", nil))
	apply(placedPod("b", "3Gi", "home", nil))
	apply(placedPod("c", "3Gi", "cloud", nil))
	for _, name := range []string{"a", "b", "c"} {
		if s := e.scheduleStep(name, 1); s.State != workflow.Done {
			t.Fatalf("pod/%s: schedule %s: %s", name, s.State, s.Reason)
		}
	}
	if got := nodeOf("a") + "," + nodeOf("b"); got != "n1,n2" && got != "n2,n1" {
		t.Errorf("home pods a and b on %s, want one on n1 and one on n2", got)
	}
	if got := nodeOf("c"); got != "n3" {
		t.Errorf("cloud pod c on %q, want n3", got)
	}

	// What fits nowhere says why, per class of node.
	for _, tt := range []struct{ name, memory, region, want string }{
		{"mars", "1Gi", "mars", "no node fits: 2 nodes: region=home does not match mars; 1 node: region=cloud does not match mars"},
		{"big", "2Gi", "home", "no node fits: 2 nodes: insufficient memory (needs 2Gi, max free 1Gi); 1 node: region=cloud does not match home"},
	} {
		apply(placedPod(tt.name, tt.memory, tt.region, nil))
		s := e.scheduleStep(tt.name, 1)
		if s.State != workflow.Failed || s.Reason != tt.want {
			t.Errorf("pod/%s: schedule %s: %q\nwant failed: %q", tt.name, s.State, s.Reason, tt.want)
		}
		if n := nodeOf(tt.name); n != "" {
			t.Errorf("pod/%s placed on %s", tt.name, n)
		}
	}

	// A placed pod keeps its node: a new env does not run the scheduler,
	// a larger request that does not fit is refused, not moved.
	home := nodeOf("a")
	apply(placedPod("a", "3Gi", "home", map[string]any{"GREETING": "hello"}))
	if s := e.scheduleStep("a", 2); s.State != workflow.Skipped {
		t.Errorf("pod/a with a new env: schedule %s (%s), want skipped", s.State, s.Reason)
	}
	apply(placedPod("a", "5Gi", "home", map[string]any{"GREETING": "hello"}))
	want := fmt.Sprintf("pod needs 5Gi memory but node %s has 4Gi free; it stays on %s: lower the request or delete the pod to place it elsewhere", home, home)
	if s := e.scheduleStep("a", 3); s.State != workflow.Failed || s.Reason != want {
		t.Errorf("pod/a grown past its node: schedule %s: %q\nwant failed: %q", s.State, s.Reason, want)
	}
	apply(placedPod("a", "4Gi", "home", map[string]any{"GREETING": "hello"}))
	if s := e.scheduleStep("a", 4); s.State != workflow.Done {
		t.Errorf("pod/a grown to its node's size: schedule %s: %s, want done", s.State, s.Reason)
	}
	if n := nodeOf("a"); n != home {
		t.Errorf("pod/a moved from %s to %s", home, n)
	}
}
