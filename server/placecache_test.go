package server

import (
	"fmt"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/controllers/scheduler"
	"skiff.dev/skiff/store"
)

const gib = int64(1) << 30

// testCache is a cache with a settable clock, loaded with nodes and no pods.
func testCache(t testing.TB, nodes ...api.Object) (*placeCache, *time.Time) {
	t.Helper()
	clock := time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC)
	c := newPlaceCache()
	c.now = func() time.Time { return clock }
	c.list("Node", nodes)
	for _, n := range nodes {
		c.renewed(n.Name, clock)
	}
	c.list("Pod", nil)
	return c, &clock
}

// readyNode is a Node as its agent reports it: network ready, cpus and
// memory as given, room for 110 pods. testCache renews its lease.
func readyNode(name string, cpuMilli, memBytes int64, labels map[string]string) api.Object {
	return api.Object{Kind: "Node", Name: name, Labels: labels, Status: map[string]any{
		"network":  "ready",
		"capacity": map[string]any{"cpuMilli": float64(cpuMilli), "memoryBytes": float64(memBytes), "pods": float64(110)},
	}}
}

// podObj is a Pod as the store shows it, with one container asking for
// memory, on node (or unplaced).
func podObj(name, memory, node string, labels map[string]string) api.Object {
	o := api.Object{Kind: "Pod", Namespace: "default", Name: name, Labels: labels,
		Spec: map[string]any{"containers": []any{map[string]any{"name": "app", "image": "busybox:1",
			"resources": map[string]any{"memory": memory}}}}}
	if node != "" {
		o.Status = map[string]any{"node": node}
	}
	return o
}

func put(c *placeCache, o api.Object) { c.event(store.Event{Type: store.Configured, Object: o}) }

// used returns what the cache counts on each node, as "node: memory/pods".
func used(c *placeCache) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for _, n := range c.nodes {
		out[n.Name] = fmt.Sprintf("%dGi/%d", n.Used.MemoryBytes/gib, n.Used.Pods)
	}
	return out
}

func wantUsed(t *testing.T, what string, c *placeCache, want map[string]string) {
	t.Helper()
	got := used(c)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: nodes hold %v, want %v", what, got, want)
	}
}

// TestPlaceCacheBurst: placements count at once, before the store shows
// any of them, so a burst spreads; the store's events then change nothing.
func TestPlaceCacheBurst(t *testing.T) {
	var nodes []api.Object
	for i := 1; i <= 5; i++ {
		nodes = append(nodes, readyNode(fmt.Sprintf("n%d", i), 4000, 16*gib, nil))
	}
	c, _ := testCache(t, nodes...)
	placed := map[string]string{}
	for i := 0; i < 50; i++ {
		name := fmt.Sprintf("p%02d", i)
		put(c, podObj(name, "1Gi", "", nil)) // created
		node, err := c.place("default", name, groupOf("default", nil), scheduler.Request{MemoryBytes: gib})
		if err != nil {
			t.Fatalf("place %s: %v", name, err)
		}
		placed[name] = node
	}
	all := map[string]string{"n1": "10Gi/10", "n2": "10Gi/10", "n3": "10Gi/10", "n4": "10Gi/10", "n5": "10Gi/10"}
	wantUsed(t, "50 pods of 1Gi placed on 5 nodes, none confirmed", c, all)
	for name, node := range placed {
		put(c, podObj(name, "1Gi", node, nil))
	}
	wantUsed(t, "after the store confirmed them", c, all)
	// An older event without the node (say, a label change racing the
	// write) does not undo a placement in flight.
	put(c, podObj("p99", "1Gi", "", nil))
	n, _ := c.place("default", "p99", groupOf("default", nil), scheduler.Request{MemoryBytes: gib})
	put(c, podObj("p99", "1Gi", "", map[string]string{"late": "yes"}))
	if got := used(c)[n]; got != "11Gi/11" {
		t.Errorf("p99 placed on %s, then an event without its node: %s holds %s, want 11Gi/11", n, n, got)
	}
	for name := range placed {
		c.event(store.Event{Type: store.Deleted, Object: podObj(name, "1Gi", placed[name], nil)})
	}
	c.event(store.Event{Type: store.Deleted, Object: podObj("p99", "1Gi", n, nil)})
	wantUsed(t, "after every pod was deleted", c, map[string]string{"n1": "0Gi/0", "n2": "0Gi/0", "n3": "0Gi/0", "n4": "0Gi/0", "n5": "0Gi/0"})
}

