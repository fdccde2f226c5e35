package scheduler

import (
	"errors"
	"fmt"
	"math"
	"time"

	"skiff.dev/skiff/api"
)

// Resources are amounts nodes have and pods hold.
type Resources struct {
	CPUMilli    int64
	MemoryBytes int64
	Pods        int64
}

// Node is what placement needs to know of a node.
type Node struct {
	Name          string
	Labels        map[string]string
	Taints        []api.Taint
	Unschedulable bool      // cordoned
	Heartbeat     time.Time // the agent's last heartbeat; zero if none
	// Unreachable is set by the node lifecycle once the node's lease
	// expired: no heartbeat for a lease.
	Unreachable bool
	Network     string    // status.network: "ready" once the node's readiness run programmed it
	Capacity    Resources // Pods 0: no limit on the number of pods
	Used        Resources // held by the pods placed there
}

// NotReady says why the node takes no new pods, or "" if it does: its
// agent must have been heard from, its lease must hold, and its network
// must be ready.
func (n *Node) NotReady() string {
	switch {
	case n.Heartbeat.IsZero():
		return "not ready: no heartbeat yet"
	case n.Unreachable:
		return "unreachable: no heartbeat for longer than its lease"
	case n.Network != "ready":
		return "network not ready"
	}
	return ""
}

// Request is what a pod asks for.
type Request struct {
	CPUMilli    int64
	MemoryBytes int64
	Placement   api.Placement
	// Current is the node the pod is on, if any; Held is what it holds
	// there, already counted in that node's Used.
	Current string
	Held    Resources
	// Avoid is a node the pod was evicted from (unreachable, drained or
	// forgotten): the pod is placed anew, anywhere but there.
	Avoid string
}

// Cluster is a read-only view of the nodes and what is placed on them.
type Cluster struct {
	Nodes []Node
	// Index maps node names to their position in Nodes; Place builds it
	// when nil.
	Index map[string]int
	// Group counts, by node name, the pods of the request's group placed
	// there: the pods of its namespace with exactly its labels. Only
	// placement.spread uses it.
	Group map[string]int
	// Domains is Group summed by the value of the nodes' spread label, for
	// callers that keep it up to date; Place computes it from Group when
	// nil.
	Domains map[string]int
	Now     time.Time
	// ByName says Nodes are sorted by name, so that of nodes ranked alike
	// the one with the least name is the one of least position and Place
	// compares no names (reading each node's name from memory is most of a
	// placement's cost when thousands of nodes rank alike).
	ByName bool
	// Start is the position in Nodes the search begins at, going round to
	// the start again; taken modulo len(Nodes). A caller that passes each
	// Result.Next back here makes its searches take turns over all nodes
	// (round-robin), as a search of a large cluster stops early (see
	// FeasibleToFind).
	Start int
}

// Result is the node Search picked and how far it looked.
type Result struct {
	Node string
	// Considered counts the nodes the search ran the filters on, Feasible
	// those that passed them.
	Considered, Feasible int
	// Next is the position after the last node considered: where the next
	// search should start.
	Next int
}

// ErrNoNodes is returned when the cluster has no nodes at all.
var ErrNoNodes = errors.New("no nodes: start an agent (skiff token create --node NAME prints how)")

// Place picks a node for a request, or explains why none fits. A request
// with a Current node still in the cluster gets that node back, or an error
// saying what of the pod no longer fits there; it is never moved.
func Place(req Request, c Cluster) (string, error) {
	r, err := Search(req, c)
	return r.Node, err
}

// Search is Place, saying how far it looked. It filters the nodes from
// c.Start on, going round, and stops once it has found FeasibleToFind of
// them that fit (for a spread request, once also the best of those is on
// a value of the spread label with no pods of the group: see enough); it
// then picks the best node of those it found. When fewer fit, it has
// looked at every node and, if none fits, explains why over all of them.
func Search(req Request, c Cluster) (Result, error) {
	if c.Index == nil {
		c.Index = make(map[string]int, len(c.Nodes))
		for i := range c.Nodes {
			c.Index[c.Nodes[i].Name] = i
		}
	}
	if req.Current != "" && req.Current == req.Avoid {
		req.Current, req.Held = "", Resources{}
	}
	total := len(c.Nodes)
	start := 0
	if total > 0 {
		start = ((c.Start % total) + total) % total
	}
	if req.Current != "" {
		if i, ok := c.Index[req.Current]; ok {
			return Result{Node: req.Current, Next: start}, stay(&req, &c.Nodes[i])
		}
	}
	if total == 0 {
		return Result{}, ErrNoNodes
	}
	p := newPlan(&req, &c)
	want := FeasibleToFind(total)
	var best candidate
	settled := false // nothing still to find can rank before best but by score (p.enough)
	feasible, considered := 0, total
	// From start to the last node, then round from the first to start.
	parts := [2][]Node{c.Nodes[start:], c.Nodes[:start]}
search:
	for h, part := range parts {
		for j := range part {
			n := &part[j]
			if p.verdict(n) != fits {
				continue
			}
			feasible++
			x := p.candidate(n, h == 1)
			if feasible == 1 || p.better(&x, &best) {
				best = x
				settled = p.enough(&best)
			}
			if settled && feasible >= want {
				considered = j + 1
				if h == 1 {
					considered += len(parts[0])
				}
				break search
			}
		}
	}
	r := Result{Considered: considered, Feasible: feasible, Next: (start + considered) % total}
	if feasible == 0 {
		return r, p.explain(c.Nodes)
	}
	r.Node = best.n.Name
	return r, nil
}

