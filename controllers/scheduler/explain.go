package scheduler

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"skiff.dev/skiff/api/quantity"
)

// explain says why no node fits, grouping nodes by the first filter each
// fails, most nodes first:
//
//	no node fits: 3 nodes: insufficient memory (needs 2Gi, max free 1Gi); 2 nodes: region=cloud does not match home
func (p *plan) explain(nodes []Node) error {
	type class struct {
		count   int
		v       verdict
		maxFree int64 // of memory or cpu, for the insufficient classes
	}
	classes := map[string]*class{}
	for i := range nodes {
		n := &nodes[i]
		v := p.verdict(n)
		why := p.reason(n, v)
		c := classes[why]
		if c == nil {
			c = &class{v: v}
			classes[why] = c
		}
		c.count++
		switch v {
		case noMemory:
			c.maxFree = max(c.maxFree, n.Capacity.MemoryBytes-n.Used.MemoryBytes)
		case noCPU:
			c.maxFree = max(c.maxFree, n.Capacity.CPUMilli-n.Used.CPUMilli)
		}
	}
	type part struct {
		count int
		text  string
	}
	parts := make([]part, 0, len(classes))
	for why, c := range classes {
		switch c.v {
		case noMemory:
			why += fmt.Sprintf(" (needs %s, max free %s)", formatBytes(p.req.MemoryBytes), formatBytes(c.maxFree))
		case noCPU:
			why += fmt.Sprintf(" (needs %s, max free %s)", formatCPU(p.req.CPUMilli), formatCPU(c.maxFree))
		}
		noun := "nodes"
		if c.count == 1 {
			noun = "node"
		}
		parts = append(parts, part{c.count, fmt.Sprintf("%d %s: %s", c.count, noun, why)})
	}
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].count != parts[j].count {
			return parts[i].count > parts[j].count
		}
		return parts[i].text < parts[j].text
	})
	texts := make([]string, len(parts))
	for i, pt := range parts {
		texts[i] = pt.text
	}
	return fmt.Errorf("no node fits: %s", strings.Join(texts, "; "))
}

// reason is the text of a node's verdict, without the amounts that
// explain adds per class.
func (p *plan) reason(n *Node, v verdict) string {
	switch v {
	case evictedFrom:
		return "the pod was evicted from it"
	case notReady:
		return n.NotReady()
	case cordoned:
		return "cordoned"
	case selectorMismatch:
		return selectorMismatchText(p.selector, n)
	case taintNotTolerated:
		for _, t := range n.Taints {
			if !tolerated(p.req.Placement.Tolerations, t) {
				return "taint " + t.String() + " not tolerated"
			}
		}
	case tooManyPods:
		return fmt.Sprintf("too many pods (max %d)", n.Capacity.Pods)
	case noMemory:
		return "insufficient memory"
	case noCPU:
		return "insufficient cpu"
	}
	return "fits"
}

// selectorMismatchText names the first selector label, in key order, the
// node does not match, with the node's value and the wanted one; "" if
// the node matches them all.
func selectorMismatchText(sel []labelPair, n *Node) string {
	for _, s := range sel {
		got, ok := n.Labels[s.key]
		switch {
		case !ok:
			return fmt.Sprintf("no label %s (wants %s)", s.key, s.value)
		case got != s.value:
			return fmt.Sprintf("%s=%s does not match %s", s.key, got, s.value)
		}
	}
	return ""
}

// sortedSelector is a node selector as pairs, by key.
func sortedSelector(sel map[string]string) []labelPair {
	pairs := make([]labelPair, 0, len(sel))
	for k, v := range sel {
		pairs = append(pairs, labelPair{k, v})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].key < pairs[j].key })
	return pairs
}

// formatBytes prints a byte count for people: exact in the largest binary
// unit when it divides, else rounded down to a tenth ("1.9Gi"), so a free
// amount never looks larger than it is.
func formatBytes(b int64) string {
	if b <= 0 {
		return "0"
	}
	for i := 6; i >= 1; i-- {
		unit := int64(1) << (10 * i)
		if b < unit {
			continue
		}
		suffix := "KMGTPE"[i-1:i] + "i"
		if b%unit == 0 {
			return strconv.FormatInt(b/unit, 10) + suffix
		}
		return strconv.FormatFloat(math.Floor(float64(b)*10/float64(unit))/10, 'f', 1, 64) + suffix
	}
	return strconv.FormatInt(b, 10)
}

func formatCPU(milli int64) string { return quantity.FormatCPU(max(milli, 0)) }
