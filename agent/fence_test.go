package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/workflow"
)

// A node cut off from every server for longer than its lease stops its
// failover: fast pods and keeps them stopped; its manual pods run on.
func TestFenceStopsFastPodsOnly(t *testing.T) {
	a, rt, _ := newTestAgent(t)
	a.o.Lease = time.Minute
	ctx := context.Background()
	for _, p := range []struct{ name, failover string }{{"fast", "fast"}, {"pet", "manual"}} {
		it := &workflow.WorkItem{ID: p.name, Step: "start", Kind: "Pod", Namespace: "default", Name: p.name, Generation: 1,
			Object: map[string]any{"spec": map[string]any{"failover": p.failover,
				"containers": []any{map[string]any{"name": "app", "image": "img:1"}}}}}
		if _, err := a.step(ctx, it); err != nil {
			t.Fatal(err)
		}
	}

	// One round of the fence loop and of supervision.
	round := func() {
		pods, _ := a.st.all()
		a.fence(ctx, pods)
		a.supervise(ctx)
	}
	// Within the lease: nothing happens.
	a.contact(time.Now().Add(-50 * time.Second))
	round()
	if len(rt.stops) != 0 {
		t.Fatalf("stopped %v within the lease", rt.stops)
	}

	// Past it (a shorter lease stands in for time passing): the fast pod
	// stops, the pet does not.
	a.o.Lease = 40 * time.Second
	round()
	fast, _ := a.st.get("default", "fast")
	pet, _ := a.st.get("default", "pet")
	if !fast.Fenced || pet.Fenced {
		t.Fatalf("fenced: fast %v, pet %v; want only fast", fast.Fenced, pet.Fenced)
	}
	if len(rt.running) != 1 {
		t.Errorf("running containers %v, want only the pet's", rt.running)
	}
	if fast.Status["phase"] != "Stopped" || !strings.Contains(fast.Status["message"].(string), "reached no server for longer than its lease") {
		t.Errorf("fenced pod's status %v", fast.Status)
	}

	// It stays stopped, whatever its restart policy says.
	round()
	if len(rt.running) != 1 {
		t.Errorf("a fenced pod was restarted: running %v", rt.running)
	}

	// The last contact survives an agent restart: cut off at boot, the
	// fast pod is not started again.
	a.contact(time.Now().Add(-2 * time.Minute)) // older: ignored
	if got := time.Since(time.Unix(0, a.lastContact.Load())); got > 55*time.Second {
		t.Errorf("an older contact moved the last contact to %s ago", got)
	}
	b := &Agent{st: a.st}
	b.loadContact()
	if b.lastContact.Load() != a.lastContact.Load() {
		t.Errorf("last contact after a restart %d, want %d", b.lastContact.Load(), a.lastContact.Load())
	}
}