// TestPlaceCacheOwnHold: a placed pod's own hold is not counted against
// it, and it holds a larger request only once the step found room.
func TestPlaceCacheOwnHold(t *testing.T) {
	c, _ := testCache(t, readyNode("n1", 4000, 4*gib, nil), readyNode("n2", 4000, 4*gib, nil))
	put(c, podObj("other", "1Gi", "n1", nil))
	put(c, podObj("web", "1Gi", "n1", nil))
	wantUsed(t, "two pods of 1Gi on n1", c, map[string]string{"n1": "2Gi/2", "n2": "0Gi/0"})

	// web asks for 3Gi: n1 has 2Gi free plus web's own 1Gi.
	put(c, podObj("web", "3Gi", "n1", nil))
	wantUsed(t, "web's spec grew, not placed again yet", c, map[string]string{"n1": "2Gi/2", "n2": "0Gi/0"})
	if n, err := c.place("default", "web", groupOf("default", nil), scheduler.Request{MemoryBytes: 3 * gib, Current: "n1"}); n != "n1" || err != nil {
		t.Fatalf("web grown to 3Gi on n1 with 3Gi free for it: %s %v", n, err)
	}
	wantUsed(t, "web holds 3Gi", c, map[string]string{"n1": "4Gi/2", "n2": "0Gi/0"})

	// 4Gi no longer fits: web stays, still holding 3Gi.
	put(c, podObj("web", "4Gi", "n1", nil))
	_, err := c.place("default", "web", groupOf("default", nil), scheduler.Request{MemoryBytes: 4 * gib, Current: "n1"})
	want := "pod needs 4Gi memory but node n1 has 3Gi free; it stays on n1: lower the request or delete the pod to place it elsewhere"
	if err == nil || err.Error() != want {
		t.Errorf("web grown to 4Gi: %v, want %s", err, want)
	}
	wantUsed(t, "web's growth refused", c, map[string]string{"n1": "4Gi/2", "n2": "0Gi/0"})

	// Something else moved it (an operator's tool, a restore): the store wins.
	put(c, podObj("web", "4Gi", "n2", nil))
	wantUsed(t, "web moved to n2 by the store", c, map[string]string{"n1": "1Gi/1", "n2": "4Gi/1"})
}

// TestPlaceCacheUnconfirmed: a placement whose write never shows up is
// forgotten after assumeTTL; a pod placed anew drops its earlier one.
func TestPlaceCacheUnconfirmed(t *testing.T) {
	c, clock := testCache(t, readyNode("n1", 4000, 8*gib, nil), readyNode("n2", 4000, 8*gib, nil))
	put(c, podObj("web", "1Gi", "", nil))
	first, _ := c.place("default", "web", groupOf("default", nil), scheduler.Request{MemoryBytes: gib})
	second, _ := c.place("default", "web", groupOf("default", nil), scheduler.Request{MemoryBytes: gib})
	if first != "n1" || second != "n1" {
		t.Errorf("web placed twice (a superseded run): %s then %s, want n1 both times (its first hold dropped)", first, second)
	}
	wantUsed(t, "web placed twice", c, map[string]string{"n1": "1Gi/1", "n2": "0Gi/0"})
	*clock = clock.Add(assumeTTL)
	for _, n := range []string{"n1", "n2"} {
		o := readyNode(n, 4000, 8*gib, nil)
		o.Status["heartbeat"] = clock.Format(time.RFC3339Nano)
		put(c, o)
	}
	c.place("default", "other", groupOf("default", nil), scheduler.Request{}) // expiry runs on placements
	wantUsed(t, "web's placement never written (other, asking nothing, on n1)", c, map[string]string{"n1": "0Gi/1", "n2": "0Gi/0"})
}