// minFeasibleToFind and minFeasiblePercent bound how few nodes that fit a
// search looks for: kube-scheduler's minFeasibleNodesToFind and
// minFeasibleNodesPercentageToFind.
const (
	minFeasibleToFind  = 100
	minFeasiblePercent = 5
)

// FeasibleToFind is how many nodes that fit a search of a cluster of n
// nodes finds before it stops looking, as kube-scheduler's default
// (percentageOfNodesToScore unset) has it: all of them up to 100 nodes;
// above, a share of the cluster falling linearly from 50% at 0 nodes by
// one point every 125 nodes (42% of 1,000, 10% of 5,000), never below 5%
// nor below 100 nodes. Past a few hundred nodes, the best of a sample
// places about as well as the best of all, for a fraction of the work.
func FeasibleToFind(n int) int {
	if n <= minFeasibleToFind {
		return n
	}
	percent := max(50-n/125, minFeasiblePercent)
	return max(n*percent/100, minFeasibleToFind)
}

// verdict is the first filter a node fails, in filter order.
type verdict uint8

const (
	fits verdict = iota
	evictedFrom
	notReady
	cordoned
	selectorMismatch
	taintNotTolerated
	tooManyPods
	noMemory
	noCPU
)

type labelPair struct{ key, value string }

// plan is one placement's request, prepared for the per-node loop.
type plan struct {
	req      *Request
	selector []labelPair // sorted by key, so explanations name the same one
	binpack  bool
	spread   string         // node label to spread over, or ""
	domain   map[string]int // spread label value → pods of the group
	byName   bool           // nodes come sorted by name (Cluster.ByName)
}

func newPlan(req *Request, c *Cluster) *plan {
	p := &plan{req: req, binpack: req.Placement.Score == api.ScoreBinpack,
		spread: req.Placement.Spread, selector: sortedSelector(req.Placement.NodeSelector), byName: c.ByName}
	if p.spread != "" {
		p.domain = c.Domains
		if p.domain == nil {
			p.domain = Domains(c.Nodes, c.Index, c.Group, p.spread)
		}
	}
	return p
}

// Domains sums a group's pods, counted by node name, by the value of the
// nodes' label key; nodes without it, or not in nodes, do not count.
func Domains(nodes []Node, index map[string]int, group map[string]int, key string) map[string]int {
	d := map[string]int{}
	for name, count := range group {
		if i, ok := index[name]; ok {
			if v, ok := nodes[i].Labels[key]; ok {
				d[v] += count
			}
		}
	}
	return d
}

// verdict runs the filters; it is the hot loop of a placement and does
// not allocate.
func (p *plan) verdict(n *Node) verdict {
	switch {
	case n.Name == p.req.Avoid:
		return evictedFrom
	case n.Heartbeat.IsZero() || n.Unreachable || n.Network != "ready":
		return notReady
	case n.Unschedulable:
		return cordoned
	}
	for _, s := range p.selector {
		if v, ok := n.Labels[s.key]; !ok || v != s.value {
			return selectorMismatch
		}
	}
	for _, t := range n.Taints {
		if !tolerated(p.req.Placement.Tolerations, t) {
			return taintNotTolerated
		}
	}
	switch {
	case n.Capacity.Pods > 0 && n.Used.Pods >= n.Capacity.Pods:
		return tooManyPods
	case p.req.MemoryBytes > n.Capacity.MemoryBytes-n.Used.MemoryBytes:
		return noMemory
	case p.req.CPUMilli > n.Capacity.CPUMilli-n.Used.CPUMilli:
		return noCPU
	}
	return fits
}

