package workflow

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"skiff.dev/skiff/api/fieldpath"
)

// Phases.
const (
	Up   = "up"
	Down = "down"
)

// Step is one unit of work a controller does for an object.
type Step struct {
	Name       string
	Controller string // controller name, without "controller:"
	Kind       string // object kind, e.g. "Pod"
	Phase      string // Up or Down
	Where      string // "cluster" or "node"
	Before     []string
	After      []string
	Requires   []string
	Wants      []string
	RequiredBy []string
	WantedBy   []string
	Timeout    time.Duration // 0: no timeout
	Retry      int           // extra attempts after a failure or timeout
	// Reads are the object fields the step depends on. A step is skipped
	// when they are unchanged since its last success; a step with no
	// declared reads runs in every run.
	Reads []fieldpath.Path
}

// Target is a named sync point of a kind's workflow.
type Target struct {
	Name     string
	Kind     string
	Phase    string
	After    []string
	Requires []string
}

// PodTargets are the built-in targets of pods:
//
//	up:   admitted → scheduled → storage, network → started → running
//	down: stopping → stopped
func PodTargets() []Target {
	t := func(name, phase string, deps ...string) Target {
		return Target{Name: name, Kind: "Pod", Phase: phase, After: deps, Requires: deps}
	}
	return []Target{
		t("admitted", Up),
		t("scheduled", Up, "admitted"),
		t("storage", Up, "scheduled"),
		t("network", Up, "scheduled"),
		t("started", Up, "storage", "network"),
		t("running", Up, "started"),
		t("stopping", Down),
		t("stopped", Down, "stopping"),
	}
}

// NodeTargets are the built-in targets of nodes:
//
//	up: addressed → ready
//
// A node is addressed once it has its pods' /64 and ready once its
// network is programmed (forwarding, egress, routes to the other nodes).
// Nodes have no down phase: forgetting one deletes it at once.
func NodeTargets() []Target {
	return []Target{
		{Name: "addressed", Kind: "Node", Phase: Up},
		{Name: "ready", Kind: "Node", Phase: Up, After: []string{"addressed"}, Requires: []string{"addressed"}},
	}
}

// Goal returns the goal target of a kind's phase: its built-in last target.
func Goal(kind, phase string) string {
	switch {
	case kind == "Node":
		return "ready"
	case kind == "PinnedDeployment" && phase == Up:
		return "rolled-out"
	case phase == Down:
		return "stopped"
	}
	return "running"
}

// unit is a step or a target inside a graph.
type unit struct {
	name     string
	step     *Step // nil for targets
	after    []string
	requires []string
	wants    []string
}

// Graph is the verified dependency graph of one kind and phase. It is
// immutable once built.
type Graph struct {
	Kind, Phase string
	units       map[string]*unit
	order       []string // a topological order by ordering edges
}

// VerifyError lists every problem found in a registration, one per line.
type VerifyError struct{ Problems []string }

func (e *VerifyError) Error() string { return strings.Join(e.Problems, "; ") }

// ErrInvalidGraph is wrapped by VerifyError.
var ErrInvalidGraph = errors.New("invalid workflow")

func (e *VerifyError) Is(t error) bool { return t == ErrInvalidGraph }

