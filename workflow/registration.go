package workflow

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/ownership"
)

// Registration is one controller's registration: its name and spec (the
// Controller object's spec), and whether it is built into the server.
type Registration struct {
	Name    string
	Builtin bool
	Spec    api.ControllerSpec
}

// Compiled is the verified whole of all registrations: the graphs the
// engine runs and the field owners the API enforces.
type Compiled struct {
	Registrations []Registration // sorted by name
	Graphs        []*Graph
	Owners        *ownership.Registry
}

// Targets are the built-in targets of every kind that has workflows.
func Targets() []Target {
	return append(append(PodTargets(), NodeTargets()...), PinnedDeploymentTargets()...)
}

// Compile verifies registrations together, like `systemd-analyze verify`,
// and returns every problem at once, each naming the steps and fields
// involved: ordering cycles, unknown targets, steps nothing pulls in, a
// field with two owners, read/write cycles between controllers, and steps
// that read a field another controller's step writes without being ordered
// after that step.
//
// Registrations are added in the order given, so when two conflict the
// later one is refused and the earlier one named: pass the incumbents first.
func Compile(regs []Registration) (*Compiled, error) {
	var problems []string
	owners, _ := ownership.New()
	var steps []Step
	for _, r := range regs {
		ctl, err := ownershipOf(r)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		next, err := owners.With(ctl)
		if err != nil {
			var re *ownership.RejectedError
			if errors.As(err, &re) {
				for _, p := range re.Problems {
					problems = append(problems, p.Error())
				}
			} else {
				problems = append(problems, err.Error())
			}
			continue
		}
		owners = next
		ss, err := stepsOf(r, ctl)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		steps = append(steps, ss...)
	}
	var graphs []*Graph
	kinds := map[string]bool{}
	phases := map[string]bool{} // kind/phase pairs with targets
	for _, t := range Targets() {
		kinds[t.Kind] = true
		phases[t.Kind+"/"+t.Phase] = true
	}
	for _, s := range steps {
		if !kinds[s.Kind] {
			problems = append(problems, fmt.Sprintf("step %s of controller:%s: kind %s has no workflow targets", s.Name, s.Controller, s.Kind))
		}
	}
	for _, kind := range sortedSet(kinds) {
		for _, phase := range []string{Up, Down} {
			if !phases[kind+"/"+phase] {
				continue
			}
			g, err := BuildGraph(kind, phase, Targets(), steps)
			if err != nil {
				var ve *VerifyError
				if errors.As(err, &ve) {
					problems = append(problems, ve.Problems...)
				} else {
					problems = append(problems, err.Error())
				}
				continue
			}
			graphs = append(graphs, g)
			problems = append(problems, unorderedReads(g, steps, owners)...)
		}
	}
	if len(problems) > 0 {
		return nil, &VerifyError{Problems: dedupe(problems)}
	}
	sorted := append([]Registration(nil), regs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	return &Compiled{Registrations: sorted, Graphs: graphs, Owners: owners}, nil
}

func ownershipOf(r Registration) (ownership.Controller, error) {
	c := ownership.Controller{Name: r.Name}
	for _, f := range r.Spec.Owns {
		pf, err := ownership.ParseField(string(f))
		if err != nil {
			return c, fmt.Errorf("controller:%s: owns %s: %v", r.Name, f, err)
		}
		c.Owns = append(c.Owns, pf)
	}
	for _, f := range r.Spec.Reads {
		pf, err := ownership.ParseField(string(f))
		if err != nil {
			return c, fmt.Errorf("controller:%s: reads %s: %v", r.Name, f, err)
		}
		c.Reads = append(c.Reads, pf)
	}
	return c, nil
}

func stepsOf(r Registration, c ownership.Controller) ([]Step, error) {
	var out []Step
	for _, s := range r.Spec.Steps {
		st := Step{Name: string(s.Name), Controller: r.Name, Kind: s.Kind, Phase: s.Phase, Where: s.Where,
			Before: s.Before, After: s.After, Requires: s.Requires, Wants: s.Wants,
			RequiredBy: s.RequiredBy, WantedBy: s.WantedBy, Timeout: s.Timeout.Value(), Retry: s.Retry}
		if st.Phase == "" {
			st.Phase = Up
		}
		if st.Where == "" {
			st.Where = "cluster"
		}
		for _, f := range c.Reads {
			if f.Kind == s.Kind {
				st.Reads = append(st.Reads, f.Path)
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// unorderedReads finds steps that read a field another controller's step
// of the same graph writes, without being ordered after that step.
func unorderedReads(g *Graph, steps []Step, owners *ownership.Registry) []string {
	var problems []string
	for i := range steps {
		reader := &steps[i]
		if reader.Kind != g.Kind || reader.Phase != g.Phase {
			continue
		}
		for _, p := range reader.Reads {
			f := ownership.Field{Kind: g.Kind, Path: p}
			for _, w := range owners.Writers(f) {
				if w == reader.Controller {
					continue
				}
				for j := range steps {
					writer := &steps[j]
					if writer.Controller != w || writer.Kind != g.Kind || writer.Phase != g.Phase {
						continue
					}
					if !g.OrderedAfter(reader.Name, writer.Name) {
						problems = append(problems, fmt.Sprintf(
							"step %s of controller:%s reads %s, which step %s of controller:%s writes, but is not ordered after it: add after: [%s] (or after a target that follows it)",
							reader.Name, reader.Controller, f, writer.Name, w, writer.Name))
					}
				}
			}
		}
	}
	return problems
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// StepsOf lists the names of a registration's steps, for messages.
func StepsOf(r Registration) string {
	names := make([]string, len(r.Spec.Steps))
	for i, s := range r.Spec.Steps {
		names[i] = string(s.Name)
	}
	return strings.Join(names, ", ")
}
