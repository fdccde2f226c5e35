package scheduler

import (
	"errors"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"skiff.dev/skiff/api"
)

const (
	gi = int64(1) << 30
	mi = int64(1) << 20
)

var now = time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC)

// node is a ready node with 4 cpus, 8Gi and room for 110 pods; opts change it.
func node(name string, opts ...func(*Node)) Node {
	n := Node{Name: name, Heartbeat: now.Add(-time.Second), Network: "ready",
		Capacity: Resources{CPUMilli: 4000, MemoryBytes: 8 * gi, Pods: 110}}
	for _, o := range opts {
		o(&n)
	}
	return n
}

func labels(kv ...string) func(*Node) {
	return func(n *Node) {
		n.Labels = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
	}
}

func used(cpu, mem, pods int64) func(*Node) {
	return func(n *Node) { n.Used = Resources{CPUMilli: cpu, MemoryBytes: mem, Pods: pods} }
}

func taint(key, value, effect string) func(*Node) {
	return func(n *Node) { n.Taints = append(n.Taints, api.Taint{Key: key, Value: value, Effect: effect}) }
}

var (
	cordon        = func(n *Node) { n.Unschedulable = true }
	staleBeat     = func(n *Node) { n.Unreachable = true }
	neverBeat     = func(n *Node) { n.Heartbeat = time.Time{} }
	networkDown   = func(n *Node) { n.Network = "" }
	smallMemory   = func(n *Node) { n.Capacity.MemoryBytes = 1 * gi }
	podsMax3Full  = func(n *Node) { n.Capacity.Pods, n.Used.Pods = 3, 3 }
	noPodLimit    = func(n *Node) { n.Capacity.Pods = 0; n.Used.Pods = 500 }
	home          = labels("region", "home")
	cloud         = labels("region", "cloud")
	homeSelector  = api.Placement{NodeSelector: map[string]string{"region": "home"}}
	gpuToleration = func(tl api.Toleration) api.Placement { return api.Placement{Tolerations: []api.Toleration{tl}} }
)

func place(req Request, nodes ...Node) (string, string) {
	got, err := Place(req, Cluster{Nodes: nodes, Now: now})
	if err != nil {
		return got, err.Error()
	}
	return got, ""
}