// BuildGraph builds and verifies the graph of one kind and phase from its
// targets and steps (steps of other kinds or phases are ignored). It
// refuses, naming the units involved: duplicate names, references to unknown
// units, ordering cycles, and steps nothing pulls in.
func BuildGraph(kind, phase string, targets []Target, steps []Step) (*Graph, error) {
	g := &Graph{Kind: kind, Phase: phase, units: map[string]*unit{}}
	var problems []string
	for _, t := range targets {
		if t.Kind != kind || t.Phase != phase {
			continue
		}
		if _, dup := g.units[t.Name]; dup {
			problems = append(problems, fmt.Sprintf("target %s is defined twice", t.Name))
			continue
		}
		g.units[t.Name] = &unit{name: t.Name, after: slices.Clone(t.After), requires: slices.Clone(t.Requires)}
	}
	for i := range steps {
		s := &steps[i]
		if s.Kind != kind || s.Phase != phase {
			continue
		}
		if u, dup := g.units[s.Name]; dup {
			what := "target"
			if u.step != nil {
				what = "step of controller:" + u.step.Controller
			}
			problems = append(problems, fmt.Sprintf("step %s of controller:%s: the name is already a %s", s.Name, s.Controller, what))
			continue
		}
		g.units[s.Name] = &unit{name: s.Name, step: s, after: slices.Clone(s.After),
			requires: slices.Clone(s.Requires), wants: slices.Clone(s.Wants)}
	}
	// Reverse forms become forward edges of the other unit; references to
	// unknown units are errors.
	names := g.sortedNames()
	for _, n := range names {
		u := g.units[n]
		if u.step == nil {
			continue
		}
		s := u.step
		check := func(rel string, refs []string) {
			for _, r := range refs {
				if _, ok := g.units[r]; !ok {
					problems = append(problems, fmt.Sprintf("step %s of controller:%s: %s %s: no such target or step for %s (%s phase)%s",
						s.Name, s.Controller, rel, r, kind, phase, g.suggest(r)))
				}
			}
		}
		check("before", s.Before)
		check("after", s.After)
		check("requires", s.Requires)
		check("wants", s.Wants)
		check("requiredBy", s.RequiredBy)
		check("wantedBy", s.WantedBy)
		for _, r := range s.Before {
			if o, ok := g.units[r]; ok {
				o.after = append(o.after, n)
			}
		}
		for _, r := range s.RequiredBy {
			if o, ok := g.units[r]; ok {
				o.requires = append(o.requires, n)
			}
		}
		for _, r := range s.WantedBy {
			if o, ok := g.units[r]; ok {
				o.wants = append(o.wants, n)
			}
		}
	}
	for _, u := range g.units {
		u.after = dedupe(filterKnown(u.after, g.units))
		u.requires = dedupe(filterKnown(u.requires, g.units))
		u.wants = dedupe(filterKnown(u.wants, g.units))
	}
	if cycle := g.findCycle(); cycle != nil {
		problems = append(problems, "ordering cycle: "+g.describeCycle(cycle))
	} else {
		g.order = g.topo()
	}
	// A step nothing pulls in never runs: almost always a forgotten
	// requiredBy or wantedBy.
	pulled := map[string]bool{}
	for _, u := range g.units {
		for _, r := range u.requires {
			pulled[r] = true
		}
		for _, r := range u.wants {
			pulled[r] = true
		}
	}
	for _, n := range names {
		if u := g.units[n]; u.step != nil && !pulled[n] {
			problems = append(problems, fmt.Sprintf("step %s of controller:%s is pulled in by nothing and would never run: add requiredBy or wantedBy (for example requiredBy: [%s])",
				n, u.step.Controller, g.nearestTarget(u)))
		}
	}
	if len(problems) > 0 {
		return nil, &VerifyError{Problems: problems}
	}
	return g, nil
}

func filterKnown(refs []string, units map[string]*unit) []string {
	out := refs[:0]
	for _, r := range refs {
		if _, ok := units[r]; ok {
			out = append(out, r)
		}
	}
	return out
}

