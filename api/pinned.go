package api

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
)

// PinnedDeploymentSpec is a rollout the operator drives by hand, after
// Vallery Lancey's PinnedDeployment: two pinned versions of a pod template
// and the share of replicas on the next one.
//
//	replicas: 10
//	nextPercent: 30          # 3 pods of next, 7 of previous
//	rounding: nearest        # nearest (default), up or down
//	maxSurge: 1              # pods above replicas while moving (default 1)
//	templates:
//	  previous: {labels: {app: web, version: v1}, spec: {containers: [...]}}
//	  next:     {labels: {app: web, version: v2}, spec: {containers: [...]}}
//
// Nothing moves unless the operator moves nextPercent (or edits a
// template): rolling out is raising it, rolling back is lowering it, and
// the previous version's pods are still there to take the share back.
type PinnedDeploymentSpec struct {
	// Replicas is the number of pods across both versions.
	Replicas int `json:"replicas"`
	// NextPercent is the share of replicas on the next template, 0 to 100.
	NextPercent int `json:"nextPercent"`
	// Rounding turns the share into a pod count: nearest (default), up
	// or down.
	Rounding string `json:"rounding,omitempty"`
	// MaxSurge is how many pods above Replicas may exist while pods move
	// from one version to the other: the target version grows by at most
	// this many before the other shrinks. Default 1.
	MaxSurge  *int            `json:"maxSurge,omitempty"`
	Templates PinnedTemplates `json:"templates"`
}

// PinnedTemplates are the two pinned versions.
type PinnedTemplates struct {
	Previous PodTemplate `json:"previous"`
	Next     PodTemplate `json:"next"`
}

// PodTemplate is what a controller makes pods from: their labels and
// their full spec.
type PodTemplate struct {
	Labels map[string]string `json:"labels,omitempty"`
	Spec   PodSpec           `json:"spec"`
}

// Rounding modes of a PinnedDeployment's split.
const (
	RoundNearest = "nearest"
	RoundUp      = "up"
	RoundDown    = "down"
)

// Version names of a PinnedDeployment.
const (
	Previous = "previous"
	Next     = "next"
)

// DefaultMaxSurge is the surge of a PinnedDeployment that names none.
const DefaultMaxSurge = 1

func (p *PinnedDeploymentSpec) Default() {
	if p.Rounding == "" {
		p.Rounding = RoundNearest
	}
	if p.MaxSurge == nil {
		n := DefaultMaxSurge
		p.MaxSurge = &n
	}
	p.Templates.Previous.Spec.Default()
	p.Templates.Next.Spec.Default()
}

func (p *PinnedDeploymentSpec) Validate() error {
	if p.Replicas < 0 {
		return fieldErr("replicas", "%d is negative", p.Replicas)
	}
	if p.NextPercent < 0 || p.NextPercent > 100 {
		return fieldErr("nextPercent", "%d is not a percentage from 0 to 100", p.NextPercent)
	}
	if err := oneOf(p.Rounding, RoundNearest, RoundUp, RoundDown); err != nil {
		return &FieldError{Path: "rounding", Reason: err.Error()}
	}
	if p.MaxSurge != nil && *p.MaxSurge < 1 {
		return fieldErr("maxSurge", "%d: at least 1 pod must be able to start before another stops (grow before shrink)", *p.MaxSurge)
	}
	for _, v := range []struct {
		name string
		t    *PodTemplate
	}{{Previous, &p.Templates.Previous}, {Next, &p.Templates.Next}} {
		path := "templates." + v.name
		if len(v.t.Labels) == 0 {
			return fieldErr(path+".labels", "missing: a template's labels select its pods (for example app: web)")
		}
		if err := ValidateLabels(v.t.Labels); err != nil {
			var fe *FieldError
			errors.As(err, &fe)
			return &FieldError{Path: path + "." + fe.Path, Reason: fe.Reason}
		}
		if err := v.t.Spec.Validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return &FieldError{Path: join(path+".spec", fe.Path), Reason: fe.Reason}
			}
			return &FieldError{Path: path + ".spec", Reason: err.Error()}
		}
	}
	if len(p.Selector()) == 0 {
		return fieldErr("templates", "templates.previous.labels and templates.next.labels share no label: give both one that selects the pods of either version (for example app: web)")
	}
	return nil
}