// TestPlaceCacheNodes: a node's pods keep holding it while it is gone
// from the store, and readiness comes from the node's status.
func TestPlaceCacheNodes(t *testing.T) {
	c, _ := testCache(t, readyNode("n1", 4000, 8*gib, nil))
	put(c, podObj("web", "2Gi", "n1", nil))
	c.event(store.Event{Type: store.Deleted, Object: readyNode("n1", 0, 0, nil)})
	if _, err := c.place("default", "x", "g", scheduler.Request{}); err != scheduler.ErrNoNodes {
		t.Errorf("placing with n1 deleted: %v, want ErrNoNodes", err)
	}
	put(c, readyNode("n1", 4000, 8*gib, map[string]string{"region": "home"}))
	wantUsed(t, "n1 back", c, map[string]string{"n1": "2Gi/1"})
	gone := readyNode("n1", 4000, 8*gib, map[string]string{"region": "home"})
	gone.Status["reachability"] = unreachable
	put(c, gone)
	_, err := c.place("default", "x", "g", scheduler.Request{Placement: api.Placement{NodeSelector: map[string]string{"region": "home"}}})
	if want := "no node fits: 1 node: unreachable: no heartbeat for longer than its lease"; err == nil || err.Error() != want {
		t.Errorf("placing after n1's lease expired: %v, want %s", err, want)
	}
}

// TestPlaceCacheSpread: a group's replicas go round the zones, and the
// counts per zone follow nodes being relabelled.
func TestPlaceCacheSpread(t *testing.T) {
	zone := func(z string) map[string]string { return map[string]string{"zone": z} }
	c, _ := testCache(t, readyNode("n1", 4000, 8*gib, zone("a")), readyNode("n2", 4000, 8*gib, zone("a")), readyNode("n3", 4000, 8*gib, zone("b")))
	web := map[string]string{"app": "web"}
	spread := scheduler.Request{MemoryBytes: gib, Placement: api.Placement{Spread: "zone"}}
	place := func(name string) string {
		t.Helper()
		put(c, podObj(name, "1Gi", "", web))
		n, err := c.place("default", name, groupOf("default", web), spread)
		if err != nil {
			t.Fatal(err)
		}
		put(c, podObj(name, "1Gi", n, web))
		return n
	}
	var got []string
	for _, p := range []string{"w1", "w2", "w3", "w4"} {
		got = append(got, place(p))
	}
	// Another group does not count.
	put(c, podObj("db", "1Gi", "n3", map[string]string{"app": "db"}))
	got = append(got, place("w5"))
	if fmt.Sprint(got) != "[n1 n3 n2 n3 n1]" {
		t.Errorf("5 replicas spread over zone a (n1, n2) and b (n3): %v, want [n1 n3 n2 n3 n1]", got)
	}
	// n3 moves to zone c: zones a and c hold 3 and 2 of the group.
	put(c, readyNode("n3", 4000, 8*gib, zone("c")))
	if n := place("w6"); n != "n3" {
		t.Errorf("after n3 moved to zone c, w6 went to %s, want n3 (zone c has fewer replicas)", n)
	}
	c.event(store.Event{Type: store.Deleted, Object: podObj("w6", "1Gi", "n3", web)})
	c.event(store.Event{Type: store.Deleted, Object: podObj("w2", "1Gi", "n3", web)})
	c.event(store.Event{Type: store.Deleted, Object: podObj("w4", "1Gi", "n3", web)})
	if n := place("w7"); n != "n3" {
		t.Errorf("with zone c empty again, w7 went to %s, want n3", n)
	}
	// The counts kept up along the way are the counts computed afresh.
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.spreads[groupOf("default", web)]) == 0 {
		t.Fatal("no counts by zone kept for app=web")
	}
	for group, byKey := range c.spreads {
		for key, d := range byKey {
			if want := scheduler.Domains(c.nodes, c.index, c.groups[group], key); fmt.Sprint(d) != fmt.Sprint(want) {
				t.Errorf("group %q by %s: kept %v, want %v", group, key, d, want)
			}
		}
	}
}

