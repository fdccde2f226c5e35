// Package identity names who acts on skiff: operators (people and their
// scripts), controllers and nodes, and simulators of nodes. Every write is
// attributed to the identity that made it, the changer, and history is
// filtered by changer patterns.
//
// It is not authentication: the server decides who a request comes from and
// only then uses these names.
package identity

import (
	"fmt"
	"path"
	"strings"
)

// Kinds of identity.
const (
	Operator   = "operator"
	Controller = "controller"
	Node       = "node"
	// Simulator acts for many simulated (hollow) nodes at once, those
	// named NAME-DIGITS (see Simulates); it writes as each of them, so it
	// is never a changer itself.
	Simulator = "simulator"
)

// Identity is "KIND:NAME", e.g. operator:alice, controller:scheduler, node:n2.
type Identity struct {
	Kind string
	Name string
}

func (i Identity) String() string { return i.Kind + ":" + i.Name }

// IsZero reports whether i names no one.
func (i Identity) IsZero() bool { return i.Kind == "" && i.Name == "" }

// Parse parses "KIND:NAME".
func Parse(s string) (Identity, error) {
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return Identity{}, fmt.Errorf("%q is not an identity (KIND:NAME, like operator:alice)", s)
	}
	switch kind {
	case Operator, Controller, Node, Simulator:
	default:
		return Identity{}, fmt.Errorf("%q: identity kind must be operator, controller, node or simulator", s)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' || r == '@') {
			return Identity{}, fmt.Errorf("%q: names use a-z, 0-9 and - . _ @", s)
		}
	}
	if len(name) > 63 {
		return Identity{}, fmt.Errorf("%q: name longer than 63 characters", s)
	}
	return Identity{Kind: kind, Name: name}, nil
}

// SimulatedNode is the name of a simulator's i-th node: PREFIX-00001 for
// i = 1 (five digits at least).
func SimulatedNode(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// Simulates reports whether the simulator named prefix acts for the node
// named node: PREFIX-, then digits only. Two simulators' nodes never
// overlap: "sim" acts for sim-00001, not for sim-a-00001, which is
// simulator "sim-a"'s.
func Simulates(prefix, node string) bool {
	rest, ok := strings.CutPrefix(node, prefix+"-")
	if !ok || rest == "" || prefix == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return false
		}
	}
	return true
}

// Filter selects changers by glob patterns: a changer is kept when it matches
// at least one include pattern (or there are none) and no exclude pattern.
// Patterns use path.Match syntax over the whole changer string; "!" in front
// makes a pattern an exclusion: "operator:*", "!controller:scheduler".
type Filter struct {
	include, exclude []string
}

// ParseFilter compiles patterns and rejects malformed ones.
func ParseFilter(patterns []string) (Filter, error) {
	var f Filter
	for _, p := range patterns {
		for _, p := range strings.Split(p, ",") {
			p = strings.TrimSpace(p)
			neg := strings.HasPrefix(p, "!")
			p = strings.TrimPrefix(p, "!")
			if p == "" {
				return Filter{}, fmt.Errorf("empty changer pattern")
			}
			if _, err := path.Match(p, ""); err != nil {
				return Filter{}, fmt.Errorf("changer pattern %q: %v", p, err)
			}
			if !strings.Contains(p, ":") && !strings.ContainsAny(p, "*?[") {
				// A bare kind ("operator") means every identity of that kind.
				p += ":*"
			}
			if neg {
				f.exclude = append(f.exclude, p)
			} else {
				f.include = append(f.include, p)
			}
		}
	}
	return f, nil
}

// Match reports whether changer passes the filter.
func (f Filter) Match(changer string) bool {
	for _, p := range f.exclude {
		if ok, _ := path.Match(p, changer); ok {
			return false
		}
	}
	if len(f.include) == 0 {
		return true
	}
	for _, p := range f.include {
		if ok, _ := path.Match(p, changer); ok {
			return true
		}
	}
	return false
}

// Empty reports whether the filter keeps everything.
func (f Filter) Empty() bool { return len(f.include) == 0 && len(f.exclude) == 0 }
