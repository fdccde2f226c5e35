package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/server"
	"skiff.dev/skiff/workflow"
)

// TestSimulatorTokens: only an admin creates a simulator token, and
// simulated and real nodes never share a name: a simulator token is
// refused when a node token exists for a name it would act for, and a node
// token for a name a simulator covers.
func TestSimulatorTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	editor, _ := e.token("operator:ed", "edit")
	_, err := editor.CreateToken(ctx, "simulator:sim", "")
	wantError(t, "an edit token creating a simulator token", err, 403, "forbidden", "admin role")
	n1, _ := e.token("node:n1", "")
	_, err = n1.CreateToken(ctx, "simulator:sim", "")
	wantError(t, "a node creating a simulator token", err, 403, "forbidden", "admin role")

	e.token("node:sim-00003", "")
	_, err = e.admin.CreateToken(ctx, "simulator:sim", "")
	wantError(t, "a simulator over a node with a token", err, 400, "invalid", "would act for node sim-00003, which has a node token")
	s, _ := e.token("simulator:other", "")
	_, err = e.admin.CreateToken(ctx, "node:other-00042", "")
	wantError(t, "a node token for a simulated name", err, 400, "invalid", "one of simulator:other's simulated nodes")
	if _, err := e.admin.CreateToken(ctx, "node:other-a-1", ""); err != nil {
		t.Errorf("node other-a-1 is not simulator other's (other-DIGITS): %v", err)
	}
	_, err = e.admin.CreateToken(ctx, "simulator:"+strings.Repeat("s", 60), "")
	wantError(t, "a prefix too long for node names", err, 400, "invalid", "must be DNS labels")
	_, err = e.admin.CreateToken(ctx, "simulator:sim", "admin")
	wantError(t, "a simulator token with a role", err, 400, "invalid", "only operator tokens carry a role")
	_, err = s.CreateToken(ctx, "simulator:other2", "")
	wantError(t, "a simulator creating tokens", err, 403, "forbidden", "admin role")
	if who, _, err := s.Whoami(ctx); err != nil || who != "simulator:other" {
		t.Errorf("whoami: %q, %v", who, err)
	}
}

