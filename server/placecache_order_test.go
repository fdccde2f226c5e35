package server

import (
	"fmt"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/controllers/scheduler"
	"skiff.dev/skiff/store"
)

// Of nodes alike, a pod goes to the one with the least name, whatever
// order they joined and left in.
func TestPlaceCacheLeastName(t *testing.T) {
	c, clock := testCache(t, readyNode("n3", 4000, 8*gib, nil), readyNode("n5", 4000, 8*gib, nil))
	for _, name := range []string{"n4", "n1", "n2"} {
		put(c, readyNode(name, 4000, 8*gib, nil))
		c.renewed(name, *clock)
	}
	c.event(store.Event{Type: store.Deleted, Object: readyNode("n1", 4000, 8*gib, nil)})
	for i, want := range []string{"n2", "n3", "n4", "n5", "n2"} {
		name := "p" + string(rune('a'+i))
		node, err := c.place("default", name, groupOf("default", nil), scheduler.Request{CPUMilli: 100, MemoryBytes: 1 << 20})
		if err != nil || node != want {
			t.Fatalf("pod %d: %q, %v; want %s", i, node, err, want)
		}
		put(c, podObj(name, "1Mi", node, nil))
	}
}

// In a cluster large enough that a search stops once it found enough
// nodes that fit (scheduler.FeasibleToFind: 144 of 300), each placement
// starts where the last one stopped, so every node gets pods, not only
// the first 144.
func TestPlaceCacheRoundRobin(t *testing.T) {
	var nodes []api.Object
	for i := range 300 {
		nodes = append(nodes, readyNode(fmt.Sprintf("n%03d", i), 4000, 8*gib, nil))
	}
	c, _ := testCache(t, nodes...)
	for i := range 600 {
		if _, err := c.place("default", fmt.Sprint("p", i), groupOf("default", nil), scheduler.Request{CPUMilli: 10, MemoryBytes: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	for node, u := range used(c) {
		if u == "0Gi/0" {
			t.Errorf("after 600 pods on 300 nodes, %s has none", node)
		}
	}
}
