package api

import "fmt"

// NodeSpec is what operators decide about a node. What the node reports
// about itself (address, capacity) is status, written by its agent.
type NodeSpec struct {
	// Unschedulable keeps new pods off the node (cordon).
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Drain moves every pod off the node (`skiff node drain`): each is
	// stopped there, then placed elsewhere. It implies Unschedulable.
	Drain  bool    `json:"drain,omitempty"`
	Taints []Taint `json:"taints,omitempty"`
}

// Taint repels pods that do not tolerate it.
type Taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"` // NoSchedule or NoExecute
}

// Taint effects.
const (
	NoSchedule = "NoSchedule" // keeps pods that do not tolerate it off the node
	NoExecute  = "NoExecute"  // the same, and pods already there should not run there either
)

// String is the taint as messages show it: key=value:Effect, or key:Effect.
func (t Taint) String() string {
	if t.Value == "" {
		return t.Key + ":" + t.Effect
	}
	return t.Key + "=" + t.Value + ":" + t.Effect
}

func (n *NodeSpec) Validate() error {
	for i, t := range n.Taints {
		path := fmt.Sprintf("taints[%d]", i)
		if t.Key == "" {
			return &FieldError{Path: path + ".key", Reason: "missing"}
		}
		if err := ValidateLabels(map[string]string{t.Key: t.Value}); err != nil {
			return &FieldError{Path: path, Reason: err.(*FieldError).Reason}
		}
		if err := oneOf(t.Effect, NoSchedule, NoExecute); err != nil {
			return &FieldError{Path: path + ".effect", Reason: err.Error()}
		}
	}
	return nil
}
