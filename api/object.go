package api

import (
	"fmt"
	"strings"
	"time"
)

// DefaultNamespace is used for namespaced objects that do not name one.
const DefaultNamespace = "default"

// Object is the envelope of every skiff object, in its generic form.
//
// Spec is operator intent; Status is what controllers and nodes observed.
// Meta is maintained by the store and ignored on input.
type Object struct {
	Kind      string            `json:"kind"`
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Spec      map[string]any    `json:"spec,omitempty"`
	Status    map[string]any    `json:"status,omitempty"`
	Meta      Meta              `json:"meta"`
}

// Meta is the part of an object the store writes.
type Meta struct {
	// Revision counts every write of this object, starting at 1, and keeps
	// counting across a delete and re-create so that history stays one line.
	Revision int64 `json:"revision"`
	// Generation counts changes of the spec (the object's intent).
	Generation int64     `json:"generation"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	// Owner is the object that created this one ("pinneddeployment/web"),
	// empty for objects operators made.
	Owner string `json:"owner,omitempty"`
	// Deleting is set when deletion was requested: the object's down
	// workflow (stopping → stopped) runs, and then it is removed.
	Deleting *time.Time `json:"deleting,omitempty"`
}

// Ref names one object.
type Ref struct {
	Kind      string // canonical kind name, e.g. "Pod"
	Namespace string // empty for cluster-scoped kinds
	Name      string
}

// Ref returns the object's reference.
func (o *Object) Ref() Ref { return Ref{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name} }

// String renders a reference as users type it: "pod/web", with the namespace
// appended when it is not the default one.
func (r Ref) String() string {
	s := strings.ToLower(r.Kind) + "/" + r.Name
	if r.Namespace != "" && r.Namespace != DefaultNamespace {
		s += " (namespace " + r.Namespace + ")"
	}
	return s
}

// Body returns the object's labels, spec and status as one JSON tree
// ({"labels": ..., "spec": ..., "status": ...}, empty parts left out): the
// tree field paths, ownership and diffs work on. It shares spec and status
// with o.
func (o *Object) Body() map[string]any {
	b := map[string]any{}
	if len(o.Labels) > 0 {
		l := make(map[string]any, len(o.Labels))
		for k, v := range o.Labels {
			l[k] = v
		}
		b["labels"] = l
	}
	if len(o.Spec) > 0 {
		b["spec"] = o.Spec
	}
	if len(o.Status) > 0 {
		b["status"] = o.Status
	}
	return b
}

// SetBody sets labels, spec and status from a tree as Body returns it.
func (o *Object) SetBody(b map[string]any) {
	o.Labels, o.Spec, o.Status = nil, nil, nil
	if l, ok := b["labels"].(map[string]any); ok && len(l) > 0 {
		o.Labels = make(map[string]string, len(l))
		for k, v := range l {
			o.Labels[k], _ = v.(string)
		}
	}
	if sp, ok := b["spec"].(map[string]any); ok && len(sp) > 0 {
		o.Spec = sp
	}
	if st, ok := b["status"].(map[string]any); ok && len(st) > 0 {
		o.Status = st
	}
}

// DeepCopy returns a copy of o that shares no maps or slices with it.
func (o *Object) DeepCopy() Object {
	c := *o
	if o.Labels != nil {
		c.Labels = make(map[string]string, len(o.Labels))
		for k, v := range o.Labels {
			c.Labels[k] = v
		}
	}
	c.Spec = copyTree(o.Spec)
	c.Status = copyTree(o.Status)
	return c
}

func copyTree(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = copyValue(v)
	}
	return c
}

func copyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return copyTree(v)
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = copyValue(e)
		}
		return c
	default:
		return v
	}
}

// ParseRef parses "KIND/NAME" (kind in any accepted spelling) in namespace ns.
// The namespace is dropped for cluster-scoped kinds.
func ParseRef(s, ns string) (Ref, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok || kind == "" || name == "" {
		return Ref{}, fmt.Errorf("%q is not KIND/NAME (for example pod/web)", s)
	}
	k, err := LookupKind(kind)
	if err != nil {
		return Ref{}, err
	}
	if err := ValidateName(name); err != nil {
		return Ref{}, fmt.Errorf("%s: name %w", s, err)
	}
	r := Ref{Kind: k.Name, Name: name}
	if k.Namespaced {
		if ns == "" {
			ns = DefaultNamespace
		}
		if err := ValidateName(ns); err != nil {
			return Ref{}, fmt.Errorf("namespace %w", err)
		}
		r.Namespace = ns
	}
	return r, nil
}
