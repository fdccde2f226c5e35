// Package ownership enforces that every field of every kind has at most one
// owner controller.
//
// A controller registration declares the fields it owns (writes) and the
// fields it reads, as "Kind:path" pairs like Pod:status.node, where the path
// addresses an object's body: the JSON tree with keys "labels", "spec" and
// "status". A Registry holds the accepted registrations and refuses one that
// would give a field a second owner, that claims operator intent (labels or
// spec), or that closes a read→write→read loop between controllers, which
// could keep them rewriting each other's inputs forever.
//
// Writes are then checked against the registry (CheckWrite): a controller
// writes only what it owns, operators write only unowned labels and spec,
// and nodes write what the agent controller owns. Strip cuts an object body
// down to what one controller declared, so it sees only that.
//
// It is not authentication or authorization by grants: the server decides
// who a request comes from, and grants decide which objects an identity may
// touch at all; this package only decides which fields within an object.
package ownership

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"skiff.dev/skiff/api/fieldpath"
	"skiff.dev/skiff/api/identity"
)

// Errors matched with errors.Is.
var (
	// ErrNotOwner is matched by a refused write (*NotOwnerError).
	ErrNotOwner = errors.New("not the owner")
	// ErrRejected is matched by a refused registration (*RejectedError).
	ErrRejected = errors.New("registration rejected")
)

// AgentController is the controller name a node identity writes as: nodes
// run the agent's steps, so they may write what the agent owns.
const AgentController = "agent"

// Field is a field of a kind: Kind "Pod", Path status.node.
type Field struct {
	Kind string
	Path fieldpath.Path
}

// ParseField parses "Kind:path", e.g. "Pod:status.node".
func ParseField(s string) (Field, error) {
	kind, path, ok := strings.Cut(s, ":")
	if !ok {
		return Field{}, fmt.Errorf("field %q is not KIND:PATH (for example Pod:status.node)", s)
	}
	if err := checkKind(kind); err != nil {
		return Field{}, fmt.Errorf("field %q: %v", s, err)
	}
	if path == "" {
		return Field{}, fmt.Errorf("field %q: path missing after \":\" (for example Pod:status.node)", s)
	}
	p, err := fieldpath.Parse(path)
	if err != nil {
		return Field{}, fmt.Errorf("field %q: %v", s, err)
	}
	return Field{Kind: kind, Path: p}, nil
}

// checkKind accepts kind names as written in manifests: Pod, Node, Grant.
func checkKind(kind string) error {
	if kind == "" {
		return errors.New("kind missing before \":\"")
	}
	for i, c := range []byte(kind) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return fmt.Errorf("kind %q: kinds are letters and digits, like Pod", kind)
		}
	}
	return nil
}

// check reports why f cannot be used in a registration, or nil.
func (f Field) check() error {
	if err := checkKind(f.Kind); err != nil {
		return err
	}
	if len(f.Path) == 0 {
		return errors.New("path missing")
	}
	return nil
}

// String formats f as ParseField reads it: "Pod:status.node".
func (f Field) String() string { return f.Kind + ":" + f.Path.String() }

// Overlaps reports whether f and g share data: the same kind, and one path
// is a prefix of the other (Pod:status overlaps Pod:status.node;
// Pod:status.a does not overlap Pod:status.ab).
func (f Field) Overlaps(g Field) bool {
	return f.Kind == g.Kind && (f.Path.HasPrefix(g.Path) || g.Path.HasPrefix(f.Path))
}

// covers reports whether f contains the field at path p of kind: p is f's
// path or lies below it.
func (f Field) covers(kind string, p fieldpath.Path) bool {
	return f.Kind == kind && p.HasPrefix(f.Path)
}

// operatorIntent reports whether p lies under labels or spec, which only
// operators (or the controller managing an object) write.
func operatorIntent(p fieldpath.Path) bool {
	return len(p) > 0 && !p[0].IsIndex && (p[0].Key == "labels" || p[0].Key == "spec")
}

func underStatus(p fieldpath.Path) bool {
	return len(p) > 0 && !p[0].IsIndex && p[0].Key == "status"
}

