package fieldpath

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// j decodes JSON into a tree, as the rest of skiff does.
func j(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad test JSON %s: %v", s, err)
	}
	return v
}

func TestParseString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Path
		out  string // canonical String(); "" means same as in
	}{
		{"", nil, ""},
		{"spec", Path{Key("spec")}, ""},
		{"spec.containers[0].env.GREETING", Path{Key("spec"), Key("containers"), Index(0), Key("env"), Key("GREETING")}, ""},
		{`metadata.labels["app.kubernetes.io/name"]`, Path{Key("metadata"), Key("labels"), Key("app.kubernetes.io/name")}, ""},
		{`env["A B"]`, Path{Key("env"), Key("A B")}, ""},
		{`[0][12]`, Path{Index(0), Index(12)}, ""},
		{`["a.b"].c`, Path{Key("a.b"), Key("c")}, ""},
		{`a[""]`, Path{Key("a"), Key("")}, ""},
		{`a["0"]`, Path{Key("a"), Key("0")}, ""},
		{`a["say \"hi\""]`, Path{Key("a"), Key(`say "hi"`)}, ""},
		{`a["back\\slash"]`, Path{Key("a"), Key(`back\slash`)}, ""},
		{`a["tab\t"]`, Path{Key("a"), Key("tab\t")}, ""},
		{`a["]"]`, Path{Key("a"), Key("]")}, ""},
		{`a["é"]`, Path{Key("a"), Key("é")}, ""},
		{"_x.a-b.c_1", Path{Key("_x"), Key("a-b"), Key("c_1")}, ""},
		{`a["plain"]`, Path{Key("a"), Key("plain")}, "a.plain"},
		{`["x"]`, Path{Key("x")}, "x"},
		{`a["\u00e9"]`, Path{Key("a"), Key("é")}, `a["é"]`},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
		want := tc.out
		if want == "" {
			want = tc.in
		}
		if s := got.String(); s != want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, s, want)
		}
	}
}

