package api

import (
	"fmt"
	"sort"

	"skiff.dev/skiff/api/labels"
)

// Placement is what a pod asks of its node, read by the scheduler:
//
//	placement:
//	  nodeSelector: {region: home}   # every label must match the node's
//	  tolerations:                   # taints of nodes this pod accepts
//	    - {key: dedicated, value: gpu, effect: NoSchedule}
//	  score: spread                  # spread (default: least allocated) or binpack
//	  spread: zone                   # spread replicas over this node label's values
//
// A placed pod keeps its node when these change; the scheduler then only
// reports a node that no longer matches.
type Placement struct {
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	Tolerations  []Toleration      `json:"tolerations,omitempty"`
	Score        string            `json:"score,omitempty"`
	Spread       string            `json:"spread,omitempty"`
}

// Scores: how the scheduler ranks the nodes a pod fits on.
const (
	ScoreSpread  = "spread"  // least allocated first (the default)
	ScoreBinpack = "binpack" // most allocated first
)

// Toleration lets a pod onto nodes with a matching taint. An empty value
// or effect matches any.
type Toleration struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect,omitempty"`
}

// Tolerates reports whether the toleration matches taint t.
func (tl Toleration) Tolerates(t Taint) bool {
	return tl.Key == t.Key && (tl.Value == "" || tl.Value == t.Value) && (tl.Effect == "" || tl.Effect == t.Effect)
}

// Validate checks a placement; paths are relative to it.
func (p *Placement) Validate() error {
	keys := make([]string, 0, len(p.NodeSelector))
	for k := range p.NodeSelector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" {
			return &FieldError{Path: "nodeSelector", Reason: `a key is empty: name the node label to match, like "region: home"`}
		}
		path := joinKey("nodeSelector", k)
		if err := labels.ValidateKey(k); err != nil {
			return &FieldError{Path: path, Reason: err.Error()}
		}
		if err := labels.ValidateValue(p.NodeSelector[k]); err != nil {
			return &FieldError{Path: path, Reason: err.Error()}
		}
	}
	for i, t := range p.Tolerations {
		path := fmt.Sprintf("tolerations[%d]", i)
		if t.Key == "" {
			return &FieldError{Path: path + ".key", Reason: "missing: name the taint's key"}
		}
		if err := labels.ValidateKey(t.Key); err != nil {
			return &FieldError{Path: path + ".key", Reason: err.Error()}
		}
		if err := labels.ValidateValue(t.Value); err != nil {
			return &FieldError{Path: path + ".value", Reason: err.Error()}
		}
		if t.Effect != "" {
			if err := oneOf(t.Effect, NoSchedule, NoExecute); err != nil {
				return &FieldError{Path: path + ".effect", Reason: err.Error() + " (or leave it out to match both)"}
			}
		}
	}
	if p.Score != "" {
		if err := oneOf(p.Score, ScoreSpread, ScoreBinpack); err != nil {
			return &FieldError{Path: "score", Reason: err.Error()}
		}
	}
	if p.Spread != "" {
		if err := labels.ValidateKey(p.Spread); err != nil {
			return &FieldError{Path: "spread", Reason: err.Error() + " (spread names a node label, like zone)"}
		}
	}
	return nil
}