func dedupe(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

func (g *Graph) sortedNames() []string {
	names := make([]string, 0, len(g.units))
	for n := range g.units {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// nearestTarget suggests the target a step is ordered before.
func (g *Graph) nearestTarget(u *unit) string {
	for _, b := range u.step.Before {
		if o, ok := g.units[b]; ok && o.step == nil {
			return b
		}
	}
	return Goal(g.Kind, g.Phase)
}

func (g *Graph) suggest(name string) string {
	var targets []string
	for n, u := range g.units {
		if u.step == nil {
			targets = append(targets, n)
		}
	}
	sort.Strings(targets)
	if len(targets) == 0 {
		return fmt.Sprintf(" (%s has no targets in the %s phase)", g.Kind, g.Phase)
	}
	return " (targets: " + strings.Join(targets, ", ") + ")"
}

// findCycle returns one ordering cycle as a list of unit names, or nil.
func (g *Graph) findCycle() []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found []string
	var visit func(n string) bool
	visit = func(n string) bool {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range g.units[n].after {
			switch color[d] {
			case grey:
				i := slices.Index(stack, d)
				found = append(slices.Clone(stack[i:]), d)
				return true
			case white:
				if visit(d) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return false
	}
	for _, n := range g.sortedNames() {
		if color[n] == white && visit(n) {
			return found
		}
	}
	return nil
}

// describeCycle renders a cycle of "after" edges in execution order:
// "a → b → c → a", each unit with its controller.
func (g *Graph) describeCycle(c []string) string {
	parts := make([]string, len(c))
	for i := range c {
		n := c[len(c)-1-i]
		if u := g.units[n]; u.step != nil {
			parts[i] = fmt.Sprintf("%s (controller:%s)", n, u.step.Controller)
		} else {
			parts[i] = n + " (target)"
		}
	}
	return strings.Join(parts, " → ")
}

// topo returns a deterministic topological order of all units.
func (g *Graph) topo() []string {
	indeg := map[string]int{}
	next := map[string][]string{}
	for n, u := range g.units {
		indeg[n] += 0
		for _, d := range u.after {
			indeg[n]++
			next[d] = append(next[d], n)
		}
	}
	var ready, order []string
	for n, d := range indeg {
		if d == 0 {
			ready = append(ready, n)
		}
	}
	sort.Strings(ready)
	for len(ready) > 0 {
		n := ready[0]
		ready = ready[1:]
		order = append(order, n)
		var add []string
		for _, m := range next[n] {
			if indeg[m]--; indeg[m] == 0 {
				add = append(add, m)
			}
		}
		sort.Strings(add)
		ready = append(ready, add...)
		sort.Strings(ready)
	}
	return order
}

// Transaction returns the units the goal pulls in (through requires and
// wants, transitively), in topological order, and which of them are
// optional (pulled in only through wants).
func (g *Graph) Transaction(goal string) (units []string, optional map[string]bool, err error) {
	if _, ok := g.units[goal]; !ok {
		return nil, nil, fmt.Errorf("%s %s phase: no target %s", g.Kind, g.Phase, goal)
	}
	// The required closure first; then everything reachable through wants
	// (and the requirements of wanted units) that is not required.
	required := map[string]bool{goal: true}
	stack := []string{goal}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, r := range g.units[n].requires {
			if !required[r] {
				required[r] = true
				stack = append(stack, r)
			}
		}
	}
	wanted := map[string]bool{}
	for n := range required {
		stack = append(stack, n)
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		u := g.units[n]
		for _, w := range append(slices.Clone(u.wants), u.requires...) {
			if !required[w] && !wanted[w] {
				wanted[w] = true
				stack = append(stack, w)
			}
		}
	}
	optional = map[string]bool{}
	for _, n := range g.order {
		switch {
		case required[n]:
			units = append(units, n)
		case wanted[n]:
			units = append(units, n)
			optional[n] = true
		}
	}
	return units, optional, nil
}

// Step returns the step named n, or nil for targets and unknown names.
func (g *Graph) Step(n string) *Step {
	if u, ok := g.units[n]; ok {
		return u.step
	}
	return nil
}

// edges returns a unit's edges.
func (g *Graph) edges(n string) (after, requires, wants []string) {
	u := g.units[n]
	return u.after, u.requires, u.wants
}

// OrderedAfter reports whether unit a runs after unit b, through ordering
// edges, transitively.
func (g *Graph) OrderedAfter(a, b string) bool {
	seen := map[string]bool{}
	var walk func(n string) bool
	walk = func(n string) bool {
		for _, d := range g.units[n].after {
			if d == b {
				return true
			}
			if !seen[d] {
				seen[d] = true
				if walk(d) {
					return true
				}
			}
		}
		return false
	}
	_, ok := g.units[a]
	return ok && walk(a)
}