func TestPathRoundTrip(t *testing.T) {
	keys := []string{"a", "A_1", "a-b", "-a", "1a", "0", "", " ", "a.b", "a/b", `"`, `\`, "[", "]", "x]y", "é", "日本", "\x00", "\xff", "\n", "a\"]b"}
	for _, k := range keys {
		for _, p := range []Path{{Key(k)}, {Key("x"), Key(k)}, {Index(3), Key(k), Index(0)}, {Key(k), Key(k)}} {
			got, err := Parse(p.String())
			if err != nil || !reflect.DeepEqual(got, p) {
				t.Errorf("Parse(%q) = %#v, %v; want %#v", p.String(), got, err, p)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a..b", `path "a..b": unexpected '.' at column 3; quote unusual keys as ["key"]`},
		{"a.", `path "a.": key missing after "."`},
		{".a", `path ".a": unexpected '.' at column 1; quote unusual keys as ["key"]`},
		{"a.0", `path "a.0": key at column 3 starts with a digit; write [0] for a list index or ["0"] for a key`},
		{"containers.12.image", `path "containers.12.image": key at column 12 starts with a digit; write [12] for a list index or ["12"] for a key`},
		{"a b", `path "a b": expected "." or "[" at column 2, found ' '`},
		{"a[", `path "a[": expected a list index or a "quoted" key after "[" at column 2`},
		{"a[x]", `path "a[x]": expected a list index or a "quoted" key after "[" at column 2`},
		{"a[-1]", `path "a[-1]": expected a list index or a "quoted" key after "[" at column 2`},
		{"a[0", `path "a[0": missing "]" after list index at column 2`},
		{"a[01]", `path "a[01]": bad list index 01 at column 2`},
		{"a[99999999999999999999]", `path "a[99999999999999999999]": bad list index 99999999999999999999 at column 2`},
		{`a["x`, `path "a[\"x": unterminated quoted key at column 2`},
		{`a["x\"]`, `path "a[\"x\\\"]": unterminated quoted key at column 2`},
		{`a["x"`, `path "a[\"x\"": missing "]" after quoted key at column 2`},
		{`a["\q"]`, `path "a[\"\\q\"]": bad quoted key at column 2`},
		{`a["x"]b`, `path "a[\"x\"]b": expected "." or "[" at column 7, found 'b'`},
		{"a.b$", `path "a.b$": expected "." or "[" at column 4, found '$'`},
	} {
		_, err := Parse(tc.in)
		got := "<nil>"
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("Parse(%q):\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestHasPrefix(t *testing.T) {
	p := Path{Key("spec"), Key("containers"), Index(0)}
	for _, tc := range []struct {
		q    Path
		want bool
	}{
		{nil, true},
		{Path{Key("spec")}, true},
		{Path{Key("spec"), Key("containers")}, true},
		{p, true},
		{Path{Key("spec"), Key("containers"), Index(1)}, false},
		{Path{Key("spec"), Key("containers"), Key("0")}, false},
		{Path{Key("spe")}, false},
		{append(p[:3:3], Key("name")), false},
	} {
		if got := p.HasPrefix(tc.q); got != tc.want {
			t.Errorf("%q.HasPrefix(%q) = %v, want %v", p, tc.q, got, tc.want)
		}
	}
}

func TestGet(t *testing.T) {
	tree := j(t, `{"spec":{"containers":[{"name":"web","env":{"A B":"1"}}],"n":null}}`)
	for _, tc := range []struct {
		path string
		want any
		ok   bool
	}{
		{"", tree, true},
		{"spec.containers[0].name", "web", true},
		{`spec.containers[0].env["A B"]`, "1", true},
		{"spec.n", nil, true},
		{"spec.containers[1]", nil, false},
		{"spec.containers.name", nil, false},
		{"spec.containers[0].name.x", nil, false},
		{"spec.missing", nil, false},
		{"spec.n.x", nil, false},
		{"[0]", nil, false},
	} {
		p, err := Parse(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := Get(tree, p)
		if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Get(%q) = %v, %v; want %v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDiff(t *testing.T) {
	many := func(from, n int) string {
		var parts []string
		for i := range n {
			parts = append(parts, fmt.Sprint(from+i))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	for _, tc := range []struct {
		name, a, b string
		want       string // JSON of the ops
	}{
		{"equal", `{"a":[1,{"b":null}]}`, `{"a":[1,{"b":null}]}`, `null`},
		{"scalar", `{"a":1}`, `{"a":2}`, `[{"p":"a","v":2}]`},
		{"add delete", `{"a":1,"b":2}`, `{"b":2,"c":{"d":3}}`, `[{"p":"a","d":true},{"p":"c","v":{"d":3}}]`},
		{"set null", `{"a":1}`, `{"a":null}`, `[{"p":"a"}]`},
		{"list elementwise", `{"l":[1,2,3]}`, `{"l":[1,5,3]}`, `[{"p":"l[1]","v":5}]`},
		{"list resized", `{"l":[1,2,3]}`, `{"l":[1,2]}`, `[{"p":"l","v":[1,2]}]`},
		{"type change", `{"a":{"b":1}}`, `{"a":[1]}`, `[{"p":"a","v":[1]}]`},
		{"odd keys", `{"a.b":{"c\"d":1,"":2}}`, `{"a.b":{"c\"d":3,"":4}}`, `[{"p":"[\"a.b\"][\"\"]","v":4},{"p":"[\"a.b\"][\"c\\\"d\"]","v":3}]`},
		{"root type", `{"a":1}`, `[1]`, `[{"p":"","v":[1]}]`},
		{"root scalar", `"x"`, `"y"`, `[{"p":"","v":"y"}]`},
		{"root to null", `{"a":1}`, `null`, `[{"p":""}]`},
		{"numeric order", many(0, 12), many(100, 12), `[` + func() string {
			var ops []string
			for i := range 12 {
				ops = append(ops, fmt.Sprintf(`{"p":"[%d]","v":%d}`, i, 100+i))
			}
			return strings.Join(ops, ",")
		}() + `]`},
		{"pod", `{"metadata":{"name":"p","labels":{"app":"web"}},"spec":{"replicas":1,"containers":[{"name":"web","image":"v1"}]}}`,
			`{"metadata":{"name":"p"},"spec":{"replicas":2,"containers":[{"name":"web","image":"v2"}],"paused":true}}`,
			`[{"p":"metadata.labels","d":true},{"p":"spec.containers[0].image","v":"v2"},{"p":"spec.paused","v":true},{"p":"spec.replicas","v":2}]`},
	} {
		ops := Diff(j(t, tc.a), j(t, tc.b))
		got, _ := json.Marshal(ops)
		if string(got) != tc.want {
			t.Errorf("%s: Diff(%s, %s)\n got %s\nwant %s", tc.name, tc.a, tc.b, got, tc.want)
		}
	}
}

func podTree(greeting string) map[string]any {
	return map[string]any{
		"kind": "Pod",
		"metadata": map[string]any{
			"name":   "web-7f9c",
			"labels": map[string]any{"app": "web", "app.kubernetes.io/name": "web"},
		},
		"spec": map[string]any{
			"containers": []any{
				map[string]any{
					"name":  "web",
					"image": "nginx:1.27",
					"args":  []any{"-g", "daemon off;"},
					"env":   map[string]any{"GREETING": greeting, "PORT": "8080"},
					"resources": map[string]any{
						"limits": map[string]any{"cpu": "250m", "memory": "64Mi"},
					},
				},
				map[string]any{"name": "sidecar", "image": "envoy:1.30"},
			},
			"restartPolicy": "Always",
		},
	}
}

func TestSmallDeepChange(t *testing.T) {
	a, b := podTree("hello"), podTree("hola")
	ops := Diff(a, b)
	if len(ops) != 1 || ops[0].Path != "spec.containers[0].env.GREETING" {
		t.Fatalf("Diff = %+v, want one op at spec.containers[0].env.GREETING", ops)
	}
	enc, err := json.Marshal(ops[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) >= 80 {
		t.Errorf("op encodes to %d bytes, want < 80: %s", len(enc), enc)
	}
}

// pairs returns hand-written (a, b) pairs covering the interesting cases.
func pairs(t *testing.T) [][2]any {
	js := [][2]string{
		{`null`, `null`},
		{`null`, `{"a":1}`},
		{`{"a":1}`, `null`},
		{`"x"`, `1`},
		{`{"a":1}`, `[1,2]`},
		{`[1,2]`, `[1,2,3]`},
		{`[]`, `{}`},
		{`{}`, `{"a":{"b":{"c":[1,{"d":true}]}}}`},
		{`{"a":{"b":{"c":[1,{"d":true}]}}}`, `{}`},
		{`{"a":{"b":{"c":[1,{"d":true}]}}}`, `{"a":{"b":{"c":[1,{"d":false,"e":null}]}}}`},
		{`{"a":{"b":1,"c":2}}`, `{"a":{"c":2}}`},
		{`{"a":null}`, `{"a":{"b":1}}`},
		{`{"a":{"b":1}}`, `{"a":null}`},
		{`{"a":1}`, `{"a":null}`},
		{`{"a":[{"x":1},{"y":2}]}`, `{"a":[{"x":1}]}`},
		{`{"a":[[1,2],[3]]}`, `{"a":[[1,2],[3,4]]}`},
		{`{"a.b":{"c\"d":1,"":2,"[0]":3}}`, `{"a.b":{"c\"d":4,"":5},"x y":{"é":6}}`},
		{`{"0":{"1":[{"-":1}]}}`, `{"0":{"1":[{"-":2}]},"\\":true}`},
		{`{"l":[1,"a",true,null,{}]}`, `{"l":[null,"b",false,1,[]]}`},
	}
	var out [][2]any
	for _, p := range js {
		out = append(out, [2]any{j(t, p[0]), j(t, p[1])})
	}
	out = append(out, [2]any{any(podTree("hello")), any(podTree("hola"))})
	return out
}

var keyPool = []string{"a", "b", "spec", "env", "x.y", `q"uote`, "", "0", "with space", "é", "a-b", "_", "[0]", `\`, "GREETING"}

func randScalar(r *rand.Rand) any {
	switch r.IntN(5) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return float64(r.IntN(4))
	case 3:
		return r.Float64()
	}
	return keyPool[r.IntN(len(keyPool))]
}

func randTree(r *rand.Rand, depth int) any {
	switch n := r.IntN(10); {
	case depth <= 0 || n < 3:
		return randScalar(r)
	case n < 7:
		m := map[string]any{}
		for range r.IntN(5) {
			m[keyPool[r.IntN(len(keyPool))]] = randTree(r, depth-1)
		}
		return m
	default:
		l := []any{}
		for range r.IntN(4) {
			l = append(l, randTree(r, depth-1))
		}
		return l
	}
}

// mutate returns a changed copy of v; v itself is left alone.
func mutate(r *rand.Rand, v any, depth int) any {
	if r.IntN(8) == 0 {
		return randTree(r, depth) // often a type change
	}
	switch v := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, x := range v {
			switch r.IntN(4) {
			case 0: // delete
			case 1:
				m[k] = mutate(r, x, depth-1)
			default:
				m[k] = DeepCopy(x)
			}
		}
		if r.IntN(3) == 0 {
			m[keyPool[r.IntN(len(keyPool))]] = randTree(r, depth-1)
		}
		return m
	case []any:
		l := make([]any, 0, len(v)+1)
		for _, x := range v {
			if r.IntN(3) == 0 {
				x = mutate(r, x, depth-1)
			}
			l = append(l, DeepCopy(x))
		}
		switch r.IntN(6) {
		case 0:
			l = append(l, randTree(r, depth-1))
		case 1:
			if len(l) > 0 {
				l = l[:len(l)-1]
			}
		}
		return l
	}
	return randScalar(r)
}

// scribble overwrites every scalar and map entry of v in place, to detect
// aliasing between trees.
func scribble(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			scribble(x)
			v[k] = "scribbled"
		}
		v["scribbled"] = true
	case []any:
		for i, x := range v {
			scribble(x)
			v[i] = "scribbled"
		}
	}
}

// randomPairs returns the hand-written pairs and n random trees, each
// with a changed copy.
func randomPairs(t *testing.T, r *rand.Rand, n int) [][2]any {
	all := pairs(t)
	for range n {
		a := randTree(r, 5)
		all = append(all, [2]any{a, mutate(r, a, 5)})
	}
	return all
}

func TestRoundTrip(t *testing.T) {
	all := randomPairs(t, rand.New(rand.NewPCG(1, 2)), 3000)
	for _, pair := range all {
		a, b := pair[0], pair[1]
		aBefore, bBefore := DeepCopy(a), DeepCopy(b)
		ops := Diff(a, b)
		if reflect.DeepEqual(a, b) != (ops == nil) {
			t.Fatalf("Diff(%v, %v) = %v; want nil exactly when equal", a, b, ops)
		}
		for _, op := range ops {
			p, err := Parse(op.Path)
			if err != nil || p.String() != op.Path {
				t.Fatalf("op path %q does not round-trip: %q, %v", op.Path, p, err)
			}
		}
		got, err := Apply(a, ops)
		if err != nil {
			t.Fatalf("Apply(%v, %+v): %v", a, ops, err)
		}
		if !reflect.DeepEqual(got, b) {
			t.Fatalf("Apply(a, Diff(a, b)) != b\n   a %v\n   b %v\nops %+v\n got %v", a, b, ops, got)
		}
		if again := Diff(got, b); again != nil {
			t.Fatalf("Diff(Apply(a, ops), b) = %+v, want nil", again)
		}

		// Through JSON, as history stores it.
		enc, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		var decoded []Op
		if err := json.Unmarshal(enc, &decoded); err != nil {
			t.Fatal(err)
		}
		if got, err := Apply(a, decoded); err != nil || !reflect.DeepEqual(got, b) {
			t.Fatalf("Apply(a, JSON ops %s) = %v, %v; want %v", enc, got, err, b)
		}

		// Neither Diff nor Apply touched their inputs, and the result
		// shares nothing with a, b or the ops.
		scribble(got)
		if !reflect.DeepEqual(a, aBefore) || !reflect.DeepEqual(b, bBefore) {
			t.Fatalf("inputs changed: a %v -> %v, b %v -> %v", aBefore, a, bBefore, b)
		}
		if enc2, _ := json.Marshal(ops); string(enc2) != string(enc) {
			t.Fatalf("ops changed: %s -> %s", enc, enc2)
		}
	}
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name, tree string
		ops        []Op
		want       string
	}{
		{"create intermediate maps", `{}`, []Op{{Path: "a.b.c", Value: 1.0}}, `{"a":{"b":{"c":1}}}`},
		{"replace null with map", `{"a":null}`, []Op{{Path: "a.b", Value: 1.0}}, `{"a":{"b":1}}`},
		{"from nil root", `null`, []Op{{Path: `x["y z"]`, Value: "v"}}, `{"x":{"y z":"v"}}`},
		{"delete missing key", `{"a":1}`, []Op{{Path: "b", Delete: true}, {Path: "c.d", Delete: true}}, `{"a":1}`},
		{"delete root", `{"a":1}`, []Op{{Path: "", Delete: true}}, `null`},
		{"in order", `{}`, []Op{{Path: "a", Value: []any{1.0, 2.0}}, {Path: "a[1]", Value: 3.0}}, `{"a":[1,3]}`},
		{"no ops", `{"a":1}`, nil, `{"a":1}`},
	} {
		got, err := Apply(j(t, tc.tree), tc.ops)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if want := j(t, tc.want); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, want)
		}
	}
}