func TestFilters(t *testing.T) {
	tests := []struct {
		name  string
		req   Request
		nodes []Node
		want  string // the node, or the whole error
	}{
		{"fits", Request{MemoryBytes: gi}, []Node{node("n1")}, "n1"},
		{"no nodes", Request{}, nil, "no nodes: start an agent (skiff token create --node NAME prints how)"},
		{"memory", Request{MemoryBytes: 2 * gi}, []Node{node("n1", smallMemory), node("n2", smallMemory), node("n3", smallMemory, used(0, gi/2, 1))},
			"no node fits: 3 nodes: insufficient memory (needs 2Gi, max free 1Gi)"},
		{"memory, free rounded down", Request{MemoryBytes: 2 * gi}, []Node{node("n1", smallMemory, used(0, 100*mi, 1))},
			"no node fits: 1 node: insufficient memory (needs 2Gi, max free 924Mi)"},
		{"memory, free not whole", Request{MemoryBytes: 8 * gi}, []Node{node("n1", used(0, gi+gi/3, 1))},
			"no node fits: 1 node: insufficient memory (needs 8Gi, max free 6.6Gi)"},
		{"cpu", Request{CPUMilli: 1500}, []Node{node("n1", used(3000, 0, 2)), node("n2", used(3500, 0, 2))},
			"no node fits: 2 nodes: insufficient cpu (needs 1500m, max free 1)"},
		{"the issue's example", Request{MemoryBytes: 2 * gi, Placement: homeSelector},
			[]Node{node("a", home, smallMemory), node("b", home, smallMemory), node("c", home, smallMemory), node("d", cloud), node("e", cloud)},
			"no node fits: 3 nodes: insufficient memory (needs 2Gi, max free 1Gi); 2 nodes: region=cloud does not match home"},
		{"selector grouped by the node's value", Request{Placement: homeSelector},
			[]Node{node("a", cloud), node("b", labels("region", "edge")), node("c", cloud), node("d")},
			"no node fits: 2 nodes: region=cloud does not match home; 1 node: no label region (wants home); 1 node: region=edge does not match home"},
		{"every selector label must match", Request{Placement: api.Placement{NodeSelector: map[string]string{"region": "home", "disk": "ssd"}}},
			[]Node{node("a", home), node("b", labels("region", "home", "disk", "ssd"))}, "b"},
		{"first unmatched label by key", Request{Placement: api.Placement{NodeSelector: map[string]string{"region": "home", "disk": "ssd"}}},
			[]Node{node("a", labels("region", "cloud", "disk", "hdd"))},
			"no node fits: 1 node: disk=hdd does not match ssd"},
		{"taint", Request{}, []Node{node("n1", taint("dedicated", "gpu", "NoSchedule")), node("n2", taint("dedicated", "gpu", "NoExecute"))},
			"no node fits: 1 node: taint dedicated=gpu:NoExecute not tolerated; 1 node: taint dedicated=gpu:NoSchedule not tolerated"},
		{"taint without value", Request{}, []Node{node("n1", taint("gpu", "", "NoSchedule"))},
			"no node fits: 1 node: taint gpu:NoSchedule not tolerated"},
		{"tolerated by key", Request{Placement: gpuToleration(api.Toleration{Key: "dedicated"})},
			[]Node{node("n1", taint("dedicated", "gpu", "NoSchedule"))}, "n1"},
		{"tolerated by key, value and effect", Request{Placement: gpuToleration(api.Toleration{Key: "dedicated", Value: "gpu", Effect: "NoSchedule"})},
			[]Node{node("n1", taint("dedicated", "gpu", "NoSchedule"))}, "n1"},
		{"toleration of another value", Request{Placement: gpuToleration(api.Toleration{Key: "dedicated", Value: "db"})},
			[]Node{node("n1", taint("dedicated", "gpu", "NoSchedule"))}, "no node fits: 1 node: taint dedicated=gpu:NoSchedule not tolerated"},
		{"toleration of another effect", Request{Placement: gpuToleration(api.Toleration{Key: "dedicated", Effect: "NoSchedule"})},
			[]Node{node("n1", taint("dedicated", "gpu", "NoExecute"))}, "no node fits: 1 node: taint dedicated=gpu:NoExecute not tolerated"},
		{"every taint must be tolerated", Request{Placement: gpuToleration(api.Toleration{Key: "dedicated"})},
			[]Node{node("n1", taint("dedicated", "gpu", "NoSchedule"), taint("spot", "", "NoExecute"))},
			"no node fits: 1 node: taint spot:NoExecute not tolerated"},
		{"cordoned", Request{}, []Node{node("n1", cordon), node("n2", cordon)}, "no node fits: 2 nodes: cordoned"},
		{"lease expired, never heard from", Request{}, []Node{node("n1", staleBeat), node("n2", neverBeat)},
			"no node fits: 1 node: not ready: no heartbeat yet; 1 node: unreachable: no heartbeat for longer than its lease"},
		{"an old heartbeat is fine while the lease holds", Request{}, []Node{node("n1", func(n *Node) { n.Heartbeat = now.Add(-time.Hour) })}, "n1"},
		{"evicted: anywhere but there", Request{Avoid: "n1"}, []Node{node("n1"), node("n2", used(3000, 0, 50))}, "n2"},
		{"evicted, nowhere else", Request{Avoid: "n1"}, []Node{node("n1"), node("n2", cordon)},
			"no node fits: 1 node: cordoned; 1 node: the pod was evicted from it"},
		{"network not ready", Request{}, []Node{node("n1", networkDown)}, "no node fits: 1 node: network not ready"},
		{"too many pods", Request{}, []Node{node("n1", used(0, 0, 110)), node("n2", podsMax3Full)},
			"no node fits: 1 node: too many pods (max 110); 1 node: too many pods (max 3)"},
		{"no pod limit", Request{}, []Node{node("n1", noPodLimit)}, "n1"},
		{"filters in order, one reason per node", Request{CPUMilli: 100, MemoryBytes: 2 * gi, Placement: homeSelector},
			[]Node{node("a", cordon, cloud), node("b", staleBeat, cordon), node("c", cloud, taint("x", "", "NoSchedule")),
				node("d", home, taint("x", "", "NoSchedule"), smallMemory), node("e", home, smallMemory), node("f", home, used(4000, 0, 1))},
			"no node fits: 1 node: cordoned; 1 node: insufficient cpu (needs 100m, max free 0); 1 node: insufficient memory (needs 2Gi, max free 1Gi); " +
				"1 node: region=cloud does not match home; 1 node: taint x:NoSchedule not tolerated; 1 node: unreachable: no heartbeat for longer than its lease"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := place(tt.req, tt.nodes...)
			if err != "" {
				got = err
			}
			if got != tt.want {
				t.Errorf("got\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
}

func TestNoNodesIsErrNoNodes(t *testing.T) {
	if _, err := Place(Request{}, Cluster{Now: now}); !errors.Is(err, ErrNoNodes) {
		t.Errorf("Place with no nodes = %v, want ErrNoNodes", err)
	}
}

func TestScoring(t *testing.T) {
	nodes := []Node{
		node("full", used(3000, 7*gi, 5)),  // 0.75 cpu, 0.875 memory → 0.875 + the pod
		node("half", used(1000, 4*gi, 5)),  // 0.5
		node("empty", used(0, 0, 0)),       // 0
		node("tight", used(3900, 1*gi, 5)), // cpu leaves no room for 200m
	}
	req := Request{CPUMilli: 200, MemoryBytes: 512 * mi}
	if got, err := place(req, nodes...); got != "empty" {
		t.Errorf("spread (default) picked %s %s, want the least allocated node, empty", got, err)
	}
	req.Placement.Score = api.ScoreSpread
	if got, err := place(req, nodes...); got != "empty" {
		t.Errorf("spread picked %s %s, want empty", got, err)
	}
	req.Placement.Score = api.ScoreBinpack
	if got, err := place(req, nodes...); got != "full" {
		t.Errorf("binpack picked %s %s, want the most allocated node the pod fits on, full", got, err)
	}
	// The score is the larger fraction: 3.5 cpus of 4 outweighs half the memory.
	cpuHeavy := node("cpu-heavy", used(3500, 0, 1))
	memHalf := node("mem-half", used(0, 4*gi, 1))
	if got, _ := place(Request{}, cpuHeavy, memHalf); got != "mem-half" {
		t.Errorf("spread between 7/8 cpu and 1/2 memory allocated picked %s, want mem-half", got)
	}
	// Ties: fewer pods (spread) or more (binpack), then the name.
	a, b, c := node("a", used(0, 0, 3)), node("b", used(0, 0, 1)), node("c", used(0, 0, 1))
	if got, _ := place(Request{}, a, b, c); got != "b" {
		t.Errorf("spread among equally allocated nodes picked %s, want b (fewest pods, then name)", got)
	}
	if got, _ := place(Request{Placement: api.Placement{Score: api.ScoreBinpack}}, a, b, c); got != "a" {
		t.Errorf("binpack among equally allocated nodes picked %s, want a (most pods)", got)
	}
}

func TestSpread(t *testing.T) {
	zone := func(z string) func(*Node) { return labels("zone", z) }
	nodes := []Node{
		node("a1", zone("a")), node("a2", zone("a"), used(0, 0, 9)), // zone a: 3 pods of the group
		node("b1", zone("b"), used(0, 6*gi, 7)),      // zone b: 1 pod of the group, most allocated
		node("c1", zone("c")), node("c2", zone("c")), // zone c: 2 pods
		node("none"), // no zone label: 0 pods, but not in a zone
	}
	group := map[string]int{"a1": 2, "a2": 1, "b1": 1, "c2": 2, "gone": 5}
	req := Request{MemoryBytes: gi, Placement: api.Placement{Spread: "zone"}}
	c := Cluster{Nodes: nodes, Group: group, Now: now}
	if got, err := Place(req, c); got != "b1" || err != nil {
		t.Errorf("spread over zones picked %s %v, want b1 (zone b has the fewest pods of the group, whatever its score)", got, err)
	}
	// Within a zone: by score, then name.
	group["b1"] = 2
	if got, _ := Place(req, c); got != "c1" {
		t.Errorf("spread with zones b and c at 2 pods picked %s, want c1 (zone c's emptiest node; b1 is fuller)", got)
	}
	// Without spread, the group does not matter.
	if got, _ := Place(Request{MemoryBytes: gi}, c); got != "a1" {
		t.Errorf("without spread picked %s, want a1 (least allocated, then name)", got)
	}
	// A node without the label only when no labelled node fits.
	req.MemoryBytes = 9 * gi
	nodes[5].Capacity.MemoryBytes = 16 * gi
	if got, err := Place(req, c); got != "none" {
		t.Errorf("with only the unlabelled node fitting, picked %s %v, want none", got, err)
	}
}

// TestSpreadBurst places a group's replicas one after another, counting
// each as the server's cache does: they go round the zones.
func TestSpreadBurst(t *testing.T) {
	var nodes []Node
	for i, z := range []string{"a", "a", "a", "b", "c", "c"} {
		nodes = append(nodes, node(fmt.Sprintf("n%d", i), labels("zone", z)))
	}
	group := map[string]int{}
	perZone := map[string]int{}
	for i := 0; i < 9; i++ {
		got, err := Place(Request{MemoryBytes: 256 * mi, Placement: api.Placement{Spread: "zone"}}, Cluster{Nodes: nodes, Group: group, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		for j := range nodes {
			if nodes[j].Name == got {
				nodes[j].Used.MemoryBytes += 256 * mi
				nodes[j].Used.Pods++
				perZone[nodes[j].Labels["zone"]]++
			}
		}
		group[got]++
	}
	if perZone["a"] != 3 || perZone["b"] != 3 || perZone["c"] != 3 {
		t.Errorf("9 replicas over zones a (3 nodes), b (1), c (2): %v, want 3 each", perZone)
	}
}

func TestDeterministic(t *testing.T) {
	var nodes []Node
	for i := 0; i < 50; i++ {
		nodes = append(nodes, node(fmt.Sprintf("n%02d", i), used(int64(i%5)*100, 0, int64(i%3)), labels("zone", fmt.Sprint(i%4))))
	}
	reqs := []Request{{}, {Placement: api.Placement{Score: api.ScoreBinpack}}, {CPUMilli: 3900}, {Placement: api.Placement{Spread: "zone"}}}
	rnd := rand.New(rand.NewSource(1))
	for _, req := range reqs {
		want, _ := Place(req, Cluster{Nodes: nodes, Group: map[string]int{"n00": 1, "n05": 2}, Now: now})
		for i := 0; i < 20; i++ {
			shuffled := append([]Node(nil), nodes...)
			rnd.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if got, _ := Place(req, Cluster{Nodes: shuffled, Group: map[string]int{"n00": 1, "n05": 2}, Now: now}); got != want {
				t.Fatalf("%+v: %s in one node order, %s in another", req, want, got)
			}
		}
	}
}

func TestStickiness(t *testing.T) {
	// n2 has 8Gi: 6Gi held by others and 1Gi by the pod itself.
	n2 := func(opts ...func(*Node)) Node {
		return node("n2", append([]func(*Node){used(1000, 7*gi, 3)}, opts...)...)
	}
	held := Resources{CPUMilli: 500, MemoryBytes: gi, Pods: 1}
	tests := []struct {
		name string
		req  Request
		n2   Node
		want string
	}{
		{"unchanged", Request{CPUMilli: 500, MemoryBytes: gi}, n2(), "n2"},
		{"kept on a cordoned, not ready, tainted, full node", Request{CPUMilli: 500, MemoryBytes: gi},
			n2(cordon, staleBeat, networkDown, func(n *Node) { n.Capacity.MemoryBytes = gi }), "n2"},
		{"grew within the node's room", Request{CPUMilli: 500, MemoryBytes: 2 * gi}, n2(), "n2"},
		{"shrank", Request{CPUMilli: 100, MemoryBytes: 100 * mi}, n2(), "n2"},
		{"grew past the node's room", Request{CPUMilli: 500, MemoryBytes: 4 * gi}, n2(),
			"pod needs 4Gi memory but node n2 has 2Gi free; it stays on n2: lower the request or delete the pod to place it elsewhere"},
		{"cpu grew past the node's room", Request{CPUMilli: 4000, MemoryBytes: gi}, n2(),
			"pod needs 4 cpu but node n2 has 3500m free; it stays on n2: lower the request or delete the pod to place it elsewhere"},
		{"selector no longer matches", Request{CPUMilli: 500, MemoryBytes: gi, Placement: homeSelector}, n2(cloud),
			"node n2 no longer matches the pod: region=cloud does not match home; it stays on n2: change spec.placement back or delete the pod to place it elsewhere"},
		{"selector matches", Request{CPUMilli: 500, MemoryBytes: gi, Placement: homeSelector}, n2(home), "n2"},
		{"toleration gone", Request{CPUMilli: 500, MemoryBytes: gi}, n2(taint("dedicated", "gpu", "NoSchedule")),
			"node n2 no longer matches the pod: taint dedicated=gpu:NoSchedule not tolerated; it stays on n2: tolerate it in spec.placement.tolerations or delete the pod to place it elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Current, tt.req.Held = "n2", held
			got, err := place(tt.req, node("n1"), tt.n2, node("n3"))
			if err != "" {
				if got != "n2" {
					t.Errorf("failed with node %q, want it to name the node it stays on", got)
				}
				got = err
			}
			if got != tt.want {
				t.Errorf("got\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
	// A pod whose node is gone is placed anew.
	if got, err := place(Request{Current: "gone", Held: held}, node("n1"), node("n3", used(0, 0, 1))); got != "n1" {
		t.Errorf("pod of a vanished node: %s %s, want placed on n1", got, err)
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "0", -5: "0", 512: "512", 1024: "1Ki", 1536: "1.5Ki", 64 * mi: "64Mi",
		gi + gi/2: "1.5Gi", 2*gi - 1: "1.9Gi", 8 * gi: "8Gi"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %s, want %s", in, got, want)
		}
	}
}

// BenchmarkPlace places on 5,000 nodes, a tenth of them too full, with
// the node index kept as the server's cache keeps it.
func BenchmarkPlace(b *testing.B) {
	nodes := make([]Node, 5000)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("n%04d", i), labels("zone", fmt.Sprint(i%3), "region", "home"), used(int64(i%16)*100, int64(i%8)*gi/2, int64(i%50)))
		if i%10 == 0 {
			nodes[i].Used.MemoryBytes = nodes[i].Capacity.MemoryBytes
		}
	}
	c := Cluster{Nodes: nodes, Now: now, Group: map[string]int{"n0001": 3, "n0002": 1}, Index: map[string]int{}}
	for i := range nodes {
		c.Index[nodes[i].Name] = i // as the server's cache keeps it
	}
	for _, bc := range []struct {
		name string
		req  Request
	}{
		{"default", Request{CPUMilli: 100, MemoryBytes: 128 * mi}},
		{"selector+spread", Request{CPUMilli: 100, MemoryBytes: 128 * mi, Placement: api.Placement{NodeSelector: map[string]string{"region": "home"}, Spread: "zone"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Place(bc.req, c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}