// Controller is what a registration declares.
type Controller struct {
	Name  string // "scheduler"; its identity is controller:NAME
	Owns  []Field
	Reads []Field
}

func (c Controller) clone() Controller {
	c.Owns = cloneFields(c.Owns)
	c.Reads = cloneFields(c.Reads)
	return c
}

func cloneFields(fs []Field) []Field {
	if fs == nil {
		return nil
	}
	out := make([]Field, len(fs))
	for i, f := range fs {
		out[i] = Field{Kind: f.Kind, Path: slices.Clone(f.Path)}
	}
	return out
}

func ident(name string) string { return identity.Controller + ":" + name }

// owned is one owned field and its owner.
type owned struct {
	field Field
	owner string
}

// Registry is an immutable snapshot of registered controllers. The zero
// value, a nil *Registry and New() are empty registries.
type Registry struct {
	ctls  map[string]Controller
	names []string // sorted
	owned []owned  // sorted by field, then owner
}

// New returns a registry of ctls, verified and added in order as by With.
func New(ctls ...Controller) (*Registry, error) {
	r := &Registry{}
	for _, c := range ctls {
		var err error
		if r, err = r.With(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// build indexes a set of controllers; it does not verify them.
func build(ctls map[string]Controller) *Registry {
	r := &Registry{ctls: ctls}
	for name, c := range ctls {
		r.names = append(r.names, name)
		for _, f := range c.Owns {
			r.owned = append(r.owned, owned{f, name})
		}
	}
	slices.Sort(r.names)
	slices.SortFunc(r.owned, func(a, b owned) int {
		return cmpOr(strings.Compare(a.field.String(), b.field.String()), strings.Compare(a.owner, b.owner))
	})
	return r
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// RejectedError is a refused registration: every problem found, one line
// each. It matches ErrRejected and unwraps to its problems.
type RejectedError struct {
	Controller string
	Problems   []error
}

// Error lists the problems one per line, like errors.Join.
func (e *RejectedError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

func (e *RejectedError) Unwrap() []error { return e.Problems }

// Is reports whether t is ErrRejected.
func (e *RejectedError) Is(t error) bool { return t == ErrRejected }

// With returns a new registry with c added, or replacing an existing
// registration of the same name. It refuses c, returning a *RejectedError
// listing every problem, when c's name or fields are malformed, when c owns
// labels or spec (operator intent), when a field c owns overlaps a field
// another controller owns, or when c closes a read→write→read cycle: A
// writes a field B reads, ... , which A reads. A controller reading what it
// owns itself is fine. r is never modified.
func (r *Registry) With(c Controller) (*Registry, error) {
	c = c.clone()
	who := ident(c.Name)
	var problems []error
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Errorf(format, args...))
	}
	if c.Name == "" {
		bad("controller name missing")
	} else if _, err := identity.Parse(who); err != nil {
		bad("controller name %q: names use a-z, 0-9 and - . _ @, up to 63 characters", c.Name)
	}
	for _, list := range []struct {
		verb string
		fs   []Field
	}{{"own", c.Owns}, {"read", c.Reads}} {
		for i, f := range list.fs {
			if err := f.check(); err != nil {
				bad("%s may not %s %q (entry %d): %v", who, list.verb, f.String(), i, err)
			}
		}
	}
	var others []owned
	if r != nil {
		for _, o := range r.owned {
			if o.owner != c.Name {
				others = append(others, o)
			}
		}
	}
	for _, f := range c.Owns {
		if f.check() != nil {
			continue
		}
		if operatorIntent(f.Path) {
			bad("%s may not own %s: labels and spec are operator intent, written by operators; controllers own status fields", who, f)
			continue
		}
		for _, o := range others {
			if !f.Overlaps(o.field) {
				continue
			}
			if slices.Equal(f.Path, o.field.Path) {
				bad("%s may not own %s: it is owned by %s (fields have one owner)", who, f, ident(o.owner))
			} else {
				bad("%s may not own %s: it overlaps %s, owned by %s (fields have one owner)", who, f, o.field, ident(o.owner))
			}
		}
	}
	ctls := map[string]Controller{}
	if r != nil {
		for name, x := range r.ctls {
			ctls[name] = x
		}
	}
	ctls[c.Name] = c
	next := build(ctls)
	if cycle := next.cycleThrough(c.Name); cycle != "" {
		bad("read/write cycle: %s", cycle)
	}
	if len(problems) > 0 {
		return nil, &RejectedError{Controller: c.Name, Problems: problems}
	}
	return next, nil
}

// feeds returns the first field (in sorted order) that a owns and b reads,
// and whether there is one: the edge a→b of the read/write graph.
func (r *Registry) feeds(a, b string) (Field, bool) {
	if a == b {
		return Field{}, false
	}
	ca, cb := r.ctls[a], r.ctls[b]
	owns := slices.Clone(ca.Owns)
	slices.SortFunc(owns, func(x, y Field) int { return strings.Compare(x.String(), y.String()) })
	for _, f := range owns {
		for _, g := range cb.Reads {
			if f.check() == nil && g.check() == nil && f.Overlaps(g) {
				return f, true
			}
		}
	}
	return Field{}, false
}

// cycleThrough returns the shortest read/write cycle through start, printed
// from its alphabetically first controller, or "" if there is none. Ties
// are broken by visiting controllers in name order. A registry built only
// by With has no cycles, so any cycle after adding start goes through it.
func (r *Registry) cycleThrough(start string) string {
	parent := map[string]string{}
	queue := []string{start}
	var last string
loop:
	for len(queue) > 0 {
		a := queue[0]
		queue = queue[1:]
		for _, b := range r.names {
			if _, ok := r.feeds(a, b); !ok {
				continue
			}
			if b == start {
				last = a
				break loop
			}
			if _, seen := parent[b]; !seen {
				parent[b] = a
				queue = append(queue, b)
			}
		}
	}
	if last == "" {
		return ""
	}
	cycle := []string{last}
	for n := last; n != start; {
		n = parent[n]
		cycle = append(cycle, n)
	}
	slices.Reverse(cycle) // start, ..., last
	first := slices.Index(cycle, slices.Min(cycle))
	cycle = append(cycle[first:], cycle[:first]...)
	var steps []string
	for i, a := range cycle {
		b := cycle[(i+1)%len(cycle)]
		f, _ := r.feeds(a, b)
		steps = append(steps, fmt.Sprintf("%s writes %s, read by %s", ident(a), f, ident(b)))
	}
	return strings.Join(steps, "; ")
}

// Without returns a new registry without the controller name. Removing a
// controller cannot create a conflict or a cycle.
func (r *Registry) Without(name string) *Registry {
	if r == nil {
		return &Registry{}
	}
	if _, ok := r.ctls[name]; !ok {
		return r
	}
	ctls := map[string]Controller{}
	for n, c := range r.ctls {
		if n != name {
			ctls[n] = c
		}
	}
	return build(ctls)
}

// Controllers returns the registrations, sorted by name.
func (r *Registry) Controllers() []Controller {
	if r == nil {
		return nil
	}
	out := make([]Controller, 0, len(r.names))
	for _, n := range r.names {
		out = append(out, r.ctls[n].clone())
	}
	return out
}

// Get returns the registration of the controller name.
func (r *Registry) Get(name string) (Controller, bool) {
	if r == nil {
		return Controller{}, false
	}
	c, ok := r.ctls[name]
	return c.clone(), ok
}

// Owner returns the name of the controller owning the field at path p of
// kind, that is the owned field that is p or a prefix of p, and whether one
// does. A path that is a strict prefix of owned fields ("status" when
// "status.node" is owned) is not owned by anyone as a whole.
func (r *Registry) Owner(kind string, p fieldpath.Path) (string, bool) {
	if r == nil {
		return "", false
	}
	for _, o := range r.owned {
		if o.field.covers(kind, p) {
			return o.owner, true
		}
	}
	return "", false
}

// ownersBelow returns the owners of fields strictly below p, sorted.
func (r *Registry) ownersBelow(kind string, p fieldpath.Path) []string {
	var out []string
	if r == nil {
		return nil
	}
	for _, o := range r.owned {
		if o.field.Kind == kind && len(o.field.Path) > len(p) && o.field.Path.HasPrefix(p) {
			out = append(out, o.owner)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Writers returns the names of the controllers owning a field that overlaps
// f, sorted.
func (r *Registry) Writers(f Field) []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, o := range r.owned {
		if o.field.Overlaps(f) {
			out = append(out, o.owner)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// NotOwnerError is a refused write of one field. It matches ErrNotOwner.
type NotOwnerError struct {
	Field  string // path in the body: "status.node"
	Object string // "pod/web"
	Writer string // identity: "controller:rogue", "operator:alice", "node:n2"
	// Owner is the controller identity owning the field, "" if unowned.
	Owner string
	// Managed is the object that manages this one ("pinneddeployment/web")
	// when an operator edited the labels or spec it sets; "" otherwise.
	Managed string
}

// Error says who may not write what, and why, on one line.
func (e *NotOwnerError) Error() string {
	return fmt.Sprintf("%s may not write %s of %s: %s", e.Writer, e.Field, e.Object, e.reason())
}

func (e *NotOwnerError) reason() string {
	operator := strings.HasPrefix(e.Writer, identity.Operator+":")
	status := e.Field == "status" || strings.HasPrefix(e.Field, "status.") || strings.HasPrefix(e.Field, "status[")
	switch {
	case e.Managed != "":
		return "owned by " + e.Managed + ": edit that instead"
	case e.Owner != "":
		return "it is owned by " + e.Owner
	case status && operator:
		return "status is observed state, written by controllers and nodes"
	case status:
		return "no controller owns it; a controller writes only the status fields it declares in owns"
	}
	return "no controller owns it; only operators write unowned fields"
}

// Is reports whether t is ErrNotOwner.
func (e *NotOwnerError) Is(t error) bool { return t == ErrNotOwner }

// CheckWrite checks that writer may change body old into new for the object
// ref ("pod/web") of kind. old is nil for a create; deletes are not checked
// here. Every changed leaf (fieldpath.Changes) must be writable:
//
//   - a controller writes only the fields it owns, and, if it is
//     managerController of the object, also its labels and spec;
//   - a node writes as the controller "agent";
//   - an operator writes only fields no controller owns, never status
//     (observed state), and not the labels and spec of an object managed by
//     another (managedBy, like "pinneddeployment/web", is set): those are
//     the managing controller's, and the operator edits the manager instead.
//
// A change at a path that is a strict prefix of owned fields (an empty
// status map appearing, say) is allowed for a controller only if it owns
// every owned field below; for anyone else it names the first such owner.
// Top-level body keys other than labels, spec and status (the store's
// "owner") are metadata the store maintains, and are not checked. The first
// violation in path order is returned, as a *NotOwnerError.
func (r *Registry) CheckWrite(kind, ref string, writer identity.Identity, managedBy, managerController string, old, new map[string]any) error {
	var oldTree, newTree any
	if old != nil {
		oldTree = old
	}
	if new != nil {
		newTree = new
	}
	var self string // controller name the writer writes as; "" for operators
	switch writer.Kind {
	case identity.Controller:
		self = writer.Name
	case identity.Node:
		self = AgentController
	case identity.Operator:
	default:
		return fmt.Errorf("%w: %q is not an operator, controller or node", ErrNotOwner, writer.String())
	}
	for _, p := range fieldpath.ChangedPaths(oldTree, newTree) {
		if len(p) == 0 || p[0].IsIndex || !(p[0].Key == "labels" || p[0].Key == "spec" || p[0].Key == "status") {
			continue
		}
		if w, ok := r.mayWrite(kind, p, writer, self, managedBy, managerController); !ok {
			return &NotOwnerError{Field: p.String(), Object: ref, Writer: writer.String(), Owner: w.owner, Managed: w.managed}
		}
	}
	return nil
}

// whose names, for a refused write, the controller identity owning the
// field (owner) or the object managing the written one (managed).
type whose struct{ owner, managed string }

// mayWrite reports whether writer, who writes as the controller self (""
// for an operator), may change the field at p, as CheckWrite documents,
// and if not, whose field it is.
func (r *Registry) mayWrite(kind string, p fieldpath.Path, writer identity.Identity, self, managedBy, managerController string) (w whose, ok bool) {
	owner, owned := r.Owner(kind, p)
	if self != "" {
		switch {
		case owned && owner == self:
			return w, true
		case owned:
			return whose{owner: ident(owner)}, false
		case operatorIntent(p) && managedBy != "" && (managerController == ident(self) || managerController == writer.String()):
			return w, true
		case operatorIntent(p) && managedBy != "" && managerController != "":
			return whose{owner: managerController}, false
		}
		below := r.ownersBelow(kind, p)
		switch {
		case len(below) > 0 && !slices.ContainsFunc(below, func(o string) bool { return o != self }):
			return w, true // only the writer's own fields are below
		case len(below) > 0:
			return whose{owner: ident(below[slices.IndexFunc(below, func(o string) bool { return o != self })])}, false
		}
		return w, false
	}
	if owned {
		return whose{owner: ident(owner)}, false
	}
	switch below := r.ownersBelow(kind, p); {
	case len(below) > 0:
		return whose{owner: ident(below[0])}, false
	case operatorIntent(p) && managedBy != "":
		return whose{managed: managedBy}, false
	case underStatus(p):
		return w, false
	}
	return w, true
}

// Strip returns a copy of body keeping only the fields of kind that the
// controller ctl declared it reads or owns: each declared path present in
// body is copied, with the maps (and lists) on the way to it. A list on the
// way keeps its length, with null for elements no declared path reaches, so
// indexes stay meaningful. The result shares nothing with body. An unknown
// controller gets an empty map.
func (r *Registry) Strip(kind, ctl string, body map[string]any) map[string]any {
	out := map[string]any{}
	if r == nil || body == nil {
		return out
	}
	c, ok := r.ctls[ctl] // read only: no copy
	if !ok {
		return out
	}
	for _, fs := range [2][]Field{c.Reads, c.Owns} {
		for _, f := range fs {
			if f.Kind != kind || len(f.Path) == 0 {
				continue
			}
			if !slices.ContainsFunc(f.Path, fieldpath.Elem.IsWildcard) {
				if _, ok := fieldpath.Get(body, f.Path); ok {
					graft(out, body, f.Path)
				}
				continue
			}
			graftEach(out, body, f.Path, slices.Clone(f.Path), 0)
		}
	}
	return out
}

// graftEach grafts into dst every node of src that the path p names
// (fieldpath.Expand, in its order), using q, a copy of p, to spell out
// each: the wildcards of p from index i on are yet to be expanded.
func graftEach(dst, src any, p, q fieldpath.Path, i int) {
	w := slices.IndexFunc(p[i:], fieldpath.Elem.IsWildcard)
	if w < 0 {
		if _, ok := fieldpath.Get(src, q); ok {
			graft(dst, src, q)
		}
		return
	}
	w += i
	l, _ := fieldpath.Get(src, q[:w])
	list, _ := l.([]any)
	for k := range list {
		q[w] = fieldpath.Index(k)
		graftEach(dst, src, p, q, w+1)
	}
}

// graft copies the node of src at p into dst, which mirrors src's shape,
// creating the containers on the way, and returns the new dst. The node
// must exist in src.
func graft(dst, src any, p fieldpath.Path) any {
	if len(p) == 0 {
		return fieldpath.DeepCopy(src)
	}
	e := p[0]
	if e.IsIndex {
		sl := src.([]any)
		d, ok := dst.([]any)
		if !ok || len(d) != len(sl) {
			d = make([]any, len(sl))
		}
		d[e.Index] = graft(d[e.Index], sl[e.Index], p[1:])
		return d
	}
	sm := src.(map[string]any)
	d, ok := dst.(map[string]any)
	if !ok || d == nil {
		d = map[string]any{}
	}
	d[e.Key] = graft(d[e.Key], sm[e.Key], p[1:])
	return d
}
