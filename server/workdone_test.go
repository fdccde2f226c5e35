package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/server"
	"skiff.dev/skiff/workflow"
)

// TestCompleteWorkList: POST /v1/work/done completes many work items in
// one request, each as POST /v1/work/{id}/done would: their writes land
// on their objects, and an item no longer current or another node's is
// refused alone, with the answer it would have had by itself, while the
// others complete. A body that is not a list of items with ids is a 400.
func TestCompleteWorkList(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := server.EnsureNetwork(ctx, e.kv.Client, prefix, ""); err != nil { // nodes' readiness runs need it
		t.Fatal(err)
	}
	sim, simSecret := e.token("simulator:sim", "")
	n1, _ := e.token("node:n1", "")
	nodes := []string{"sim-00001", "sim-00002", "sim-00003"}
	for _, name := range nodes {
		if _, err := sim.Apply(ctx, api.Object{Kind: "Node", Name: name}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n1.Apply(ctx, api.Object{Kind: "Node", Name: "n1"}, 0); err != nil {
		t.Fatal(err)
	}
	// takeAll takes the items of steps for every simulated node.
	takeAll := func(steps ...string) []workflow.WorkItem {
		t.Helper()
		want := map[string]bool{}
		for _, n := range nodes {
			for _, s := range steps {
				want[n+"/"+s] = true
			}
		}
		var got []workflow.WorkItem
		for len(want) > 0 {
			items, err := sim.TakeWork(ctx, 2*time.Second, 100)
			if err != nil {
				t.Fatalf("taking %v: %v (still waiting for %v)", steps, err, want)
			}
			for _, it := range items {
				if !want[it.Name+"/"+it.Step] {
					t.Fatalf("took %s of %s, want one of %v", it.Step, it.Name, want)
				}
				delete(want, it.Name+"/"+it.Step)
				got = append(got, it)
			}
		}
		return got
	}
	ready := takeAll("forwarding", "egress")
	var theirs []workflow.WorkItem
	for len(theirs) == 0 {
		var err error
		if theirs, err = n1.TakeWork(ctx, 2*time.Second, 100); err != nil {
			t.Fatal(err)
		}
	}

	// The six readiness items, with an unknown item and n1's among them.
	var list []client.Completion
	for _, it := range ready {
		list = append(list, client.Completion{ID: it.ID})
	}
	list = append(list[:2], append([]client.Completion{{ID: "no-such-item"}, {ID: theirs[0].ID}}, list[2:]...)...)
	errs, err := sim.CompleteWorkList(ctx, list)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range list {
		switch c.ID {
		case "no-such-item":
			wantError(t, "an unknown item in the list", errs[i], 409, "conflict", "work item no-such-item is no longer current")
		case theirs[0].ID:
			wantError(t, "n1's item in the simulator's list", errs[i], 403, "forbidden", "belongs to node:n1")
		default:
			if errs[i] != nil {
				t.Errorf("completing %s: %v", c.ID, errs[i])
			}
		}
	}

	// Once forwarding and egress are done, the nodes' routes: their writes
	// land on the Node objects, as the nodes'; one item reported twice is
	// stale the second time.
	routes := takeAll("routes")
	list = nil
	for _, it := range routes {
		list = append(list, client.Completion{ID: it.ID, Result: workflow.Result{Writes: map[string]any{"status.network": "ready"}}})
	}
	list = append(list[:1], append([]client.Completion{{ID: ready[0].ID}}, list[1:]...)...)
	if errs, err = sim.CompleteWorkList(ctx, list); err != nil {
		t.Fatal(err)
	}
	wantError(t, "an item reported twice", errs[1], 409, "conflict", "work item "+ready[0].ID+" is no longer current")
	for i, e := range errs {
		if i != 1 && e != nil {
			t.Errorf("completing %s: %v", list[i].ID, e)
		}
	}
	for _, it := range routes {
		ref := api.Ref{Kind: "Node", Name: it.Name}
		n, err := e.admin.Get(ctx, ref)
		if err != nil || n.Status["network"] != "ready" {
			t.Errorf("%s after its routes: status %v, %v; want network ready", it.Name, n.Status, err)
		}
		h, err := e.admin.History(ctx, ref, nil)
		if err != nil || len(h) == 0 || h[len(h)-1].Changer != "node:"+it.Name {
			t.Errorf("history of %s: %+v, %v; want the last write by node:%s", it.Name, h, err, it.Name)
		}
	}
	// n1's item was left alone for n1.
	if err := n1.CompleteWork(ctx, theirs[0].ID, workflow.Result{}); err != nil {
		t.Errorf("n1 completing its item after the simulator's list: %v", err)
	}

	for body, want := range map[string]string{
		`{"id":"x"}`:                 `work/done takes a list`,
		`null`:                       `work/done takes a list`,
		`[{"id":"x"`:                 `work/done takes a list`,
		`[{"id":"x"},{"error":"y"}]`: `items[1] has no id`,
		`[{"id":"x","error":1}]`:     `work/done takes a list`,
	} {
		r := e.do("POST", "/v1/work/done", simSecret, []byte(body))
		if r.status != 400 || r.err.Code != "invalid" || !strings.Contains(r.err.Error, want) {
			t.Errorf("POST /v1/work/done %s: %d %+v, want 400 invalid %q", body, r.status, r.err, want)
		}
	}
}