// BenchmarkPlaceCache places pods one by one on 5,000 nodes through the
// cache, as the schedule step does, each followed by the store event
// confirming it.
func BenchmarkPlaceCache(b *testing.B) {
	var nodes []api.Object
	for i := 0; i < 5000; i++ {
		nodes = append(nodes, readyNode(fmt.Sprintf("node-%04d", i), 16000, 64*gib,
			map[string]string{"zone": fmt.Sprint("z", i%3), "region": "home"}))
	}
	for _, bc := range []struct {
		name      string
		placement api.Placement
	}{
		{"default", api.Placement{}},
		{"binpack", api.Placement{Score: api.ScoreBinpack}},
		{"selector+spread", api.Placement{NodeSelector: map[string]string{"region": "home"}, Spread: "zone"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, _ := testCache(b, nodes...)
			labels := map[string]string{"app": "web"}
			group := groupOf("default", labels)
			i := 0
			for b.Loop() {
				name := fmt.Sprint("p", i)
				i++
				node, err := c.place("default", name, group, scheduler.Request{CPUMilli: 100, MemoryBytes: 256 << 20, Placement: bc.placement})
				if err != nil {
					b.Fatal(err)
				}
				put(c, podObj(name, "256Mi", node, labels))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}

// placedOn lists the pods the store shows on a node, and its generation
// moves with every change of them, so the node lifecycle can skip a node
// it already dealt with and never one that changed.
func TestPlaceCachePlacedOn(t *testing.T) {
	c, _ := testCache(t, readyNode("n1", 4000, 8*gib, nil), readyNode("n2", 4000, 8*gib, nil))
	names := func(node string) (map[string]bool, uint64) {
		pods, gen := c.placedOn(node)
		out := map[string]bool{}
		for _, k := range pods {
			out[k.name] = true
		}
		return out, gen
	}
	put(c, podObj("a", "1Gi", "n1", nil))
	put(c, podObj("b", "1Gi", "n1", nil))
	put(c, podObj("c", "1Gi", "", nil))
	on1, g1 := names("n1")
	if len(on1) != 2 || !on1["a"] || !on1["b"] {
		t.Fatalf("n1 holds %v, want a and b", on1)
	}
	if _, g := names("n1"); g != g1 {
		t.Fatalf("generation moved from %d to %d with no change", g1, g)
	}
	evicted := podObj("a", "1Gi", "n1", nil)
	evicted.Status["evicted"] = map[string]any{"node": "n1"}
	put(c, evicted)
	_, g2 := names("n1")
	if g2 == g1 {
		t.Fatal("a pod on n1 changed and n1's generation did not")
	}
	put(c, podObj("a", "1Gi", "n2", nil))
	on1, g3 := names("n1")
	on2, _ := names("n2")
	if len(on1) != 1 || !on1["b"] || len(on2) != 1 || !on2["a"] || g3 == g2 {
		t.Fatalf("after a moved: n1 %v (gen %d, was %d), n2 %v; want b on n1, a on n2, n1's generation moved", on1, g3, g2, on2)
	}
	c.event(store.Event{Type: store.Deleted, Object: podObj("b", "1Gi", "n1", nil)})
	if on1, _ := names("n1"); len(on1) != 0 {
		t.Fatalf("n1 holds %v after b was deleted", on1)
	}
	put(c, podObj("b", "1Gi", "n1", nil))
	if _, g := names("n1"); g == g1 || g == g2 || g == g3 {
		t.Fatalf("n1's generation %d repeats an earlier one (%d, %d, %d)", g, g1, g2, g3)
	}
}