func TestApplyErrors(t *testing.T) {
	tree := `{"spec":{"containers":[{"name":"web"}],"n":1}}`
	for _, tc := range []struct {
		op   Op
		want string
	}{
		{Op{Path: "spec.containers[3].name", Value: "x"}, `op 0 at "spec.containers[3].name": index 3 out of range: spec.containers has 1 elements`},
		{Op{Path: "spec.containers.name", Value: "x"}, `op 0 at "spec.containers.name": spec.containers is a list, not a map`},
		{Op{Path: "spec.n.x", Value: "x"}, `op 0 at "spec.n.x": spec.n is a number, not a map`},
		{Op{Path: "spec.n.x", Delete: true}, `op 0 at "spec.n.x": spec.n is a number, not a map`},
		{Op{Path: "spec[0]", Value: "x"}, `op 0 at "spec[0]": spec is a map, not a list`},
		{Op{Path: "[0]", Value: "x"}, `op 0 at "[0]": the root is a map, not a list`},
		{Op{Path: "spec.missing[0]", Value: "x"}, `op 0 at "spec.missing[0]": spec.missing is null, not a list`},
		{Op{Path: "spec.containers[0]", Delete: true}, `op 0 at "spec.containers[0]": cannot delete a list element; replace the whole list spec.containers`},
		{Op{Path: "spec..x", Value: "x"}, `op 0: path "spec..x": unexpected '.' at column 6; quote unusual keys as ["key"]`},
	} {
		in := j(t, tree)
		_, err := Apply(in, []Op{tc.op})
		got := "<nil>"
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("Apply(%+v):\n got %s\nwant %s", tc.op, got, tc.want)
		}
		if !reflect.DeepEqual(in, j(t, tree)) {
			t.Errorf("Apply(%+v) modified its input on error: %v", tc.op, in)
		}
	}
}

