package api

import (
	"fmt"
	"strings"
	"time"

	"skiff.dev/skiff/api/fieldpath"
)

// ControllerSpec registers a controller: the steps it runs in object
// workflows, the fields it owns (writes) and the fields it reads. The
// workflow engine verifies a registration before accepting it.
type ControllerSpec struct {
	Owns  []FieldRef `json:"owns,omitempty"`
	Reads []FieldRef `json:"reads,omitempty"`
	Steps []Step     `json:"steps,omitempty"`
}

// FieldRef names a field of a kind: "Pod:status.node".
type FieldRef string

func (f FieldRef) Check() error {
	kind, path, ok := strings.Cut(string(f), ":")
	if !ok || path == "" {
		return fmt.Errorf("%q is not KIND:FIELD (for example Pod:status.node)", f)
	}
	k, err := LookupKind(kind)
	if err != nil {
		return fmt.Errorf("%q: unknown kind %q", f, kind)
	}
	if k.Name != kind {
		return fmt.Errorf("%q: write the kind as %s", f, k.Name)
	}
	p, err := fieldpath.Parse(path)
	if err != nil {
		return fmt.Errorf("%q: %v", f, err)
	}
	if len(p) == 0 || p[0].Key != "spec" && p[0].Key != "status" && p[0].Key != "labels" {
		return fmt.Errorf("%q: fields start with spec, status or labels", f)
	}
	return nil
}

// Step is one unit of work in a kind's workflow, ordered like a systemd unit.
type Step struct {
	Name       Name     `json:"name"`
	Kind       string   `json:"kind"`
	Phase      string   `json:"phase,omitempty"` // up (default) or down
	Where      string   `json:"where,omitempty"` // cluster (default) or node
	Before     []string `json:"before,omitempty"`
	After      []string `json:"after,omitempty"`
	Requires   []string `json:"requires,omitempty"`
	Wants      []string `json:"wants,omitempty"`
	RequiredBy []string `json:"requiredBy,omitempty"`
	WantedBy   []string `json:"wantedBy,omitempty"`
	Timeout    Duration `json:"timeout,omitempty"`
	Retry      int      `json:"retry,omitempty"`
}

func (c *ControllerSpec) Default() {
	for i := range c.Steps {
		if c.Steps[i].Phase == "" {
			c.Steps[i].Phase = "up"
		}
		if c.Steps[i].Where == "" {
			c.Steps[i].Where = "cluster"
		}
	}
}

func (c *ControllerSpec) Validate() error {
	seen := map[Name]bool{}
	for i, s := range c.Steps {
		path := fmt.Sprintf("steps[%d]", i)
		if s.Name == "" {
			return &FieldError{Path: path + ".name", Reason: "missing"}
		}
		if seen[s.Name] {
			return &FieldError{Path: path + ".name", Reason: fmt.Sprintf("step %q is defined twice", s.Name)}
		}
		seen[s.Name] = true
		if k, err := LookupKind(s.Kind); err != nil || k.Name != s.Kind {
			return &FieldError{Path: path + ".kind", Reason: fmt.Sprintf("%q is not a kind (for example Pod)", s.Kind)}
		}
		if err := oneOf(s.Phase, "up", "down"); err != nil {
			return &FieldError{Path: path + ".phase", Reason: err.Error()}
		}
		if err := oneOf(s.Where, "cluster", "node"); err != nil {
			return &FieldError{Path: path + ".where", Reason: err.Error()}
		}
		if s.Retry < 0 {
			return &FieldError{Path: path + ".retry", Reason: "must not be negative"}
		}
	}
	return nil
}

// Duration is a duration as written in a manifest ("30s", "1m30s").
type Duration string

func (d Duration) Check() error {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return fmt.Errorf("%q is not a duration (like 30s or 2m)", string(d))
	}
	if v <= 0 {
		return fmt.Errorf("%q must be positive", string(d))
	}
	return nil
}

// Value returns the parsed duration; zero if unset.
func (d Duration) Value() time.Duration { v, _ := time.ParseDuration(string(d)); return v }
