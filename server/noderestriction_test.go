package server_test

import (
	"context"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

// TestNodeRestriction: a node reads only the pods placed on it and writes
// only their status and its own Node's; a forgotten node's token stops
// working at once.
func TestNodeRestriction(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sched, _ := e.token("controller:scheduler", "")
	n1, _ := e.token("node:n1", "")
	n2, _ := e.token("node:n2", "")
	for _, n := range []struct {
		name string
		c    *client.Client
	}{{"n1", n1}, {"n2", n2}} {
		if _, err := n.c.Apply(ctx, api.Object{Kind: "Node", Name: n.name}, 0); err != nil {
			t.Fatalf("node %s registering itself: %v", n.name, err)
		}
	}
	onN1 := api.Ref{Kind: "Pod", Namespace: "default", Name: "a"}
	onN2 := api.Ref{Kind: "Pod", Namespace: "default", Name: "b"}
	for ref, node := range map[api.Ref]string{onN1: "n1", onN2: "n2"} {
		if _, err := e.admin.Apply(ctx, pod("default", ref.Name, "busybox:1", nil), 0); err != nil {
			t.Fatal(err)
		}
		if err := sched.PatchStatus(ctx, ref, map[string]any{"status.node": node}); err != nil {
			t.Fatalf("placing %s on %s: %v", ref, node, err)
		}
	}

	if _, err := n1.Get(ctx, onN1); err != nil {
		t.Errorf("n1 reading its own pod: %v", err)
	}
	_, err := n1.Get(ctx, onN2)
	wantError(t, "n1 reading n2's pod", err, 403, "forbidden", "node:n1 may not read pod/b: it is not placed on node n1")
	l, err := n1.List(ctx, "pods", "", "")
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "a" {
		t.Errorf("n1 listing pods: %+v, %v; want only pod/a", l.Items, err)
	}
	err = n1.PatchStatus(ctx, onN2, map[string]any{"status.phase": "Running"})
	wantError(t, "n1 writing n2's pod status", err, 403, "forbidden", "not placed on node n1")
	if err := n1.PatchStatus(ctx, onN1, map[string]any{"status.phase": "Running"}); err != nil {
		t.Errorf("n1 writing its pod's status.phase: %v", err)
	}
	err = n1.PatchStatus(ctx, onN1, map[string]any{"status.node": "n2"})
	wantError(t, "n1 moving its pod", err, 403, "forbidden", "owned by controller:scheduler")
	if err := n1.PatchStatus(ctx, api.Ref{Kind: "Node", Name: "n1"}, map[string]any{"status.state": "ready"}); err != nil {
		t.Errorf("n1 writing its own Node's status: %v", err)
	}
	err = n1.PatchStatus(ctx, api.Ref{Kind: "Node", Name: "n2"}, map[string]any{"status.state": "gone"})
	wantError(t, "n1 writing n2's Node status", err, 403, "forbidden", "a node writes only its own Node")
	_, err = n1.List(ctx, "grants", "", "")
	wantError(t, "n1 listing grants", err, 403, "forbidden", "nodes read only their pods and Node objects")

	// Forgetting n2 revokes its token at once.
	if n, err := e.admin.ForgetNode(ctx, "n2"); err != nil || n != 1 {
		t.Fatalf("forget n2: %d tokens, %v", n, err)
	}
	_, err = n2.Get(ctx, onN2)
	wantError(t, "forgotten n2 reading", err, 401, "unauthenticated")
	if _, err := e.admin.Get(ctx, api.Ref{Kind: "Node", Name: "n2"}); err == nil {
		t.Error("forgotten node's Node object still exists")
	}
}