// TestSimulatorRestriction: a simulator acts as each of its nodes
// (PREFIX-DIGITS) and for nothing else: it registers and writes the status
// of those Node objects and of the pods placed on them, reads only those
// pods, takes the work of all its nodes in one poll and none of another
// node's, and reports only on its nodes' work.
func TestSimulatorRestriction(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := server.EnsureNetwork(ctx, e.kv.Client, prefix, ""); err != nil { // nodes' readiness runs need it
		t.Fatal(err)
	}
	sim, _ := e.token("simulator:sim", "")
	n1, _ := e.token("node:n1", "")
	sched, _ := e.token("controller:scheduler", "")

	for _, name := range []string{"sim-00001", "sim-00002"} {
		if _, err := sim.Apply(ctx, api.Object{Kind: "Node", Name: name}, 0); err != nil {
			t.Fatalf("simulator registering %s: %v", name, err)
		}
	}
	if _, err := n1.Apply(ctx, api.Object{Kind: "Node", Name: "n1"}, 0); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"n1", "sim-a-00001", "sim", "sim-1x"} {
		_, err := sim.Apply(ctx, api.Object{Kind: "Node", Name: name}, 0)
		wantError(t, "simulator registering "+name, err, 403, "forbidden", "acts only for the nodes named sim-DIGITS")
	}
	_, err := sim.Apply(ctx, pod("default", "x", "busybox:1", nil), 0)
	wantError(t, "simulator applying a pod", err, 403, "forbidden", "operator intent")
	_, err = sim.Delete(ctx, api.Ref{Kind: "Node", Name: "sim-00001"}, 0)
	wantError(t, "simulator deleting its node", err, 403, "forbidden", "only operators do")

	// Status: written as the node, attributed to it.
	if err := sim.PatchStatus(ctx, api.Ref{Kind: "Node", Name: "sim-00002"}, map[string]any{"status.state": "ready"}); err != nil {
		t.Errorf("simulator writing its node's status: %v", err)
	}
	h, err := e.admin.History(ctx, api.Ref{Kind: "Node", Name: "sim-00002"}, nil)
	if err != nil || len(h) == 0 || h[len(h)-1].Changer != "node:sim-00002" {
		t.Errorf("history of sim-00002: %+v, %v; want the last write by node:sim-00002", h, err)
	}
	err = sim.PatchStatus(ctx, api.Ref{Kind: "Node", Name: "n1"}, map[string]any{"status.state": "gone"})
	wantError(t, "simulator writing n1's status", err, 403, "forbidden", "may not act for node n1")
	_, err = sim.PutStatus(ctx, api.Ref{Kind: "Node", Name: "n1"}, map[string]any{"state": "gone"}, 0)
	wantError(t, "simulator replacing n1's status", err, 403, "forbidden", "may not act for node n1")
	err = sim.PatchStatus(ctx, api.Ref{Kind: "Node", Name: "sim-00001"}, map[string]any{"status.podPrefix": "fd00::/64"})
	wantError(t, "simulator writing an ipam field", err, 403, "forbidden", "owned by controller:ipam")

	// Pods: those placed on its nodes only.
	onSim := api.Ref{Kind: "Pod", Namespace: "default", Name: "a"}
	onN1 := api.Ref{Kind: "Pod", Namespace: "default", Name: "b"}
	for ref, node := range map[api.Ref]string{onSim: "sim-00001", onN1: "n1"} {
		if _, err := e.admin.Apply(ctx, pod("default", ref.Name, "busybox:1", nil), 0); err != nil {
			t.Fatal(err)
		}
		if err := sched.PatchStatus(ctx, ref, map[string]any{"status.node": node}); err != nil {
			t.Fatalf("placing %s on %s: %v", ref, node, err)
		}
	}
	if _, err := sim.Get(ctx, onSim); err != nil {
		t.Errorf("simulator reading a pod on its node: %v", err)
	}
	_, err = sim.Get(ctx, onN1)
	wantError(t, "simulator reading n1's pod", err, 403, "forbidden", "not placed on one of its nodes")
	l, err := sim.List(ctx, "pods", "", "")
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "a" {
		t.Errorf("simulator listing pods: %+v, %v; want only pod/a", l.Items, err)
	}
	if err := sim.PatchStatus(ctx, onSim, map[string]any{"status.phase": "Running"}); err != nil {
		t.Errorf("simulator writing its pod's status: %v", err)
	}
	err = sim.PatchStatus(ctx, onN1, map[string]any{"status.phase": "Running"})
	wantError(t, "simulator writing n1's pod status", err, 403, "forbidden", "not placed on one of its nodes")
	err = sim.PatchStatus(ctx, onSim, map[string]any{"status.node": "sim-00002"})
	wantError(t, "simulator moving its pod", err, 403, "forbidden", "owned by controller:scheduler")
	_, err = sim.History(ctx, onSim, nil)
	wantError(t, "simulator reading history", err, 403, "forbidden")
	_, err = sim.List(ctx, "grants", "", "")
	wantError(t, "simulator listing grants", err, 403, "forbidden", "nodes read only their pods and Node objects")

	// Work: each node's readiness steps (forwarding, egress) are queued
	// for it; the simulator takes those of sim-00001 and sim-00002 in one
	// poll, never n1's.
	want := map[string]bool{"sim-00001/forwarding": true, "sim-00001/egress": true, "sim-00002/forwarding": true, "sim-00002/egress": true}
	var mine []workflow.WorkItem
	for len(want) > 0 && ctx.Err() == nil {
		items, err := sim.TakeWork(ctx, 2*time.Second, 100)
		if err != nil {
			t.Fatalf("simulator taking work: %v", err)
		}
		for _, it := range items {
			if !strings.HasPrefix(it.Node, "sim-0000") {
				t.Fatalf("simulator took work of node %s: %+v", it.Node, it)
			}
			delete(want, it.Name+"/"+it.Step)
			mine = append(mine, it)
		}
	}
	if len(want) > 0 {
		t.Fatalf("simulator never got %v", want)
	}
	var theirs []workflow.WorkItem
	for len(theirs) == 0 && ctx.Err() == nil {
		if theirs, err = n1.TakeWork(ctx, 2*time.Second, 100); err != nil {
			t.Fatal(err)
		}
	}
	for _, it := range theirs {
		if it.Node != "n1" {
			t.Fatalf("n1 took work of %s", it.Node)
		}
	}
	err = sim.CompleteWork(ctx, theirs[0].ID, workflow.Result{})
	wantError(t, "simulator completing n1's work", err, 403, "forbidden", "belongs to node:n1")
	err = sim.LogWork(ctx, theirs[0].ID, "hello", nil)
	wantError(t, "simulator logging on n1's work", err, 403, "forbidden", "belongs to node:n1")
	err = n1.CompleteWork(ctx, mine[0].ID, workflow.Result{})
	wantError(t, "n1 completing the simulator's work", err, 403, "forbidden", "belongs to node:"+mine[0].Node)
	for _, it := range mine {
		if err := sim.CompleteWork(ctx, it.ID, workflow.Result{}); err != nil {
			t.Errorf("simulator completing %s of %s: %v", it.Step, it.Node, err)
		}
	}
	if err := n1.CompleteWork(ctx, theirs[0].ID, workflow.Result{}); err != nil {
		t.Errorf("n1 completing its own work: %v", err)
	}

	// Revoked like any token.
	toks, err := e.admin.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Identity == "simulator:sim" {
			if err := e.admin.RevokeToken(ctx, tk.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err = sim.TakeWork(ctx, time.Second, 1)
	wantError(t, "revoked simulator", err, 401, "unauthenticated")
}