func tolerated(tols []api.Toleration, t api.Taint) bool {
	for _, tl := range tols {
		if tl.Tolerates(t) {
			return true
		}
	}
	return false
}

// score is how allocated the node would be with the pod: the larger of
// its cpu and memory fractions.
func (p *plan) score(n *Node) float64 {
	return max(fraction(n.Used.CPUMilli+p.req.CPUMilli, n.Capacity.CPUMilli),
		fraction(n.Used.MemoryBytes+p.req.MemoryBytes, n.Capacity.MemoryBytes))
}

func fraction(used, capacity int64) float64 {
	if capacity <= 0 {
		return 0
	}
	return float64(used) / float64(capacity)
}

// candidate is a node that fits, with what ranks it. (Four fields at most,
// so that the compiler keeps it in registers: it is made for every node
// that fits.)
type candidate struct {
	n       *Node
	wrapped bool // found after the search went round past the last node
	// group is, for a spread request, the pods of the group on the node's
	// value of the spread label, or unlabelled if it has none: such nodes
	// only when no labelled node fits. 0 without spread.
	group int
	score float64 // how allocated the node would be with the pod
}

const unlabelled = math.MaxInt

func (p *plan) candidate(n *Node, wrapped bool) candidate {
	x := candidate{n: n, wrapped: wrapped, score: p.score(n)}
	if p.spread != "" {
		if v, ok := n.Labels[p.spread]; !ok {
			x.group = unlabelled
		} else if len(p.domain) > 0 {
			x.group = p.domain[v]
		}
	}
	return x
}

// better reports whether a, found after b, ranks before it.
func (p *plan) better(a, b *candidate) bool {
	if a.group != b.group {
		return a.group < b.group
	}
	if a.score != b.score {
		return a.score < b.score != p.binpack
	}
	if a.n.Used.Pods != b.n.Used.Pods {
		return a.n.Used.Pods < b.n.Used.Pods != p.binpack
	}
	if p.byName {
		// Nodes are in name order, so of two found in one pass over them
		// the one found first has the lesser name; one found after the
		// search went round has a lesser name than one found before.
		return a.wrapped && !b.wrapped
	}
	return a.n.Name < b.n.Name
}

// enough reports whether a search that has found enough nodes that fit,
// with best the best of them, may stop there. Without spread it may: a sample
// ranks by score as well as all nodes would, only over fewer of them. With
// spread, the value of the label with the fewest pods of the group ranks
// first, whatever the score, and a sample can miss it entirely: nodes are
// in name order, which often follows zones (a-1, a-2, ..., b-1, ...), and
// values with no pods of the group are not even in the domains counted.
// So a spread search stops only once its best node is labelled with a
// value holding none of the group, which nothing can rank before;
// otherwise it looks at every node.
func (p *plan) enough(best *candidate) bool {
	return p.spread == "" || best.group == 0
}

// stay checks that a placed pod still fits its node: that the node matches
// its selector and tolerations, and has room for what its request grew by.
// The node's readiness and cordon do not matter: the pod is there already.
func stay(req *Request, n *Node) error {
	hint := "change spec.placement back or delete the pod to place it elsewhere"
	why := selectorMismatchText(sortedSelector(req.Placement.NodeSelector), n)
	if why == "" {
		for _, t := range n.Taints {
			if !tolerated(req.Placement.Tolerations, t) {
				why = "taint " + t.String() + " not tolerated"
				hint = "tolerate it in spec.placement.tolerations or delete the pod to place it elsewhere"
				break
			}
		}
	}
	if why != "" {
		return fmt.Errorf("node %s no longer matches the pod: %s; it stays on %s: %s", n.Name, why, n.Name, hint)
	}
	const lower = "lower the request or delete the pod to place it elsewhere"
	if req.MemoryBytes > req.Held.MemoryBytes {
		if free := n.Capacity.MemoryBytes - n.Used.MemoryBytes + req.Held.MemoryBytes; req.MemoryBytes > free {
			return fmt.Errorf("pod needs %s memory but node %s has %s free; it stays on %s: %s",
				formatBytes(req.MemoryBytes), n.Name, formatBytes(free), n.Name, lower)
		}
	}
	if req.CPUMilli > req.Held.CPUMilli {
		if free := n.Capacity.CPUMilli - n.Used.CPUMilli + req.Held.CPUMilli; req.CPUMilli > free {
			return fmt.Errorf("pod needs %s cpu but node %s has %s free; it stays on %s: %s",
				formatCPU(req.CPUMilli), n.Name, formatCPU(free), n.Name, lower)
		}
	}
	return nil
}
