package server

import (
	"testing"

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
