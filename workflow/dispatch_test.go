package workflow

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestQueueTakeGroup: a group taker gets the items of its destinations
// only, up to max at a time, each destination's oldest first, and is woken
// by an item dispatched while it waits.
func TestQueueTakeGroup(t *testing.T) {
	q := &Queue{}
	sim := func(d string) bool { return strings.HasPrefix(d, "node:sim-") }
	node := func(id, n string) *WorkItem { return &WorkItem{ID: id, Where: "node", Node: n} }
	q.Dispatch(node("a1", "sim-1"))
	q.Dispatch(node("a2", "sim-1"))
	q.Dispatch(node("b1", "sim-2"))
	q.Dispatch(node("r1", "real"))
	q.Dispatch(&WorkItem{ID: "c1", Controller: "sim-3"}) // controller:sim-3, not a node

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	for len(got) < 3 {
		items := q.TakeGroup(ctx, "simulator:sim", sim, 2)
		if len(items) == 0 || len(items) > 2 {
			t.Fatalf("TakeGroup returned %d items, want 1 or 2", len(items))
		}
		for _, it := range items {
			got = append(got, it.ID)
		}
	}
	if i1, i2 := strings.Index(strings.Join(got, ","), "a1"), strings.Index(strings.Join(got, ","), "a2"); i1 > i2 {
		t.Errorf("sim-1's items taken as %v: want oldest first", got)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "a1,a2,b1" {
		t.Errorf("group took %v, want a1, a2, b1", got)
	}
	if q.Pending("node:real") != 1 || q.Pending("controller:sim-3") != 1 {
		t.Errorf("items of other destinations were taken")
	}

	// Woken by a dispatch while waiting; a single-destination taker of a
	// member destination still works.
	done := make(chan []*WorkItem)
	go func() { done <- q.TakeGroup(ctx, "simulator:sim", sim, 10) }()
	time.Sleep(20 * time.Millisecond)
	q.Dispatch(node("d1", "sim-4"))
	select {
	case items := <-done:
		if len(items) != 1 || items[0].ID != "d1" {
			t.Errorf("woken taker got %v, want d1", items)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a group taker was not woken by a dispatch to one of its destinations")
	}
	q.Dispatch(node("e1", "sim-5"))
	if items := q.Take(ctx, "node:sim-5", 10); len(items) != 1 || items[0].ID != "e1" {
		t.Errorf("Take of a group's destination got %v", items)
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if items := q.TakeGroup(short, "simulator:sim", sim, 10); len(items) != 0 {
		t.Errorf("TakeGroup after its item was taken alone returned %v", items)
	}
}
