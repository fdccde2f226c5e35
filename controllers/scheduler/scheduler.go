// Package scheduler places pods on nodes: the built-in controller
// "scheduler", whose step schedule runs between admitted and scheduled and
// writes status.node.
//
// The core, Place, is pure: it takes a snapshot of nodes and of what is
// already placed on them and returns a decision or the reasons, per node,
// why none fits. This first version filters by readiness, cordon and
// resources and prefers the node with the most free memory; a pod keeps its
// node while that node exists.
package scheduler

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"skiff.dev/skiff/api/quantity"
)

// Node is what placement needs to know of a node.
type Node struct {
	Name          string
	Ready         bool
	NotReady      string // why not, grouped in explanations; default "not ready"
	Unschedulable bool
	CPUMilli      int64 // capacity
	MemoryBytes   int64
	UsedCPU       int64 // requested by pods placed there
	UsedMemory    int64
}

// Request is what a pod asks for.
type Request struct {
	CPUMilli    int64
	MemoryBytes int64
	Current     string // the node it is on, if any
}

// Place picks a node for a request, or explains why none fits, grouping
// nodes by reason: "2 nodes: not ready; 1 node: insufficient memory (needs
// 2Gi, max free 1Gi)".
func Place(req Request, nodes []Node) (string, error) {
	if req.Current != "" {
		for _, n := range nodes {
			if n.Name == req.Current {
				return n.Name, nil // a placed pod keeps its node and reservation
			}
		}
	}
	if len(nodes) == 0 {
		return "", fmt.Errorf("no nodes: start an agent (skiff token create --node NAME prints how)")
	}
	reasons := map[string]int{}
	var fit []Node
	var maxFreeMem, maxFreeCPU int64
	for _, n := range nodes {
		freeMem, freeCPU := n.MemoryBytes-n.UsedMemory, n.CPUMilli-n.UsedCPU
		switch {
		case !n.Ready:
			why := n.NotReady
			if why == "" {
				why = "not ready"
			}
			reasons[why]++
			continue
		case n.Unschedulable:
			reasons["cordoned"]++
			continue
		}
		maxFreeMem, maxFreeCPU = max(maxFreeMem, freeMem), max(maxFreeCPU, freeCPU)
		switch {
		case req.MemoryBytes > freeMem:
			reasons["insufficient memory"]++
		case req.CPUMilli > freeCPU:
			reasons["insufficient cpu"]++
		default:
			fit = append(fit, n)
		}
	}
	if len(fit) == 0 {
		var parts []string
		for r, count := range reasons {
			detail := ""
			switch r {
			case "insufficient memory":
				detail = fmt.Sprintf(" (needs %s, max free %s)", quantity.FormatBytes(req.MemoryBytes), quantity.FormatBytes(max(maxFreeMem, 0)))
			case "insufficient cpu":
				detail = fmt.Sprintf(" (needs %s, max free %s)", quantity.FormatCPU(req.CPUMilli), quantity.FormatCPU(max(maxFreeCPU, 0)))
			}
			noun := "nodes"
			if count == 1 {
				noun = "node"
			}
			parts = append(parts, fmt.Sprintf("%d %s: %s%s", count, noun, r, detail))
		}
		sort.Strings(parts)
		return "", fmt.Errorf("no node fits: %s", strings.Join(parts, "; "))
	}
	sort.Slice(fit, func(i, j int) bool {
		fi, fj := fit[i].MemoryBytes-fit[i].UsedMemory, fit[j].MemoryBytes-fit[j].UsedMemory
		if fi != fj {
			return fi > fj
		}
		return fit[i].Name < fit[j].Name
	})
	return fit[0].Name, nil
}

// HeartbeatTimeout is how old a node's heartbeat may be for it to be ready.
const HeartbeatTimeout = 40 * time.Second