// Selector is the labels both templates share: it selects the pods of
// either version, and a pod it selects that neither template made is a
// stray.
func (p *PinnedDeploymentSpec) Selector() map[string]string {
	out := map[string]string{}
	for k, v := range p.Templates.Previous.Labels {
		if p.Templates.Next.Labels[k] == v {
			out[k] = v
		}
	}
	return out
}

// SelectorString renders a selector as label selectors are written:
// "app=web,tier=front".
func SelectorString(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return strings.Join(parts, ",")
}

// Split returns how many replicas run the previous and the next template:
// next = round(replicas × nextPercent / 100) by the rounding mode, previous
// the rest.
func (p *PinnedDeploymentSpec) Split() (previous, next int) {
	exact := float64(p.Replicas) * float64(p.NextPercent) / 100
	switch p.Rounding {
	case RoundUp:
		next = int(math.Ceil(exact))
	case RoundDown:
		next = int(math.Floor(exact))
	default:
		next = int(math.Floor(exact + 0.5))
	}
	return p.Replicas - next, next
}

// Surge returns MaxSurge, or its default when unset.
func (p *PinnedDeploymentSpec) Surge() int {
	if p.MaxSurge == nil {
		return DefaultMaxSurge
	}
	return *p.MaxSurge
}

// Template returns the template of a version (Previous or Next).
func (p *PinnedDeploymentSpec) Template(version string) *PodTemplate {
	if version == Next {
		return &p.Templates.Next
	}
	return &p.Templates.Previous
}

// Images lists the images of both templates, sorted and without repeats:
// the images a node running either version keeps.
func (p *PinnedDeploymentSpec) Images() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range []*PodTemplate{&p.Templates.Previous, &p.Templates.Next} {
		for _, c := range t.Spec.Containers {
			if !seen[c.Image] {
				seen[c.Image] = true
				out = append(out, c.Image)
			}
		}
	}
	sort.Strings(out)
	return out
}

// PinnedOwner is the meta.owner of the pods a PinnedDeployment made:
// "pinneddeployment/web" (in the same namespace).
func PinnedOwner(name string) string { return "pinneddeployment/" + name }

// PinnedOwnerName returns the PinnedDeployment named by a pod's meta.owner.
func PinnedOwnerName(owner string) (string, bool) {
	name, ok := strings.CutPrefix(owner, "pinneddeployment/")
	return name, ok && name != ""
}

// PinnedStatus is what the pinned controller reports in a
// PinnedDeployment's status.
type PinnedStatus struct {
	// ObservedGeneration is the spec generation this status is for.
	ObservedGeneration int64         `json:"observedGeneration"`
	Previous           VersionStatus `json:"previous"`
	Next               VersionStatus `json:"next"`
	// State is progressing, complete or stalled.
	State string `json:"state"`
	// Reason says why a rollout stalled: the stuck pod and what its run
	// says.
	Reason string `json:"reason,omitempty"`
	// StalledPod is the pod a stalled rollout waits on.
	StalledPod string `json:"stalledPod,omitempty"`
	// Selector selects both versions' pods ("app=web").
	Selector string `json:"selector"`
	// Strays are pods the selector matches that this PinnedDeployment did
	// not make: reported, never deleted.
	Strays []string `json:"strays,omitempty"`
}

// VersionStatus counts one version's pods.
type VersionStatus struct {
	Desired int `json:"desired"`
	Current int `json:"current"`
	Ready   int `json:"ready"`
}

// Rollout states.
const (
	RolloutProgressing = "progressing"
	RolloutComplete    = "complete"
	RolloutStalled     = "stalled"
)

func (s PinnedStatus) String() string {
	return fmt.Sprintf("%s: previous %d/%d ready, next %d/%d ready", s.State, s.Previous.Ready, s.Previous.Desired, s.Next.Ready, s.Next.Desired)
}
