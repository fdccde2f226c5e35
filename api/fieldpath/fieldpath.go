// Package fieldpath addresses fields inside generic JSON trees and computes
// structural diffs between them.
//
// Trees are values as produced by encoding/json decoding into an any:
// map[string]any, []any, string, float64, bool and nil. A Path such as
// spec.containers[0].env.GREETING names one node; Diff and Apply turn two
// trees into a small list of Ops and back, for delta-encoded object history;
// Changes lists leaf-level changes for showing a diff to a person.
//
// It is not a JSON Patch (RFC 6902) or merge-patch implementation, does not
// know any object schema (lists are diffed by position, not by a merge key
// such as a container name), and does not handle typed Go structs.
package fieldpath

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unsafe"
)

// Elem is one step of a Path: a map key, or a list index (>= 0) if IsIndex.
type Elem struct {
	Key     string
	Index   int
	IsIndex bool
}

// Key returns the Elem for map key k.
func Key(k string) Elem { return Elem{Key: k} }

// Index returns the Elem for list index i.
func Index(i int) Elem { return Elem{Index: i, IsIndex: true} }

// Any is the wildcard list index "[*]": every element of a list. Paths
// with wildcards name several fields (a controller reading
// spec.containers[*].resources); Expand turns them into concrete ones.
var Any = Elem{Index: -1, IsIndex: true}

// IsWildcard reports whether e is Any.
func (e Elem) IsWildcard() bool { return e.IsIndex && e.Index < 0 }

// Path is a sequence of elements from the root of a tree. The empty Path
// is the root itself.
type Path []Elem

// Parse parses a path written as by Path.String, e.g.
//
//	spec.containers[0].env.GREETING
//	metadata.labels["app.kubernetes.io/name"]
//
// Keys in dot form match [A-Za-z_][A-Za-z0-9_-]*; any other key is written
// in brackets as a Go/JSON double-quoted string. The empty string is the
// root.
func Parse(s string) (Path, error) {
	if s == "" {
		return nil, nil
	}
	// Every element but the first starts with "." or "[": one allocation.
	p := make(Path, 0, 1+strings.Count(s, ".")+strings.Count(s, "["))
	for i := 0; i < len(s); {
		if s[i] == '[' {
			e, n, reason := parseBracket(s[i:])
			if reason != "" {
				return nil, fmt.Errorf("path %q: %s at column %d", s, reason, i+1)
			}
			p, i = append(p, e), i+n
			continue
		}
		if len(p) > 0 {
			if s[i] != '.' {
				return nil, fmt.Errorf(`path %q: expected "." or "[" at column %d, found %q`, s, i+1, s[i])
			}
			i++
		}
		n := identLen(s[i:])
		switch {
		case n > 0:
			p, i = append(p, Key(s[i:i+n])), i+n
		case i == len(s):
			return nil, fmt.Errorf(`path %q: key missing after "."`, s)
		case s[i] >= '0' && s[i] <= '9':
			d := s[i : i+digitLen(s[i:])]
			return nil, fmt.Errorf(`path %q: key at column %d starts with a digit; write [%s] for a list index or ["%s"] for a key`, s, i+1, d, d)
		default:
			return nil, fmt.Errorf(`path %q: unexpected %q at column %d; quote unusual keys as ["key"]`, s, s[i], i+1)
		}
	}
	return p, nil
}

// parseBracket parses `[12]` or `["key"]` at the start of s and returns
// the element, its length in bytes, or a reason it is malformed.
func parseBracket(s string) (Elem, int, string) {
	if strings.HasPrefix(s, "[*]") {
		return Any, 3, ""
	}
	if n := digitLen(s[1:]); n > 0 {
		if !strings.HasPrefix(s[1+n:], "]") {
			return Elem{}, 0, `missing "]" after list index`
		}
		i, err := strconv.Atoi(s[1 : 1+n])
		if err != nil || (n > 1 && s[1] == '0') {
			return Elem{}, 0, fmt.Sprintf("bad list index %s", s[1:1+n])
		}
		return Index(i), n + 2, ""
	}
	if !strings.HasPrefix(s[1:], `"`) {
		return Elem{}, 0, `expected a list index or a "quoted" key after "["`
	}
	for i := 2; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			k, err := strconv.Unquote(s[1 : i+1])
			if err != nil {
				return Elem{}, 0, "bad quoted key"
			}
			if !strings.HasPrefix(s[i+1:], "]") {
				return Elem{}, 0, `missing "]" after quoted key`
			}
			return Key(k), i + 2, ""
		}
	}
	return Elem{}, 0, "unterminated quoted key"
}

