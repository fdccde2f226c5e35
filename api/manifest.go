package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ManifestError is a problem in a manifest file, located by line.
type ManifestError struct {
	Source string // file name, or "-" for standard input
	Line   int    // 0 when unknown
	Object string // "pod/web" when known
	Err    error
}

func (e *ManifestError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Object != "" {
		b.WriteString(e.Object + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *ManifestError) Unwrap() error        { return e.Err }
func (e *ManifestError) Is(target error) bool { return target == ErrInvalid }

// MaxManifestBytes bounds what ParseManifests reads.
const MaxManifestBytes = 8 << 20

// maxAliasExpansions bounds YAML alias expansion (billion laughs).
const maxAliasExpansions = 10000

// manifestDoc is the envelope of one manifest document. Status and meta are
// accepted so that `skiff get -o yaml` output can be applied again; apply
// ignores them.
type manifestDoc struct {
	Kind      string            `json:"kind"`
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
	Spec      map[string]any    `json:"spec"`
	Status    map[string]any    `json:"status"`
	Meta      map[string]any    `json:"meta"`
}

// ParseManifests reads one or more YAML (or JSON) documents and returns the
// objects in canonical form; namespaced objects that name no namespace get
// ns (DefaultNamespace if empty). Any problem in any document is an error
// and no object is returned: a manifest is applied whole or not at all.
func ParseManifests(source string, r io.Reader, ns string) ([]Object, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestBytes+1))
	if err != nil {
		return nil, &ManifestError{Source: source, Err: err}
	}
	if len(data) > MaxManifestBytes {
		return nil, &ManifestError{Source: source, Err: fmt.Errorf("larger than %d MiB", MaxManifestBytes>>20)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []Object
	firstLine := map[Ref]int{}
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &ManifestError{Source: source, Line: yamlErrLine(err), Err: errors.New(cleanYAMLErr(err))}
		}
		if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
			continue // an empty document between separators
		}
		c := converter{lines: map[string]int{}}
		tree, err := c.value(doc.Content[0], "")
		if err != nil {
			return nil, &ManifestError{Source: source, Line: c.errLine, Err: err}
		}
		line := doc.Content[0].Line
		var d manifestDoc
		if err := decodeInto(tree, reflect.ValueOf(&d).Elem(), ""); err != nil {
			return nil, &ManifestError{Source: source, Line: c.lineOf(err, line), Err: err}
		}
		if k, err := LookupKind(d.Kind); err == nil && k.Namespaced && d.Namespace == "" {
			d.Namespace = ns
		}
		o, err := Normalize(Object{Kind: d.Kind, Name: d.Name, Namespace: d.Namespace, Labels: d.Labels, Spec: d.Spec})
		if err != nil {
			me := &ManifestError{Source: source, Line: c.lineOf(err, line), Err: err}
			if d.Kind != "" && d.Name != "" {
				me.Object = printable(strings.ToLower(d.Kind)) + "/" + printable(d.Name)
			}
			return nil, me
		}
		if prev, dup := firstLine[o.Ref()]; dup {
			return nil, &ManifestError{Source: source, Line: line, Object: o.Ref().String(),
				Err: fmt.Errorf("defined twice in one manifest (first at line %d)", prev)}
		}
		firstLine[o.Ref()] = line
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil, &ManifestError{Source: source, Err: errors.New("no objects found (the manifest is empty)")}
	}
	return objs, nil
}

// converter turns a YAML node tree into a generic JSON tree and remembers
// the line of every field path, so errors can point at the right line.
type converter struct {
	lines      map[string]int
	expansions int
	errLine    int
}

func (c *converter) lineOf(err error, fallback int) int {
	var fe *FieldError
	if errors.As(err, &fe) {
		for p := fe.Path; p != ""; {
			if l, ok := c.lines[p]; ok {
				return l
			}
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	return fallback
}

func (c *converter) value(n *yaml.Node, path string) (any, error) {
	c.lines[path] = n.Line
	switch n.Kind {
	case yaml.AliasNode:
		c.expansions++
		if c.expansions > maxAliasExpansions {
			c.errLine = n.Line
			return nil, errors.New("too many YAML alias expansions")
		}
		return c.value(n.Alias, path)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!int" && k.Tag != "!!bool" && k.Tag != "!!float") {
				c.errLine = k.Line
				return nil, &FieldError{Path: path, Reason: "map keys must be strings"}
			}
			if k.Value == "<<" {
				c.errLine = k.Line
				return nil, &FieldError{Path: path, Reason: "YAML merge keys (<<) are not supported"}
			}
			kp := joinKey(path, k.Value)
			if path == "" {
				kp = k.Value
			}
			if _, dup := m[k.Value]; dup {
				c.errLine = k.Line
				return nil, &FieldError{Path: kp, Reason: fmt.Sprintf("defined twice (first at line %d)", c.lines[kp])}
			}
			val, err := c.value(v, kp)
			if err != nil {
				return nil, err
			}
			c.lines[kp] = k.Line
			m[k.Value] = val
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, e := range n.Content {
			v, err := c.value(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			l[i] = v
		}
		return l, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				c.errLine = n.Line
				return nil, &FieldError{Path: path, Reason: err.Error()}
			}
			return b, nil
		case "!!int", "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				c.errLine = n.Line
				return nil, &FieldError{Path: path, Reason: fmt.Sprintf("%q is not a number", n.Value)}
			}
			return f, nil
		default:
			return n.Value, nil
		}
	}
	c.errLine = n.Line
	return nil, &FieldError{Path: path, Reason: "unsupported YAML node"}
}

// printable returns s, or s quoted when it holds anything but printable
// ASCII, so that one error stays one line.
func printable(s string) string {
	for _, r := range s {
		if r < ' ' || r > '~' || r == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}

// yamlErrLine extracts "line N" from a yaml.v3 error.
func yamlErrLine(err error) int {
	s := err.Error()
	i := strings.Index(s, "line ")
	if i < 0 {
		return 0
	}
	j := i + 5
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	n, _ := strconv.Atoi(s[i+5 : j])
	return n
}

func cleanYAMLErr(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if i := strings.Index(s, "line "); i == 0 {
		if j := strings.Index(s, ": "); j > 0 {
			s = s[j+2:]
		}
	}
	return "not valid YAML: " + s
}

// DecodeObject strictly decodes one object from JSON, as the API receives
// it, and returns it in canonical form. Meta and status are dropped.
func DecodeObject(data []byte) (Object, error) {
	tree, err := DecodeBody(data)
	if err != nil {
		return Object{}, err
	}
	return DecodeObjectTree(tree)
}

// DecodeBody reads a request body that is one JSON value into a tree.
// Every create comes this way: DecodeTree reads it without reflection;
// anything else takes encoding/json's decoder, whose errors (and
// leniency) users see.
func DecodeBody(data []byte) (any, error) {
	if tree, err := DecodeTree(data); err == nil {
		return tree, nil
	}
	return decodeBody(data)
}

// DecodeObjectTree is DecodeObject of a body already decoded into a JSON
// tree: one item of a list applied at once, say.
func DecodeObjectTree(tree any) (Object, error) {
	var d manifestDoc
	if err := decodeManifestDoc(tree, &d); err != nil {
		return Object{}, err
	}
	return Normalize(Object{Kind: d.Kind, Name: d.Name, Namespace: d.Namespace, Labels: d.Labels, Spec: d.Spec})
}

// decodeBody reads a request body with encoding/json's decoder.
func decodeBody(data []byte) (any, error) {
	var tree any
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("%w: body is not JSON: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: body holds more than one JSON value", ErrInvalid)
	}
	return tree, nil
}
