package api

import (
	"fmt"
	"reflect"
	"unicode/utf8"
)

// Pod specs are decoded on every create, at admission and at placement, so
// PodSpec (and the envelope of a created object) has a decoder and an
// encoder written out by hand: decodeInto's results and errors, and
// encoding/json's tree, without reflection. TestPodSpecDecoder and
// FuzzPodSpecDecoder hold them to the reflective path.
//
// The decoders report errors with paths relative to the value they decode
// ("" for the value itself), and each caller puts its own field, key or
// index in front (within): the paths of the fields that decode fine are
// never built. Objects are decoded in map order; when one fails, it is
// decoded again in sorted key order, as decodeInto does, so that the error
// is the one decodeInto gives.

// decodePodSpec decodes a spec tree into p as decodeInto does.
func decodePodSpec(v any, p *PodSpec) error {
	return decodeStruct(v, podSpecType, func(k string, v any) (bool, error) {
		switch k {
		case "containers":
			return true, decodeList(v, &p.Containers, decodeContainer)
		case "restart":
			return true, decodeString(v, &p.Restart)
		case "failover":
			return true, decodeString(v, &p.Failover)
		case "privileges":
			return true, decodeList(v, &p.Privileges, decodeChecked[Privilege])
		case "placement":
			if v == nil {
				return true, nil
			}
			if p.Placement == nil {
				p.Placement = new(Placement)
			}
			return true, decodePlacement(v, p.Placement)
		case "keepImages":
			return true, decodeList(v, &p.KeepImages, decodeString)
		}
		return false, nil
	})
}

// decodeManifestDoc decodes an object's envelope as decodeInto does,
// except that spec, status and meta are the tree's own maps rather than
// copies: DecodeObject's tree is its own.
func decodeManifestDoc(v any, d *manifestDoc) error {
	return decodeStruct(v, manifestDocType, func(k string, v any) (bool, error) {
		switch k {
		case "kind":
			return true, decodeString(v, &d.Kind)
		case "name":
			return true, decodeString(v, &d.Name)
		case "namespace":
			return true, decodeString(v, &d.Namespace)
		case "labels":
			return true, decodeStringMap(v, &d.Labels)
		case "spec":
			return true, decodeTreeMap(v, &d.Spec)
		case "status":
			return true, decodeTreeMap(v, &d.Status)
		case "meta":
			return true, decodeTreeMap(v, &d.Meta)
		}
		return false, nil
	})
}

func decodeTreeMap(v any, out *map[string]any) error {
	if v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return typeErr("", "a map", v)
	}
	*out = m
	return nil
}

var (
	manifestDocType = reflect.TypeFor[manifestDoc]()
	podSpecType     = reflect.TypeFor[PodSpec]()
	containerType   = reflect.TypeFor[Container]()
	resourcesType   = reflect.TypeFor[Resources]()
	placementType   = reflect.TypeFor[Placement]()
	tolerationType  = reflect.TypeFor[Toleration]()
)

func decodeContainer(v any, c *Container) error {
	return decodeStruct(v, containerType, func(k string, v any) (bool, error) {
		switch k {
		case "name":
			return true, decodeChecked(v, &c.Name)
		case "image":
			return true, decodeString(v, &c.Image)
		case "command":
			return true, decodeList(v, &c.Command, decodeString)
		case "args":
			return true, decodeList(v, &c.Args, decodeString)
		case "env":
			return true, decodeStringMap(v, &c.Env)
		case "workingDir":
			return true, decodeString(v, &c.WorkingDir)
		case "user":
			return true, decodeString(v, &c.User)
		case "resources":
			return true, decodeResources(v, &c.Resources)
		case "after":
			return true, decodeList(v, &c.After, decodeChecked[Name])
		case "requires":
			return true, decodeList(v, &c.Requires, decodeChecked[Name])
		}
		return false, nil
	})
}

func decodeResources(v any, r *Resources) error {
	return decodeStruct(v, resourcesType, func(k string, v any) (bool, error) {
		switch k {
		case "cpu":
			return true, decodeChecked(v, &r.CPU)
		case "memory":
			return true, decodeChecked(v, &r.Memory)
		}
		return false, nil
	})
}

func decodePlacement(v any, p *Placement) error {
	return decodeStruct(v, placementType, func(k string, v any) (bool, error) {
		switch k {
		case "nodeSelector":
			return true, decodeStringMap(v, &p.NodeSelector)
		case "tolerations":
			return true, decodeList(v, &p.Tolerations, decodeToleration)
		case "score":
			return true, decodeString(v, &p.Score)
		case "spread":
			return true, decodeString(v, &p.Spread)
		}
		return false, nil
	})
}

func decodeToleration(v any, t *Toleration) error {
	return decodeStruct(v, tolerationType, func(k string, v any) (bool, error) {
		switch k {
		case "key":
			return true, decodeString(v, &t.Key)
		case "value":
			return true, decodeString(v, &t.Value)
		case "effect":
			return true, decodeString(v, &t.Effect)
		}
		return false, nil
	})
}

// decodeStruct decodes an object's members with field, which reports
// whether a key is one of the struct's fields and decodes it. t names the
// fields for the unknown-field error.
func decodeStruct(v any, t reflect.Type, field func(k string, v any) (bool, error)) error {
	if v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return typeErr("", "an object", v)
	}
	for k, fv := range m {
		if known, err := field(k, fv); !known || err != nil {
			return firstFieldErr(m, t, field)
		}
	}
	return nil
}

