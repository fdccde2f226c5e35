package scheduler

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"skiff.dev/skiff/api"
)

// nodes makes n ready nodes named n0000, n0001, ... in name order, each
// changed by opt (given its position), as the server's cache keeps them.
func nodes(n int, opt func(i int, nd *Node)) Cluster {
	c := Cluster{Nodes: make([]Node, n), Index: make(map[string]int, n), ByName: true, Now: now}
	for i := range c.Nodes {
		c.Nodes[i] = node(fmt.Sprintf("n%04d", i))
		if opt != nil {
			opt(i, &c.Nodes[i])
		}
		c.Index[c.Nodes[i].Name] = i
	}
	return c
}

// kube-scheduler's numbers (numFeasibleNodesToFind with
// percentageOfNodesToScore unset).
func TestFeasibleToFind(t *testing.T) {
	for n, want := range map[int]int{
		0: 0, 1: 1, 50: 50, 100: 100, // all of a small cluster
		101: 100, 200: 100, // 50% and 49%, but never fewer than 100
		1000:   420,  // 50 - 1000/125 = 42%
		3000:   780,  // 26%
		5000:   500,  // 10%
		5625:   281,  // 5%: the floor reached
		100000: 5000, // 5%
	} {
		if got := FeasibleToFind(n); got != want {
			t.Errorf("FeasibleToFind(%d) = %d, want %d", n, got, want)
		}
	}
}

// Of 1,000 nodes, a search stops at the 420th that fits, and of nodes
// alike picks the least name of those it looked at.
func TestSearchStopsOnceEnoughFit(t *testing.T) {
	all := nodes(1000, nil)
	tests := []struct {
		name string
		c    Cluster
		start,
		considered, feasible, next int
		want string
	}{
		{"all fit", all, 0, 420, 420, 420, "n0000"},
		{"all fit, from 300", all, 300, 420, 420, 720, "n0300"},
		{"all fit, going round", all, 900, 420, 420, 320, "n0000"},
		{"start past the end: taken modulo", all, 2900, 420, 420, 320, "n0000"},
		{"every other node cordoned", nodes(1000, func(i int, n *Node) {
			if i%2 == 1 {
				n.Unschedulable = true
			}
		}), 501, 840, 420, 341, "n0000"},
		{"fewer than enough fit: every node", nodes(1000, func(i int, n *Node) {
			if i%4 != 0 {
				n.Unschedulable = true
			}
		}), 10, 1000, 250, 10, "n0000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Start = tt.start
			r, err := Search(Request{CPUMilli: 100, MemoryBytes: 128 * mi}, tt.c)
			if err != nil {
				t.Fatal(err)
			}
			if r.Node != tt.want || r.Considered != tt.considered || r.Feasible != tt.feasible || r.Next != tt.next {
				t.Errorf("%s after %d nodes, %d fitting, next %d; want %s after %d, %d, %d", r.Node, r.Considered, r.Feasible, r.Next, tt.want, tt.considered, tt.feasible, tt.next)
			}
			tt.c.ByName = false // the same, comparing names
			if r2, _ := Search(Request{CPUMilli: 100, MemoryBytes: 128 * mi}, tt.c); r2 != r {
				t.Errorf("comparing names: %+v, want %+v", r2, r)
			}
		})
	}
}

// Up to 100 nodes a search looks at all of them, wherever it starts, and
// picks what it picked before searches stopped early.
func TestSearchSmallClusterWherever(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	c := nodes(100, func(i int, n *Node) {
		n.Used = Resources{CPUMilli: rnd.Int63n(4) * 500, MemoryBytes: rnd.Int63n(4) * gi, Pods: rnd.Int63n(3)}
		n.Labels = map[string]string{"zone": fmt.Sprint(i % 4)}
	})
	c.Group = map[string]int{"n0001": 1, "n0002": 2}
	for _, req := range []Request{{}, {Placement: api.Placement{Score: api.ScoreBinpack}}, {Placement: api.Placement{Spread: "zone"}}} {
		want, _ := Place(req, c)
		for start := range 100 {
			c.Start = start
			r, err := Search(req, c)
			if err != nil || r.Node != want || r.Considered != 100 || r.Next != start {
				t.Fatalf("%+v from %d: %+v %v; want %s after all 100 nodes", req, start, r, err, want)
			}
		}
		c.Start = 0
	}
}

// Placing one pod after another, each search starting where the last
// stopped, every node of a large cluster gets pods, not only those of the
// first search's sample.
func TestSearchRoundRobin(t *testing.T) {
	req := Request{CPUMilli: 100, MemoryBytes: 128 * mi}
	c := nodes(1000, nil)
	for range 3000 {
		r, err := Search(req, c)
		if err != nil {
			t.Fatal(err)
		}
		n := &c.Nodes[c.Index[r.Node]]
		n.Used.CPUMilli += req.CPUMilli
		n.Used.MemoryBytes += req.MemoryBytes
		n.Used.Pods++
		c.Start = r.Next
	}
	var empty []string
	for i := range c.Nodes {
		if c.Nodes[i].Used.Pods == 0 {
			empty = append(empty, c.Nodes[i].Name)
		}
	}
	if len(empty) > 0 {
		t.Errorf("after 3,000 pods on 1,000 nodes, %d nodes have none: %s", len(empty), strings.Join(empty[:min(5, len(empty))], " "))
	}
}