func TestChanges(t *testing.T) {
	type c = Change
	for _, tc := range []struct {
		name, a, b string
		want       []Change
	}{
		{"equal", `{"a":1}`, `{"a":1}`, nil},
		{"scalar", `{"a":1}`, `{"a":2}`, []c{{Path: "a", Old: 1.0, New: 2.0, HadOld: true, HasNew: true}}},
		{"created", `null`, `{"a":{"b":1,"c":[1,2]}}`, []c{
			{Path: "a.b", New: 1.0, HasNew: true},
			{Path: "a.c", New: []any{1.0, 2.0}, HasNew: true},
		}},
		{"container added", `{"cs":[{"name":"web","image":"v1"}]}`, `{"cs":[{"name":"web","image":"v2"},{"name":"log","env":{"A":"1"}}]}`, []c{
			{Path: "cs[0].image", Old: "v1", New: "v2", HadOld: true, HasNew: true},
			{Path: "cs[1].env.A", New: "1", HasNew: true},
			{Path: "cs[1].name", New: "log", HasNew: true},
		}},
		{"container removed", `{"cs":[{"name":"web"},{"name":"log"}]}`, `{"cs":[{"name":"web"}]}`, []c{
			{Path: "cs[1].name", Old: "log", HadOld: true},
		}},
		{"scalar list whole", `{"args":["a"]}`, `{"args":["a","b"]}`, []c{
			{Path: "args", Old: []any{"a"}, New: []any{"a", "b"}, HadOld: true, HasNew: true},
		}},
		{"map removed", `{"l":{"app":"web","tier":"db"},"x":1}`, `{"x":1}`, []c{
			{Path: "l.app", Old: "web", HadOld: true},
			{Path: "l.tier", Old: "db", HadOld: true},
		}},
		{"empty map filled", `{"l":{}}`, `{"l":{"a":"1"}}`, []c{{Path: "l.a", New: "1", HasNew: true}}},
		{"empty map added", `{}`, `{"l":{}}`, []c{{Path: "l", New: map[string]any{}, HasNew: true}}},
		{"empty list to list of maps", `{"l":[]}`, `{"l":[{"a":1}]}`, []c{{Path: "l[0].a", New: 1.0, HasNew: true}}},
		{"scalar to map", `{"a":"x"}`, `{"a":{"b":1}}`, []c{
			{Path: "a", Old: "x", HadOld: true},
			{Path: "a.b", New: 1.0, HasNew: true},
		}},
		{"map to null", `{"a":{"b":1}}`, `{"a":null}`, []c{
			{Path: "a", New: nil, HasNew: true},
			{Path: "a.b", Old: 1.0, HadOld: true},
		}},
		{"odd keys", `{}`, `{"x.y":{"":1}}`, []c{{Path: `["x.y"][""]`, New: 1.0, HasNew: true}}},
		{"numeric order", `{"l":[{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0}]}`,
			`{"l":[{"a":0},{"a":0},{"a":1},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":0},{"a":1}]}`, []c{
				{Path: "l[2].a", Old: 0.0, New: 1.0, HadOld: true, HasNew: true},
				{Path: "l[10].a", Old: 0.0, New: 1.0, HadOld: true, HasNew: true},
			}},
		{"root scalar", `1`, `2`, []c{{Path: "", Old: 1.0, New: 2.0, HadOld: true, HasNew: true}}},
	} {
		got := Changes(j(t, tc.a), j(t, tc.b))
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Changes(%s, %s)\n got %+v\nwant %+v", tc.name, tc.a, tc.b, got, tc.want)
		}
	}
}

