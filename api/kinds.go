package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// KindInfo describes one kind of object.
type KindInfo struct {
	Name       string   // canonical name, "Pod"
	Plural     string   // lower-case plural used in URLs, "pods"
	Short      []string // short names accepted by the CLI, "po"
	Namespaced bool
	newSpec    func() any // returns a pointer to a zero typed spec
}

// kinds is the fixed registry of built-in kinds. It is never mutated.
var kinds = []KindInfo{
	{Name: "Pod", Plural: "pods", Short: []string{"po"}, Namespaced: true, newSpec: func() any { return new(PodSpec) }},
	{Name: "Node", Plural: "nodes", Short: []string{"no"}, newSpec: func() any { return new(NodeSpec) }},
	{Name: "Grant", Plural: "grants", Short: []string{"gr"}, newSpec: func() any { return new(GrantSpec) }},
	{Name: "Controller", Plural: "controllers", Short: []string{"ctl", "ctrl"}, newSpec: func() any { return new(ControllerSpec) }},
	{Name: "PinnedDeployment", Plural: "pinneddeployments", Short: []string{"pd", "pds", "pinned"}, Namespaced: true, newSpec: func() any { return new(PinnedDeploymentSpec) }},
}

// Kinds lists the built-in kinds.
func Kinds() []KindInfo { return append([]KindInfo(nil), kinds...) }

// LookupKind accepts a kind in any spelling users type: "Pod", "pod", "pods", "po".
func LookupKind(s string) (KindInfo, error) {
	for _, k := range kinds { // the canonical spelling, as stored: no case folding
		if s == k.Name {
			return k, nil
		}
	}
	l := strings.ToLower(s)
	for _, k := range kinds {
		if l == strings.ToLower(k.Name) || l == k.Plural {
			return k, nil
		}
		for _, sh := range k.Short {
			if l == sh {
				return k, nil
			}
		}
	}
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = strings.ToLower(k.Name)
	}
	sort.Strings(names)
	return KindInfo{}, fmt.Errorf("%w: unknown kind %q (known: %s)", ErrInvalid, s, strings.Join(names, ", "))
}

// DecodeSpec strictly decodes the generic spec of kind k into its typed form,
// fills in defaults and validates it. Errors name the field path from the
// object root ("spec.containers[0].image: ...").
func (k KindInfo) DecodeSpec(spec map[string]any) (any, error) {
	typed := k.newSpec()
	var tree any
	if spec != nil {
		tree = spec
	}
	if p, ok := typed.(*PodSpec); ok {
		if err := decodePodSpec(tree, p); err != nil {
			return nil, within("spec", err)
		}
	} else if err := decodeInto(tree, reflect.ValueOf(typed).Elem(), "spec"); err != nil {
		return nil, err
	}
	if d, ok := typed.(defaulter); ok {
		d.Default()
	}
	if v, ok := typed.(validator); ok {
		if err := v.Validate(); err != nil {
			if fe, ok := err.(*FieldError); ok {
				return nil, &FieldError{Path: join("spec", fe.Path), Reason: fe.Reason}
			}
			return nil, &FieldError{Path: "spec", Reason: err.Error()}
		}
	}
	return typed, nil
}

// Normalize validates an object as submitted and returns its canonical form:
// kind spelled canonically, namespace defaulted (or refused for cluster-scoped
// kinds), spec decoded strictly and re-encoded with defaults. Meta and status
// are left as they are; callers decide what of them to keep.
func Normalize(o Object) (Object, error) {
	o, typed, err := ValidateObject(o)
	if err != nil {
		return Object{}, err
	}
	o.Spec, err = toTree(typed)
	if err != nil {
		return Object{}, err
	}
	return o, nil
}

// ValidateObject is Normalize for callers that need the typed spec rather
// than the canonical tree (admission): it refuses what Normalize refuses,
// and returns the object with kind and namespace canonical, its spec tree
// as given, and the typed spec with defaults filled in.
func ValidateObject(o Object) (Object, any, error) {
	k, err := LookupKind(o.Kind)
	if err != nil {
		if o.Kind == "" {
			return Object{}, nil, &FieldError{Path: "kind", Reason: "missing"}
		}
		return Object{}, nil, &FieldError{Path: "kind", Reason: strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")}
	}
	o.Kind = k.Name
	if o.Name == "" {
		return Object{}, nil, &FieldError{Path: "name", Reason: "missing"}
	}
	if err := ValidateName(o.Name); err != nil {
		return Object{}, nil, &FieldError{Path: "name", Reason: err.Error()}
	}
	if k.Namespaced {
		if o.Namespace == "" {
			o.Namespace = DefaultNamespace
		}
		if err := ValidateName(o.Namespace); err != nil {
			return Object{}, nil, &FieldError{Path: "namespace", Reason: err.Error()}
		}
	} else if o.Namespace != "" {
		return Object{}, nil, &FieldError{Path: "namespace", Reason: fmt.Sprintf("%s is cluster-scoped and has no namespace", k.Name)}
	}
	if err := ValidateLabels(o.Labels); err != nil {
		return Object{}, nil, err
	}
	typed, err := k.DecodeSpec(o.Spec)
	if err != nil {
		return Object{}, nil, err
	}
	return o, typed, nil
}

// DecodeSpecAs returns the typed spec of an object already in canonical form.
func DecodeSpecAs[T any](o *Object) (*T, error) {
	k, err := LookupKind(o.Kind)
	if err != nil {
		return nil, err
	}
	typed, err := k.DecodeSpec(o.Spec)
	if err != nil {
		return nil, err
	}
	t, ok := typed.(*T)
	if !ok {
		return nil, fmt.Errorf("%s spec is %T, not %T", k.Name, typed, t)
	}
	return t, nil
}

// toTree re-encodes a typed value as a generic JSON tree.
func toTree(v any) (map[string]any, error) {
	if p, ok := v.(*PodSpec); ok {
		if m, ok := p.tree(); ok {
			return m, nil // never empty: containers is always there
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}