// Where only two nodes far apart fit, a search finds both, wherever it
// starts, and ranks them; where none fits, it explains over every node.
func TestSearchFewFarApart(t *testing.T) {
	c := nodes(1000, func(i int, n *Node) {
		switch i {
		case 10:
			n.Used = Resources{CPUMilli: 1000, Pods: 1}
		case 900:
			n.Used = Resources{CPUMilli: 3000, Pods: 1}
		default:
			n.Unschedulable = true
		}
	})
	for _, start := range []int{0, 11, 500, 901} {
		c.Start = start
		for _, tt := range []struct {
			score string
			want  string
		}{{api.ScoreSpread, "n0010"}, {api.ScoreBinpack, "n0900"}} {
			r, err := Search(Request{CPUMilli: 100, Placement: api.Placement{Score: tt.score}}, c)
			if err != nil || r.Node != tt.want || r.Considered != 1000 || r.Feasible != 2 {
				t.Errorf("%s from %d: %+v %v; want %s of 2 fitting after all 1000 nodes", tt.score, start, r, err, tt.want)
			}
		}
	}
	c.Start = 500
	_, err := Search(Request{CPUMilli: 3500}, c)
	want := "no node fits: 998 nodes: cordoned; 2 nodes: insufficient cpu (needs 3500m, max free 3)"
	if err == nil || err.Error() != want {
		t.Errorf("nothing fits: %v, want %s", err, want)
	}
}

// A search that stops early ranks the nodes it looked at as Place ranks
// all: binpack picks the fullest node of its sample, the least name among
// equals, even though a fuller node lies outside it.
func TestSearchBinpackSample(t *testing.T) {
	rnd := rand.New(rand.NewSource(2))
	c := nodes(1000, func(i int, n *Node) {
		n.Used = Resources{CPUMilli: rnd.Int63n(30) * 100, Pods: 1}
		if i == 100 {
			n.Used.CPUMilli = 3800 // the fullest, outside the sample
		}
	})
	req := Request{CPUMilli: 100, Placement: api.Placement{Score: api.ScoreBinpack}}
	for _, start := range []int{300, 500} {
		c.Start = start
		r, err := Search(req, c)
		if err != nil || r.Considered != 420 {
			t.Fatalf("from %d: %+v %v, want 420 nodes considered", start, r, err)
		}
		want := ""
		var most int64 = -1
		for k := range r.Considered {
			n := c.Nodes[(start+k)%1000]
			if n.Used.CPUMilli > most || n.Used.CPUMilli == most && n.Name < want {
				want, most = n.Name, n.Used.CPUMilli
			}
		}
		if r.Node != want || r.Node == "n0100" {
			t.Errorf("binpack from %d picked %s, want %s: the fullest (%dm) of the nodes it looked at, not n0100 outside them", start, r.Node, want, most)
		}
	}
}

// A spread request still goes to the value of the label with the fewest
// pods of the group, though a sample would miss it: zones follow names
// here, and a sample from n0000 (429 nodes of 999) holds zones a and b
// only.
func TestSearchSpreadSeesEveryZone(t *testing.T) {
	c := nodes(999, func(i int, n *Node) {
		n.Labels = map[string]string{"zone": string(rune('a' + i/333))} // a: 0-332, b: 333-665, c: 666-998
	})
	req := Request{CPUMilli: 100, Placement: api.Placement{Spread: "zone"}}
	tests := []struct {
		name       string
		group      map[string]int
		start      int
		want       string
		considered int
	}{
		{"zone c has none of the group: its first node", map[string]int{"n0000": 1, "n0400": 1}, 0, "n0666", 667},
		{"every zone has some: zone b, after all nodes", map[string]int{"n0000": 2, "n0400": 1, "n0700": 3}, 0, "n0333", 999},
		{"the same from inside zone b", map[string]int{"n0000": 2, "n0400": 1, "n0700": 3}, 500, "n0333", 999},
		{"starting in the empty zone: a sample", map[string]int{"n0000": 1, "n0400": 1}, 700, "n0700", 429},
		{"no pods of the group yet: a sample", nil, 0, "n0000", 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.Group, c.Start = tt.group, tt.start
			r, err := Search(req, c)
			if err != nil || r.Node != tt.want || r.Considered != tt.considered {
				t.Errorf("%+v %v; want %s after %d nodes", r, err, tt.want, tt.considered)
			}
		})
	}
}

// A pod that keeps its node searches nothing and moves no one's start.
func TestSearchCurrentStays(t *testing.T) {
	c := nodes(1000, nil)
	c.Start = 123
	r, err := Search(Request{Current: "n0999", Held: Resources{Pods: 1}}, c)
	if err != nil || r != (Result{Node: "n0999", Next: 123}) {
		t.Errorf("%+v %v; want n0999, nothing considered, next 123", r, err)
	}
}