// Every Change must agree with the trees it describes, and Changes and
// Diff must cover the same parts of the tree.
func TestChangesAgreeWithDiff(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		a := randTree(r, 5)
		b := mutate(r, a, 5)
		ops, changes := Diff(a, b), Changes(a, b)
		if (ops == nil) != (changes == nil) {
			t.Fatalf("Diff(%v, %v) = %+v but Changes = %+v", a, b, ops, changes)
		}
		var prev Path
		for i, c := range changes {
			p, err := Parse(c.Path)
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 && compare(prev, p) >= 0 {
				t.Fatalf("Changes not sorted or not unique: %q then %q", prev, p)
			}
			prev = p
			// The root counts as absent when nil.
			old, hadOld := Get(a, p)
			hadOld = hadOld && !(len(p) == 0 && a == nil)
			nw, hasNew := Get(b, p)
			hasNew = hasNew && !(len(p) == 0 && b == nil)
			if c.HadOld && !reflect.DeepEqual(c.Old, old) || c.HasNew && !reflect.DeepEqual(c.New, nw) {
				t.Fatalf("%+v disagrees with a=%v b=%v", c, old, nw)
			}
			// A side not reported must be absent, or shown through its children.
			if !c.HadOld && hadOld && !expanded(old) || !c.HasNew && hasNew && !expanded(nw) {
				t.Fatalf("%+v hides a side: a=%v (%v) b=%v (%v)", c, old, hadOld, nw, hasNew)
			}
			if !c.HadOld && !c.HasNew || c.HadOld && c.HasNew && reflect.DeepEqual(c.Old, c.New) {
				t.Fatalf("%+v is not a change", c)
			}
			if !slices.ContainsFunc(ops, func(op Op) bool { return related(p, op.Path) }) {
				t.Fatalf("%+v is unrelated to every op of %+v", c, ops)
			}
		}
		for _, op := range ops {
			if !slices.ContainsFunc(changes, func(c Change) bool { p, _ := Parse(c.Path); return related(p, op.Path) }) {
				t.Fatalf("op %+v has no related change in %+v (a=%v b=%v)", op, changes, a, b)
			}
		}
	}
}