func identLen(s string) int {
	for i, c := range []byte(s) {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && (c == '-' || '0' <= c && c <= '9')) {
			return i
		}
	}
	return len(s)
}

func digitLen(s string) int {
	for i, c := range []byte(s) {
		if c < '0' || c > '9' {
			return i
		}
	}
	return len(s)
}

// String formats p so that Parse returns it again. The root is "".
func (p Path) String() string {
	var buf [64]byte // most paths fit: the string is then the one allocation
	return string(p.append(buf[:0]))
}

// append appends p as String formats it to b.
func (p Path) append(b []byte) []byte {
	for i, e := range p {
		switch {
		case e.IsWildcard():
			b = append(b, "[*]"...)
		case e.IsIndex:
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(e.Index), 10)
			b = append(b, ']')
		case e.Key != "" && identLen(e.Key) == len(e.Key):
			if i > 0 {
				b = append(b, '.')
			}
			b = append(b, e.Key...)
		default:
			b = append(b, '[')
			b = strconv.AppendQuote(b, e.Key)
			b = append(b, ']')
		}
	}
	return b
}

// HasPrefix reports whether q is a prefix of p (every path has the root
// as a prefix, and p is a prefix of itself). A wildcard index on either
// side matches any index.
func (p Path) HasPrefix(q Path) bool {
	if len(q) > len(p) {
		return false
	}
	for i, e := range q {
		f := p[i]
		if e.IsIndex && f.IsIndex && (e.IsWildcard() || f.IsWildcard()) {
			continue
		}
		if e != f {
			return false
		}
	}
	return true
}

// Expand returns the concrete paths of tree that p names: p itself if it
// has no wildcard and exists, every existing element for each wildcard.
func Expand(tree any, p Path) []Path {
	var out []Path
	expand(tree, make(Path, 0, len(p)), p, &out)
	return out
}

// expand appends to out the paths of node's part of tree that rest names,
// each prefixed with done, the path of node. Like diff, it reuses done's
// backing array, and keeps copies.
func expand(node any, done, rest Path, out *[]Path) {
	if len(rest) == 0 {
		*out = append(*out, slices.Clone(done))
		return
	}
	e := rest[0]
	switch {
	case e.IsWildcard():
		l, _ := node.([]any)
		for i := range l {
			expand(l[i], append(done, Index(i)), rest[1:], out)
		}
	case e.IsIndex:
		if l, ok := node.([]any); ok && e.Index < len(l) {
			expand(l[e.Index], append(done, e), rest[1:], out)
		}
	default:
		if m, ok := node.(map[string]any); ok {
			if v, ok := m[e.Key]; ok {
				expand(v, append(done, e), rest[1:], out)
			}
		}
	}
}

// compare orders paths element by element: indexes numerically, keys
// lexically, an index before a key, a parent before its children.
func compare(p, q Path) int {
	for i := range min(len(p), len(q)) {
		a, b := p[i], q[i]
		if c := cmp.Or(
			-cmp.Compare(btoi(a.IsIndex), btoi(b.IsIndex)),
			cmp.Compare(a.Index, b.Index),
			strings.Compare(a.Key, b.Key)); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(p), len(q))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// child returns p extended by e without sharing p's backing array.
func (p Path) child(e Elem) Path { return append(p[:len(p):len(p)], e) }

// Get returns the node of tree at p, and whether it exists.
func Get(tree any, p Path) (any, bool) {
	for _, e := range p {
		if e.IsIndex {
			l, ok := tree.([]any)
			if !ok || e.Index < 0 || e.Index >= len(l) {
				return nil, false
			}
			tree = l[e.Index]
		} else {
			m, ok := tree.(map[string]any)
			if tree, ok = m[e.Key]; !ok {
				return nil, false
			}
		}
	}
	return tree, true
}

// DeepCopy returns a copy of v that shares no maps or slices with it.
// Values of types other than map[string]any and []any are returned as is.
func DeepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if v == nil {
			return v
		}
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = DeepCopy(x)
		}
		return m
	case []any:
		if v == nil {
			return v
		}
		l := make([]any, len(v))
		for i, x := range v {
			l[i] = DeepCopy(x)
		}
		return l
	}
	return v
}

// Op is one change of a delta: set the node at Path to Value, or remove it
// if Delete. The JSON tags are short because history stores many Ops. An
// Op setting null encodes without "v" and decodes back to the same Op.
type Op struct {
	Path   string `json:"p"`
	Value  any    `json:"v,omitempty"`
	Delete bool   `json:"d,omitempty"`
}

