package server_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/server"
)

// fakeNode heartbeats for a node, as its agent would, until stopped: the
// lifecycle logic above the agent is what is tested here (the e2e tests
// run real agents).
type fakeNode struct {
	stop chan struct{}
	done sync.WaitGroup
	// lastSent is when the last heartbeat was sent: the server heard
	// the node no earlier. Read after halt.
	lastSent time.Time
}

func (e *env) heartbeats(name, region string, every time.Duration) *fakeNode {
	e.t.Helper()
	c, _ := e.token("node:"+name, "")
	ctx := context.Background()
	if _, err := c.Apply(ctx, api.Object{Kind: "Node", Name: name, Labels: map[string]string{"region": region}}, 0); err != nil {
		e.t.Fatalf("node %s registering: %v", name, err)
	}
	f := &fakeNode{stop: make(chan struct{})}
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		for {
			f.lastSent = time.Now()
			c.Heartbeat(ctx, name, map[string]any{
				"status.network":  "ready",
				"status.capacity": map[string]any{"cpuMilli": 4000, "memoryBytes": 4 << 30, "pods": 110},
			})
			select {
			case <-f.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	e.t.Cleanup(f.halt)
	return f
}

func (f *fakeNode) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.done.Wait()
}

func (e *env) get(ref api.Ref) api.Object {
	e.t.Helper()
	o, err := e.admin.Get(context.Background(), ref)
	if err != nil {
		e.t.Fatalf("get %s: %v", ref, err)
	}
	return o
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

// TestNodeLifecycle: a node that stops heartbeating is unreachable after
// its lease; its fast pod moves after the margin, its manual pod stays;
// back, it is reachable again. Draining a node whose agent does not
// answer waits for it; forgetting it moves the manual pod too.
func TestNodeLifecycle(t *testing.T) {
	const lease, margin = 600 * time.Millisecond, 400 * time.Millisecond
	e := newEnv(t, func(o *server.Orchestrator) { o.SetNodeLease(lease, margin) })
	ctx := context.Background()
	n1 := e.heartbeats("n1", "home", lease/6)
	e.heartbeats("n2", "home", lease/6)
	pod := func(name, failover string) api.Object {
		return api.Object{Kind: "Pod", Namespace: "default", Name: name, Labels: map[string]string{"app": name},
			Spec: map[string]any{"failover": failover, "containers": []any{map[string]any{"name": "main", "image": "busybox:1"}}}}
	}
	// n2 is cordoned while the pods are placed, so both land on n1.
	cordon := func(name string, on bool) {
		t.Helper()
		n := e.get(api.Ref{Kind: "Node", Name: name})
		n.Spec = map[string]any{"unschedulable": on}
		n.Status = nil
		if _, err := e.admin.Apply(ctx, n, 0); err != nil {
			t.Fatalf("cordon %s: %v", name, err)
		}
	}
	cordon("n2", true)
	for _, p := range []api.Object{pod("fast", api.FailoverFast), pod("pet", api.FailoverManual)} {
		if _, err := e.admin.Apply(ctx, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	nodeOf := func(name string) string {
		return str(e.get(api.Ref{Kind: "Pod", Namespace: "default", Name: name}).Status, "node")
	}
	for _, p := range []string{"fast", "pet"} {
		eventually(t, p+" placed on n1", func() (bool, string) { n := nodeOf(p); return n == "n1", n })
	}
	cordon("n2", false)

	n1.halt()
	// Measured from the last heartbeat sent, not from the halt: under
	// load a heartbeat can take a while to answer, and the server heard
	// the node when it took the request in.
	stopped := n1.lastSent
	n1Ref := api.Ref{Kind: "Node", Name: "n1"}
	eventually(t, "n1 unreachable", func() (bool, string) {
		r := str(e.get(n1Ref).Status, "reachability")
		return r == "unreachable", r
	})
	if d := time.Since(stopped); d < lease {
		t.Errorf("n1 unreachable %v after its last heartbeat, before its lease (%v)", d, lease)
	}
	eventually(t, "fast pod moved to n2", func() (bool, string) { n := nodeOf("fast"); return n == "n2", n })
	if d := time.Since(stopped); d < lease+margin {
		t.Errorf("fast pod moved %v after n1's last heartbeat, before lease + margin (%v)", d, lease+margin)
	}
	fast := e.get(api.Ref{Kind: "Pod", Namespace: "default", Name: "fast"})
	ev, _ := fast.Status["evicted"].(map[string]any)
	if str(ev, "node") != "n1" || !strings.Contains(str(ev, "reason"), "node n1 unreachable") {
		t.Errorf("fast pod's status.evicted = %v, want node n1 and why", ev)
	}
	runs, err := e.admin.Runs(ctx, fast.Ref())
	if err != nil || len(runs) == 0 || !strings.HasPrefix(runs[0].Cause, "evicted: node n1 unreachable") {
		t.Errorf("fast pod's newest run: %+v (%v), want one caused by the eviction", runs, err)
	}
	time.Sleep(lease) // the manual pod has had every chance to move
	if n := nodeOf("pet"); n != "n1" {
		t.Errorf("failover:manual pod moved to %q while n1 is only unreachable", n)
	}
	hist, err := e.admin.History(ctx, n1Ref, []string{"controller:nodes"})
	if err != nil || len(hist) == 0 || !strings.Contains(hist[len(hist)-1].Cause, "no heartbeat for") {
		t.Errorf("n1's history by controller:nodes = %+v (%v), want the lease expiring", hist, err)
	}

	// Back: reachable again, and nothing else moves.
	n1 = e.heartbeats("n1", "home", lease/6)
	eventually(t, "n1 reachable", func() (bool, string) {
		r := str(e.get(n1Ref).Status, "reachability")
		return r == "reachable", r
	})
	n1.halt()

	// Drain: n1's agent does not answer (it has no agent API at all), so
	// the manual pod waits and the node says so.
	dr := e.get(n1Ref)
	dr.Spec, dr.Status = map[string]any{"drain": true, "unschedulable": true}, nil
	if _, err := e.admin.Apply(ctx, dr, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "drain waiting for n1", func() (bool, string) {
		d := str(e.get(n1Ref).Status, "drain")
		return strings.Contains(d, "waiting for node n1 to stop 1 pod(s)"), d
	})
	if n := nodeOf("pet"); n != "n1" {
		t.Errorf("manual pod moved to %q before its node stopped it", n)
	}
	// Forget: n1 is gone for good; its manual pod is placed elsewhere.
	if _, err := e.admin.ForgetNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pet moved to n2 after n1 was forgotten", func() (bool, string) { n := nodeOf("pet"); return n == "n2", n })
	pet := e.get(api.Ref{Kind: "Pod", Namespace: "default", Name: "pet"})
	ev, _ = pet.Status["evicted"].(map[string]any)
	if !strings.Contains(str(ev, "reason"), "node n1 was forgotten") {
		t.Errorf("pet's status.evicted = %v, want it to say n1 was forgotten", ev)
	}
}

// TestHeartbeatIsNotARevision: heartbeats renew the lease, shown as
// status.heartbeat, without a new revision unless the status changed.
func TestHeartbeatIsNotARevision(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c, _ := e.token("node:n1", "")
	if _, err := c.Apply(ctx, api.Object{Kind: "Node", Name: "n1"}, 0); err != nil {
		t.Fatal(err)
	}
	status := map[string]any{"status.network": "ready", "status.pods": 0}
	var beats []string
	for i := 0; i < 5; i++ {
		if _, err := c.Heartbeat(ctx, "n1", status); err != nil {
			t.Fatal(err)
		}
		beats = append(beats, str(e.get(api.Ref{Kind: "Node", Name: "n1"}).Status, "heartbeat"))
		time.Sleep(5 * time.Millisecond)
	}
	if beats[0] == "" || beats[0] == beats[4] {
		t.Errorf("status.heartbeat over five heartbeats: %v, want it to advance", beats)
	}
	hist, err := e.admin.History(ctx, api.Ref{Kind: "Node", Name: "n1"}, []string{"node:n1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 { // registration, then the first status
		t.Errorf("node:n1 made %d revisions over five heartbeats with one status, want 2: %+v", len(hist), hist)
	}
	status["status.pods"] = 3
	if _, err := c.Heartbeat(ctx, "n1", status); err != nil {
		t.Fatal(err)
	}
	if hist, _ = e.admin.History(ctx, api.Ref{Kind: "Node", Name: "n1"}, []string{"node:n1"}); len(hist) != 3 {
		t.Errorf("a changed status made %d revisions in all, want 3", len(hist))
	}
	// Only its own node: another node's token is refused.
	other, _ := e.token("node:n2", "")
	_, err = other.Heartbeat(ctx, "n1", status)
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 403 {
		t.Errorf("node:n2 heartbeating for n1: %v, want 403", err)
	}
}