// related reports whether one of the paths contains the other: Changes
// descends further than Diff into added and resized nodes, and shows
// lists of scalars whole where Diff descends into them.
func related(p Path, s string) bool {
	q, _ := Parse(s)
	return p.HasPrefix(q) || q.HasPrefix(p)
}

func expanded(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		return len(v) > 0
	case []any:
		return len(v) > 0
	}
	return false
}

func TestDeepCopy(t *testing.T) {
	for _, v := range []any{nil, 1.0, "s", true, map[string]any(nil), []any(nil), map[string]any{}, []any{}, podTree("x")} {
		c := DeepCopy(v)
		if !reflect.DeepEqual(c, v) {
			t.Errorf("DeepCopy(%v) = %v", v, c)
		}
	}
	orig := podTree("x")
	c := DeepCopy(orig)
	scribble(c)
	if !reflect.DeepEqual(orig, podTree("x")) {
		t.Errorf("DeepCopy shares state with its input")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a.b[0]", `a["x.y"]["\""]`, "[3]", `x["\u00e9"]`, "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		q, err := Parse(p.String())
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("Parse(%q) = %#v; Parse(%q) = %#v, %v", s, p, p.String(), q, err)
		}
	})
}

// Equal agrees with reflect.DeepEqual on JSON trees and on what else
// may sit in one.
func TestEqualIsDeepEqual(t *testing.T) {
	vals := []any{nil, "a", "b", 1.0, 2.0, 1, true, false,
		map[string]any(nil), map[string]any{}, map[string]any{"a": 1.0}, map[string]any{"a": 2.0}, map[string]any{"b": 1.0},
		map[string]any{"a": []any{1.0, "x"}}, map[string]any{"a": []any{1.0, "y"}},
		[]any(nil), []any{}, []any{1.0}, []any{1.0, 2.0}, []any{map[string]any{"a": nil}}, []any{map[string]any{}},
		map[string]string{"a": "b"}, []string{"a"}}
	for _, a := range vals {
		for _, b := range vals {
			if got, want := Equal(a, b), reflect.DeepEqual(a, b); got != want {
				t.Errorf("Equal(%#v, %#v) = %v, reflect.DeepEqual says %v", a, b, got, want)
			}
		}
	}
}

// refChanges is Changes as it was written first, with a map of children
// per node: the walk without those maps must give the same lines.
func refChanges(a, b any) []Change {
	var out []entry[Change]
	refWalk(Path{}, a, a != nil, b, b != nil, &out)
	for i := range out {
		out[i].v.Path = out[i].path.String()
	}
	return sortedByPath(out)
}

func refWalk(p Path, a any, hadA bool, b any, hasB bool, out *[]entry[Change]) {
	if hadA == hasB && reflect.DeepEqual(a, b) {
		return
	}
	lists := hasComposite(a) || hasComposite(b)
	kids := func(v any, present bool) map[Elem]any {
		if !present {
			return nil
		}
		switch v := v.(type) {
		case map[string]any:
			c := map[Elem]any{}
			for k, x := range v {
				c[Key(k)] = x
			}
			return c
		case []any:
			if lists || len(v) == 0 {
				c := map[Elem]any{}
				for i, x := range v {
					c[Index(i)] = x
				}
				return c
			}
		}
		return nil
	}
	ac, bc := kids(a, hadA), kids(b, hasB)
	same := reflect.TypeOf(a) == reflect.TypeOf(b)
	if len(ac) == 0 && !(same && len(bc) > 0) {
		ac = nil
	}
	if len(bc) == 0 && !(same && len(ac) > 0) {
		bc = nil
	}
	q := slices.Clone(p)
	if ac == nil && bc == nil {
		*out = append(*out, entry[Change]{q, Change{Old: a, New: b, HadOld: hadA, HasNew: hasB}})
		return
	}
	if ac == nil && hadA {
		*out = append(*out, entry[Change]{q, Change{Old: a, HadOld: true}})
	}
	if bc == nil && hasB {
		*out = append(*out, entry[Change]{q, Change{New: b, HasNew: true}})
	}
	keys := map[Elem]bool{}
	for e := range ac {
		keys[e] = true
	}
	for e := range bc {
		keys[e] = true
	}
	for e := range keys {
		x, hx := ac[e]
		y, hy := bc[e]
		refWalk(p.child(e), x, hx, y, hy, out)
	}
}

// randPath returns a path into v, often an existing one, sometimes one
// going past what exists, through scalars, out of range or nowhere.
func randPath(r *rand.Rand, v any) Path {
	var p Path
	for r.IntN(5) != 0 {
		switch x := v.(type) {
		case map[string]any:
			if len(x) > 0 && r.IntN(4) != 0 {
				keys := slices.Sorted(maps.Keys(x))
				k := keys[r.IntN(len(keys))]
				p, v = append(p, Key(k)), x[k]
				continue
			}
		case []any:
			if r.IntN(6) != 0 {
				i := r.IntN(len(x) + 1)
				p = append(p, Index(i))
				if i < len(x) {
					v = x[i]
				} else {
					v = nil
				}
				continue
			}
		}
		p, v = append(p, Key(keyPool[r.IntN(len(keyPool))])), nil
	}
	return p
}

// randOps returns a few sets and deletes at random paths of v.
func randOps(r *rand.Rand, v any) []Op {
	var ops []Op
	for range 1 + r.IntN(4) {
		op := Op{Path: randPath(r, v).String()}
		if r.IntN(4) == 0 {
			op.Delete = true
		} else {
			op.Value = randTree(r, 2)
		}
		ops = append(ops, op)
	}
	return ops
}

// The walk without per-node maps agrees with the first one, on
// hand-written pairs, random changes, and trees sharing their unchanged
// parts (as ApplyEdits makes them).
func TestChangesAgreeWithReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	all := randomPairs(t, r, 3000)
	for range 3000 {
		a := randTree(r, 5)
		es, err := Edits(randOps(r, a))
		if err != nil {
			t.Fatal(err)
		}
		if b, err := ApplyEdits(a, es); err == nil {
			all = append(all, [2]any{a, b})
		}
	}
	for _, pair := range all {
		a, b := pair[0], pair[1]
		got, want := Changes(a, b), refChanges(a, b)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Changes(%v, %v)\n got %+v\nwant %+v", a, b, got, want)
		}
		paths := ChangedPaths(a, b)
		if len(paths) != len(got) {
			t.Fatalf("ChangedPaths = %v, Changes = %+v", paths, got)
		}
		for i, p := range paths {
			if p.String() != got[i].Path {
				t.Fatalf("ChangedPaths[%d] = %q, Changes has %q", i, p, got[i].Path)
			}
		}
	}
}

// ApplyEdits gives what Apply gives, result or error, without changing
// its input, and shares with it every map and list the edits do not pass
// through or replace.
func TestApplyEditsCopiesOnWrite(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for n := range 5000 {
		a := randTree(r, 5)
		var ops []Op
		if n%3 == 0 {
			ops = Diff(a, mutate(r, a, 5))
		} else {
			ops = randOps(r, a)
		}
		before := DeepCopy(a)
		want, wantErr := Apply(a, ops)
		es, err := Edits(ops)
		if err != nil {
			t.Fatal(err)
		}
		got, gotErr := ApplyEdits(a, es)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("ApplyEdits(%v, %+v) = %v, %v; Apply gives %v, %v", a, ops, got, gotErr, want, wantErr)
		}
		if !reflect.DeepEqual(a, before) {
			t.Fatalf("ApplyEdits(%v, %+v) changed its input: was %v", a, ops, before)
		}
		if gotErr == nil {
			checkShared(t, a, got, nil, es)
		}
	}
}

// checkShared fails unless every map and list of old that no edit passes
// through or ends at or below is the very same one in new.
func checkShared(t *testing.T, old, new any, at Path, edits []Edit) {
	t.Helper()
	if slices.ContainsFunc(edits, func(e Edit) bool { return at.HasPrefix(e.At) }) {
		return // replaced or below a replaced node: anything goes
	}
	if !slices.ContainsFunc(edits, func(e Edit) bool { return below(e.At, at, 0) }) {
		switch o := old.(type) {
		case map[string]any:
			if n, ok := new.(map[string]any); !ok || !sameMap(o, n) {
				t.Fatalf("%q: %v was copied to %v, though no edit touches it", at, old, new)
			}
		case []any:
			if n, ok := new.([]any); !ok || len(o) > 0 && !sameList(o, n) {
				t.Fatalf("%q: %v was copied to %v, though no edit touches it", at, old, new)
			}
		}
		return
	}
	switch o := old.(type) {
	case map[string]any:
		n, _ := new.(map[string]any)
		for k, x := range o {
			if y, ok := n[k]; ok {
				checkShared(t, x, y, at.child(Key(k)), edits)
			}
		}
	case []any:
		n, _ := new.([]any)
		for i := range min(len(o), len(n)) {
			checkShared(t, o[i], n[i], at.child(Index(i)), edits)
		}
	}
}

func TestApplyWildcard(t *testing.T) {
	_, err := Apply(j(t, `{"l":[1,2]}`), []Op{{Path: "l[*]", Value: 3.0}})
	want := `op 0 at "l[*]": [*] names every element of l; write one element, or the whole list`
	if err == nil || err.Error() != want {
		t.Errorf("Apply at l[*]: %v, want %s", err, want)
	}
}

func TestExpand(t *testing.T) {
	tree := j(t, `{"cs":[{"name":"a","ports":[{"p":1},{"p":2}]},{"name":"b"},"x",{"name":"d","ports":[]}],"m":{"k":null}}`)
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"cs[*].name", []string{"cs[0].name", "cs[1].name", "cs[3].name"}},
		{"cs[*].ports[*].p", []string{"cs[0].ports[0].p", "cs[0].ports[1].p"}},
		{"cs[*]", []string{"cs[0]", "cs[1]", "cs[2]", "cs[3]"}},
		{"cs[1].name", []string{"cs[1].name"}},
		{"cs[4].name", nil},
		{"m.k", []string{"m.k"}},
		{"m.k.x", nil},
		{"m[*]", nil},
		{"nothing[*].x", nil},
		{"", []string{""}},
	} {
		var got []string
		for _, p := range Expand(tree, mustParse(t, tc.path)) {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Expand(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
	// The paths share no memory: changing one leaves the others.
	ps := Expand(tree, mustParse(t, "cs[*].ports[*].p"))
	ps[0][3] = Index(9)
	if ps[1].String() != "cs[0].ports[1].p" {
		t.Errorf("paths share memory: %q", ps[1])
	}
}

func mustParse(t *testing.T, s string) Path {
	t.Helper()
	p, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