// entry pairs a value with its parsed path for sorting.
type entry[T any] struct {
	path Path
	v    T
}

func sortedByPath[T any](es []entry[T]) []T {
	return sortedPick(es, func(e entry[T]) T { return e.v })
}

// sortedPick sorts es by path and returns what pick takes of each, nil
// for none.
func sortedPick[T, U any](es []entry[T], pick func(entry[T]) U) []U {
	if len(es) == 0 {
		return nil
	}
	slices.SortFunc(es, func(x, y entry[T]) int { return compare(x.path, y.path) })
	out := make([]U, len(es))
	for i, e := range es {
		out[i] = pick(e)
	}
	return out
}

// Diff returns the ops that turn a into b, or nil if they are equal. It
// recurses into maps and into lists of equal length; a list whose length
// changed, or a node whose type changed, is replaced whole. Ops do not
// alias b, and are sorted by path (list indexes numerically).
func Diff(a, b any) []Op {
	var out []entry[Op]
	diff(make(Path, 0, 8), a, b, &out)
	return sortedByPath(out)
}

// diff appends the ops turning a into b to out. p is the path of a and b;
// its backing array is reused by the recursion (no allocation per node),
// so an entry keeps a copy.
func diff(p Path, a, b any, out *[]entry[Op]) {
	switch av := a.(type) {
	case map[string]any:
		if bv, ok := b.(map[string]any); ok && av != nil && bv != nil {
			if sameMap(av, bv) {
				return
			}
			for k, x := range av {
				if y, ok := bv[k]; ok {
					diff(append(p, Key(k)), x, y, out)
				} else {
					q := slices.Clone(append(p, Key(k)))
					*out = append(*out, entry[Op]{q, Op{Path: q.String(), Delete: true}})
				}
			}
			for k, y := range bv {
				if _, ok := av[k]; !ok {
					q := slices.Clone(append(p, Key(k)))
					*out = append(*out, entry[Op]{q, Op{Path: q.String(), Value: DeepCopy(y)}})
				}
			}
			return
		}
	case []any:
		if bv, ok := b.([]any); ok && av != nil && bv != nil && len(av) == len(bv) {
			if sameList(av, bv) {
				return
			}
			for i := range av {
				diff(append(p, Index(i)), av[i], bv[i], out)
			}
			return
		}
	}
	if !Equal(a, b) {
		q := slices.Clone(p)
		*out = append(*out, entry[Op]{q, Op{Path: q.String(), Value: DeepCopy(b)}})
	}
}