// firstFieldErr decodes an object's members again in sorted key order and
// returns the first error, the one decodeInto gives.
func firstFieldErr(m map[string]any, t reflect.Type, field func(k string, v any) (bool, error)) error {
	for _, k := range sortedKeys(m) {
		known, err := field(k, m[k])
		if !known {
			return fieldErr(joinKey("", k), "unknown field%s", suggest(k, structFields(t)))
		}
		if err != nil {
			return within(k, err)
		}
	}
	return nil // not reached: decoding in map order failed, and decoding is deterministic
}

// decodeList decodes a list, each element with elem.
func decodeList[T any](v any, out *[]T, elem func(any, *T) error) error {
	if v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		return typeErr("", "a list", v)
	}
	s := make([]T, len(l))
	for i, e := range l {
		if err := elem(e, &s[i]); err != nil {
			return within(fmt.Sprintf("[%d]", i), err)
		}
	}
	*out = s
	return nil
}

// decodeStringMap decodes an object of strings.
func decodeStringMap(v any, out *map[string]string) error {
	if v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return typeErr("", "a map", v)
	}
	res := make(map[string]string, len(m))
	for k, e := range m {
		var s string
		if err := decodeString(e, &s); err != nil {
			for _, k := range sortedKeys(m) { // the first error in key order
				if err := decodeString(m[k], &s); err != nil {
					return within(joinKey("", k), err)
				}
			}
		}
		res[k] = s
	}
	*out = res
	return nil
}

func decodeString(v any, s *string) error {
	switch v := v.(type) {
	case nil:
		return nil
	case string:
		*s = v
		return nil
	case float64:
		return fieldErr("", "expected a string, got number %s (quote it: \"%s\")", fmtNum(v), fmtNum(v))
	}
	return typeErr("", "a string", v)
}

// decodeChecked decodes a string type that checks its own syntax; as in
// decodeInto, an empty string is not checked.
func decodeChecked[T interface {
	~string
	Check() error
}](v any, out *T) error {
	var s string
	if err := decodeString(v, &s); err != nil {
		return err
	}
	*out = T(s)
	if s != "" {
		if err := (*out).Check(); err != nil {
			return &FieldError{Reason: err.Error()}
		}
	}
	return nil
}

// within puts seg (a field, a map key as joinKey writes it, or "[i]") in
// front of the path of err, a *FieldError the decoders made.
func within(seg string, err error) error {
	fe := err.(*FieldError)
	switch {
	case fe.Path == "":
		fe.Path = seg
	case fe.Path[0] == '[':
		fe.Path = seg + fe.Path
	default:
		fe.Path = join(seg, fe.Path)
	}
	return err
}

// tree encodes a pod spec as toTree does (encoding/json, then decoded into
// a generic tree). ok is false when a string is not valid UTF-8, which
// encoding/json rewrites; toTree then takes the long way.
func (p *PodSpec) tree() (m map[string]any, ok bool) {
	e := treeEncoder{ok: true}
	m = make(map[string]any, 6)
	if p.Containers == nil {
		m["containers"] = nil
	} else {
		l := make([]any, len(p.Containers))
		for i := range p.Containers {
			l[i] = e.container(&p.Containers[i])
		}
		m["containers"] = l
	}
	e.str(m, "restart", p.Restart)
	e.str(m, "failover", p.Failover)
	strs(&e, m, "privileges", p.Privileges)
	if p.Placement != nil {
		m["placement"] = e.placement(p.Placement)
	}
	strs(&e, m, "keepImages", p.KeepImages)
	return m, e.ok
}

// treeEncoder builds generic trees; ok turns false at the first string
// that is not valid UTF-8.
type treeEncoder struct{ ok bool }

func (e *treeEncoder) check(s string) string {
	if e.ok && !utf8.ValidString(s) {
		e.ok = false
	}
	return s
}

// str sets an omitempty string field.
func (e *treeEncoder) str(m map[string]any, k, s string) {
	if s != "" {
		m[k] = e.check(s)
	}
}

// strs sets an omitempty list of strings.
func strs[T ~string](e *treeEncoder, m map[string]any, k string, l []T) {
	if len(l) == 0 {
		return
	}
	out := make([]any, len(l))
	for i, s := range l {
		out[i] = e.check(string(s))
	}
	m[k] = out
}

// strMap sets an omitempty map of strings.
func (e *treeEncoder) strMap(m map[string]any, k string, sm map[string]string) {
	if len(sm) == 0 {
		return
	}
	out := make(map[string]any, len(sm))
	for key, s := range sm {
		out[e.check(key)] = e.check(s)
	}
	m[k] = out
}

func (e *treeEncoder) container(c *Container) map[string]any {
	m := make(map[string]any, 4)
	m["name"] = e.check(string(c.Name))
	m["image"] = e.check(c.Image)
	strs(e, m, "command", c.Command)
	strs(e, m, "args", c.Args)
	e.strMap(m, "env", c.Env)
	e.str(m, "workingDir", c.WorkingDir)
	e.str(m, "user", c.User)
	// encoding/json never omits a struct, omitempty or not.
	r := make(map[string]any, 2)
	e.str(r, "cpu", string(c.Resources.CPU))
	e.str(r, "memory", string(c.Resources.Memory))
	m["resources"] = r
	strs(e, m, "after", c.After)
	strs(e, m, "requires", c.Requires)
	return m
}

func (e *treeEncoder) placement(p *Placement) map[string]any {
	m := make(map[string]any, 4)
	e.strMap(m, "nodeSelector", p.NodeSelector)
	if len(p.Tolerations) > 0 {
		l := make([]any, len(p.Tolerations))
		for i, t := range p.Tolerations {
			tm := map[string]any{"key": e.check(t.Key)}
			e.str(tm, "value", t.Value)
			e.str(tm, "effect", t.Effect)
			l[i] = tm
		}
		m["tolerations"] = l
	}
	e.str(m, "score", p.Score)
	e.str(m, "spread", p.Spread)
	return m
}