// Equal reports whether two JSON trees are equal, as reflect.DeepEqual
// does (a nil map or list differs from an empty one), without its
// reflection for the types JSON decodes to.
func Equal(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || (x == nil) != (y == nil) || len(x) != len(y) {
			return false
		}
		if sameMap(x, y) {
			return true
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !Equal(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || (x == nil) != (y == nil) || len(x) != len(y) {
			return false
		}
		if sameList(x, y) {
			return true
		}
		for i := range x {
			if !Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// sameMap reports whether x and y are one map object, which is equal to
// itself without looking inside (reflect.DeepEqual does the same). A tree
// that shares the parts a change left alone with the tree before it (as
// ApplyEdits returns) is then compared in the time of the change, not of
// the tree.
func sameMap(x, y map[string]any) bool {
	return reflect.ValueOf(x).UnsafePointer() == reflect.ValueOf(y).UnsafePointer()
}

// sameList reports whether x and y are one list: the same elements in the
// same backing array (reflect.DeepEqual's test for slices).
func sameList(x, y []any) bool {
	return len(x) == len(y) && unsafe.SliceData(x) == unsafe.SliceData(y)
}

// Apply returns a new tree with ops applied in order. It never modifies
// tree or the ops' values. Setting a path creates missing intermediate maps
// (and replaces null ones); deleting a missing key does nothing; deleting
// the root yields nil. List elements can be replaced but not deleted or
// appended: replace the whole list instead.
func Apply(tree any, ops []Op) (any, error) {
	tree = DeepCopy(tree)
	for i, op := range ops {
		p, err := Parse(op.Path)
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}
		if tree, err = apply(tree, p, 0, op); err != nil {
			return nil, fmt.Errorf("op %d at %q: %w", i, op.Path, err)
		}
	}
	return tree, nil
}

// Edit is an Op with its path parsed, as ApplyEdits takes it: a caller
// that also looks at the paths parses each once.
type Edit struct {
	Op
	At Path // Op.Path parsed
}

// Edits parses the paths of ops.
func Edits(ops []Op) ([]Edit, error) {
	es := make([]Edit, len(ops))
	for i, op := range ops {
		p, err := Parse(op.Path)
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}
		es[i] = Edit{Op: op, At: p}
	}
	return es, nil
}

// ApplyEdits returns a new tree with edits applied in order, as Apply
// does, but copying on write: only the maps and lists the edits' paths
// pass through are copied, and the result shares every other node with
// tree, which is not modified. Neither may be modified in place by the
// caller while the other is in use. Values set are copied as by Apply.
// Errors are Apply's.
func ApplyEdits(tree any, edits []Edit) (any, error) {
	if slices.ContainsFunc(edits, func(e Edit) bool { return len(e.At) > 0 }) {
		tree = cloneAlong(tree, nil, edits)
	}
	for i, e := range edits {
		var err error
		if tree, err = apply(tree, e.At, 0, e.Op); err != nil {
			return nil, fmt.Errorf("op %d at %q: %w", i, e.Path, err)
		}
	}
	return tree, nil
}

// cloneAlong returns a shallow copy of node, which sits at path at, and
// of every map and list below it that an edit's path passes through (lies
// strictly below), so that the edits then change only copies. Nodes an
// edit only ends at are replaced, not changed, and are not copied. Where
// the tree does not have the shape a path needs, copying stops (apply
// then says what is wrong, or creates fresh maps).
func cloneAlong(node any, at Path, edits []Edit) any {
	var c any
	switch n := node.(type) {
	case map[string]any:
		if n == nil {
			return node // apply replaces it with a new map
		}
		c = maps.Clone(n)
	case []any:
		c = slices.Clone(n)
	default:
		return node
	}
	i := len(at)
	for j, e := range edits {
		if !below(e.At, at, 1) {
			continue
		}
		next := e.At[:i+1]
		if slices.ContainsFunc(edits[:j], func(d Edit) bool { return below(d.At, next, 0) }) {
			continue // copied for an earlier edit through the same child
		}
		switch c := c.(type) {
		case map[string]any:
			if x, ok := c[next[i].Key]; ok && !next[i].IsIndex {
				c[next[i].Key] = cloneAlong(x, next, edits)
			}
		case []any:
			if k := next[i].Index; next[i].IsIndex && k >= 0 && k < len(c) {
				c[k] = cloneAlong(c[k], next, edits)
			}
		}
	}
	return c
}

// below reports whether p lies more than n levels below at: at is a
// prefix of p, and p is longer by more than n. An edit at p changes the
// node at at in place (n=0), and its child on the way (n=1).
func below(p, at Path, n int) bool {
	return len(p) > len(at)+n && slices.Equal(p[:len(at)], at)
}

// apply applies op to node, which sits at p[:i], modifying node in place,
// and returns the new node.
func apply(node any, p Path, i int, op Op) (any, error) {
	if i == len(p) {
		if op.Delete {
			return nil, nil
		}
		return DeepCopy(op.Value), nil
	}
	e, last := p[i], i == len(p)-1
	if e.IsIndex {
		l, ok := node.([]any)
		switch {
		case !ok:
			return nil, fmt.Errorf("%s is %s, not a list", where(p[:i]), kind(node))
		case e.IsWildcard():
			return nil, fmt.Errorf("[*] names every element of %s; write one element, or the whole list", where(p[:i]))
		case e.Index >= len(l):
			return nil, fmt.Errorf("index %d out of range: %s has %d elements", e.Index, where(p[:i]), len(l))
		case last && op.Delete:
			return nil, fmt.Errorf("cannot delete a list element; replace the whole list %s", where(p[:i]))
		}
		v, err := apply(l[e.Index], p, i+1, op)
		l[e.Index] = v
		return l, err
	}
	m, ok := node.(map[string]any)
	switch {
	case !ok && node != nil:
		return nil, fmt.Errorf("%s is %s, not a map", where(p[:i]), kind(node))
	case op.Delete && (last || m[e.Key] == nil):
		delete(m, e.Key) // no-op on a nil map or missing key
		return node, nil
	case m == nil:
		m = map[string]any{}
	}
	v, err := apply(m[e.Key], p, i+1, op)
	m[e.Key] = v
	return m, err
}

func where(p Path) string {
	if len(p) == 0 {
		return "the root"
	}
	return p.String()
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "a map"
	case []any:
		return "a list"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a bool"
	}
	return fmt.Sprintf("a %T", v)
}

// Change is one line of a diff shown to a person: the node at Path went
// from Old (if HadOld) to New (if HasNew).
type Change struct {
	Path           string
	Old, New       any
	HadOld, HasNew bool
}

// Changes returns the leaf-level changes from a to b, sorted by path (list
// indexes numerically). Unlike Diff it descends into added, removed and
// resized maps and lists of maps, so a new container shows one line per
// field; lists of scalars (such as args) and empty maps and lists are
// shown whole. A nil root counts as absent, so Changes(nil, obj) lists
// only additions.
func Changes(a, b any) []Change {
	es := changeEntries(a, b)
	for i := range es {
		es[i].v.Path = es[i].path.String()
	}
	return sortedByPath(es)
}

// ChangedPaths returns the paths of Changes(a, b), in the same order,
// parsed rather than formatted: for a caller that looks at the paths and
// formats few of them (an ownership check).
func ChangedPaths(a, b any) []Path {
	return sortedPick(changeEntries(a, b), func(e entry[Change]) Path { return e.path })
}

// changeEntries returns the changes from a to b, unsorted and without
// their Path strings.
func changeEntries(a, b any) []entry[Change] {
	var out []entry[Change]
	changes(make(Path, 0, 8), a, a != nil, b, b != nil, &out)
	return out
}

// changes appends the changes from a to b at p to out; like diff, it
// reuses p's backing array and entries keep copies.
func changes(p Path, a any, hadA bool, b any, hasB bool, out *[]entry[Change]) {
	if hadA == hasB && Equal(a, b) {
		return
	}
	lists := hasComposite(a) || hasComposite(b)
	na, byChildA := fanout(a, hadA, lists)
	nb, byChildB := fanout(b, hasB, lists)
	// An empty map or list is shown whole unless the other side is a
	// non-empty node of the same type, whose children then speak for it.
	same := reflect.TypeOf(a) == reflect.TypeOf(b)
	showA := byChildA && (na > 0 || same && byChildB && nb > 0)
	showB := byChildB && (nb > 0 || same && byChildA && na > 0)
	if !showA && !showB {
		add(out, p, Change{Old: a, New: b, HadOld: hadA, HasNew: hasB})
		return
	}
	if !showA && hadA {
		add(out, p, Change{Old: a, HadOld: true})
	}
	if !showB && hasB {
		add(out, p, Change{New: b, HasNew: true})
	}
	// Every child of either side that is shown as children, once.
	if showA {
		switch a := a.(type) {
		case map[string]any:
			for k, x := range a {
				y, hy := child(b, showB, Key(k))
				changes(append(p, Key(k)), x, true, y, hy, out)
			}
		case []any:
			for i, x := range a {
				y, hy := child(b, showB, Index(i))
				changes(append(p, Index(i)), x, true, y, hy, out)
			}
		}
	}
	if showB {
		switch b := b.(type) {
		case map[string]any:
			for k, y := range b {
				if _, hx := child(a, showA, Key(k)); !hx {
					changes(append(p, Key(k)), nil, false, y, true, out)
				}
			}
		case []any:
			for i, y := range b {
				if _, hx := child(a, showA, Index(i)); !hx {
					changes(append(p, Index(i)), nil, false, y, true, out)
				}
			}
		}
	}
}

// add appends a change at p, with a copy of p, to out.
func add(out *[]entry[Change], p Path, c Change) {
	*out = append(*out, entry[Change]{slices.Clone(p), c})
}

// fanout returns how many children v has and whether it is shown as
// separate lines (children): a map, or a list if lists is set or it is
// empty.
func fanout(v any, present, lists bool) (n int, shown bool) {
	if !present {
		return 0, false
	}
	switch v := v.(type) {
	case map[string]any:
		return len(v), true
	case []any:
		return len(v), lists || len(v) == 0
	}
	return 0, false
}

// child returns the child e of v if v is shown as children (fanout) and
// has one there.
func child(v any, shown bool, e Elem) (any, bool) {
	if !shown {
		return nil, false
	}
	if e.IsIndex {
		l, _ := v.([]any)
		if e.Index < 0 || e.Index >= len(l) {
			return nil, false
		}
		return l[e.Index], true
	}
	m, _ := v.(map[string]any)
	x, ok := m[e.Key]
	return x, ok
}

// hasComposite reports whether v is a list holding a map or a list; such
// lists are shown element by element, lists of scalars whole.
func hasComposite(v any) bool {
	l, _ := v.([]any)
	return slices.ContainsFunc(l, func(x any) bool {
		switch x.(type) {
		case map[string]any, []any:
			return true
		}
		return false
	})
}
