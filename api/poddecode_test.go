package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// podSpecSamples are spec trees, as JSON, that reach every field of a pod
// spec with good values, wrong types, nulls, unknown fields and big numbers.
var podSpecSamples = []string{
	`{"containers":[{"name":"app","image":"busybox:1","resources":{"cpu":"100m","memory":"128Mi"}}]}`,
	`{"containers":[{"name":"app","image":"registry.example.com:5000/a/b:1@sha256:00","command":["sh","-c"],"args":["echo hi",""],
	  "env":{"A":"1","B_2":"","A.B":"x"},"workingDir":"/srv","user":"1000:1000","resources":{"cpu":"0.5","memory":"1.5Gi"},
	  "after":["side"],"requires":["side"]},{"name":"side","image":"busybox"}],
	  "restart":"on-failure","failover":"fast","privileges":["root","hostPath:/srv:ro","capability:NET_ADMIN"],
	  "placement":{"nodeSelector":{"region":"home","example.com/disk":"ssd"},"tolerations":[{"key":"dedicated","value":"gpu","effect":"NoSchedule"},{"key":"k"}],
	  "score":"binpack","spread":"zone"},"keepImages":["busybox:2"]}`,
	`null`, `{}`, `[]`, `"spec"`, `1`, `true`,
	`{"containers":null}`, `{"containers":[]}`, `{"containers":[null]}`, `{"containers":[{}]}`, `{"containers":{}}`,
	`{"containers":[{"name":"app","image":"x","command":[],"args":[],"env":{},"after":[],"requires":[]}],"privileges":[],"keepImages":[]}`,
	`{"containers":[{"name":"app","image":"x","command":null,"env":null,"resources":null}],"placement":null,"restart":null}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{}}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{"nodeSelector":{},"tolerations":[]}}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{"tolerations":[null,{}]}}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":5}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{"nodeSelector":{"a":1,"b":true,"c":null}}}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{"nodeSelector":[]}}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{"tolerations":[{"key":1}]}}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{"tolerations":[{"key":"a","operator":"Exists"}]}}`,
	`{"containers":[{"name":"app","image":"x"}],"placement":{"affinity":{},"score":1}}`,
	`{"containers":[{"name":"Bad","image":"x"}]}`,
	`{"containers":[{"name":"","image":"x","after":[""]}]}`,
	`{"containers":[{"name":1,"image":2}]}`,
	`{"containers":[{"name":12345678901234567890,"image":1e300}]}`,
	`{"containers":[{"name":-0,"image":1.5}]}`,
	`{"containers":[{"name":"a","image":"x","resources":{"cpu":"1x","memory":"64MB"}}]}`,
	`{"containers":[{"name":"a","image":"x","resources":{"cpu":100,"memory":"64Mi"}}]}`,
	`{"containers":[{"name":"a","image":"x","resources":{"cpus":"1"}}]}`,
	`{"containers":[{"name":"a","image":"x","resources":[]}]}`,
	`{"containers":[{"name":"a","image":"x","env":{"B":1,"A":2}}]}`,
	`{"containers":[{"name":"a","image":"x","env":{"b.c":1,"A":"2"}}]}`,
	`{"containers":[{"name":"a","image":"x","env":{"":1}}]}`,
	`{"containers":[{"name":"a","image":"x","env":{"1A":"x"}}]}`,
	`{"containers":[{"name":"a","image":"x","env":"A=1"}]}`,
	`{"containers":[{"name":"a","image":"x","command":"sh"}]}`,
	`{"containers":[{"name":"a","image":"x","command":["sh",1]}]}`,
	`{"containers":[{"name":"a","image":"x","args":[null,"a"]}]}`,
	`{"containers":[{"name":"a","image":"x","after":["B"]}]}`,
	`{"containers":[{"name":"a","image":"x","requires":[true]}]}`,
	`{"containers":[{"name":"a","image":"x","Image":"y"}]}`,
	`{"containers":[{"name":"a","image":"x","imag":"y"}]}`,
	`{"containers":[{"name":"a","image":"x","zzz":"y","aaa":"y"}]}`,
	`{"containers":[{"name":"a","image":"x","workingDir":["/"]}]}`,
	`{"containers":[{"name":"a","image":"x"},{"name":"a","image":"x"}]}`,
	`{"containers":[{"name":"a","image":"x"},{"name":"b","image":1}]}`,
	`{"containers":[{"name":"a","image":"x"}],"privileges":["root","root"]}`,
	`{"containers":[{"name":"a","image":"x"}],"privileges":["sudo"]}`,
	`{"containers":[{"name":"a","image":"x"}],"privileges":[""]}`,
	`{"containers":[{"name":"a","image":"x"}],"privileges":"root"}`,
	`{"containers":[{"name":"a","image":"x"}],"restart":"sometimes","failover":"slow"}`,
	`{"containers":[{"name":"a","image":"x"}],"restart":false}`,
	`{"containers":[{"name":"a","image":"x"}],"keepImages":[1]}`,
	`{"containers":[{"name":"a","image":"x"}],"keepImages":["Upper"]}`,
	`{"containers":[{"name":"a","image":"x"}],"Containers":[]}`,
	`{"kind":"Pod","containers":[{"name":"a","image":"x"}]}`,
	`{"":1,"containers":[{"name":"a","image":"x"}]}`,
	`{"a b":1,"containers":5}`,
	`{"zzz":1,"containers":5}`,
	`{"containers":[{"name":"a","image":"bad \u00e9\u2028"}],"restart":"\u00e9"}`,
}

// decodeReflect is the reflective path the hand-written decoder replaces.
func decodeReflect(tree any) (*PodSpec, error) {
	p := new(PodSpec)
	if err := decodeInto(tree, reflect.ValueOf(p).Elem(), "spec"); err != nil {
		return nil, err
	}
	return p, nil
}

func decodeByHand(tree any) (*PodSpec, error) {
	p := new(PodSpec)
	if err := decodePodSpec(tree, p); err != nil {
		return nil, within("spec", err)
	}
	return p, nil
}

// jsonTree is toTree's long way: encoding/json and back.
func jsonTree(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkPodSpec holds the hand-written decoder and encoder to the
// reflective decoder and encoding/json on one tree.
func checkPodSpec(t *testing.T, name string, tree any) {
	t.Helper()
	want, werr := decodeReflect(tree)
	got, gerr := decodeByHand(tree)
	if !sameDecode(t, name, got, want, gerr, werr) {
		return
	}
	// Encode the defaulted spec, as Normalize does, whether or not it is valid.
	got.Default()
	if m, ok := got.tree(); ok {
		if w := jsonTree(t, got); !reflect.DeepEqual(m, w) {
			t.Fatalf("%s: tree\n got %#v\nwant %#v", name, m, w)
		}
	}
}

// TestPodSpecDecoder: the hand-written pod spec decoder gives decodeInto's
// spec or error, and its encoder encoding/json's tree.
func TestPodSpecDecoder(t *testing.T) {
	for _, s := range podSpecSamples {
		var tree any
		if err := json.Unmarshal([]byte(s), &tree); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		checkPodSpec(t, s, tree)
	}
	// Trees built in Go rather than decoded from JSON hold other types.
	for i, tree := range []any{
		map[string]any{"containers": []map[string]any{{"name": "a"}}},
		map[string]any{"containers": []any{map[string]string{"name": "a"}}},
		map[string]any{"containers": []any{map[string]any{"name": Name("a"), "image": 1}}},
		map[string]any{"containers": []any{map[string]any{"name": "a", "image": "x", "command": []string{"sh"}}}},
		map[string]any{"containers": []any{map[string]any{"name": "a", "image": "x", "env": map[string]string{"A": "1"}}}},
		map[string]any{"containers": []any{map[string]any{"name": "a", "image": "x", "env": map[string]any{"A": 1, "B": int64(2)}}}},
		map[string]any{"containers": []any{map[string]any{"name": "a", "image": "x", "resources": map[string]any{"cpu": 0.25}}}},
		map[string]any{"restart": []byte("always")},
		// Strings that are not UTF-8, which encoding/json rewrites.
		map[string]any{"containers": []any{map[string]any{"name": "a", "image": "x\xff", "env": map[string]any{"A": "\xfe\xff"}}}},
		map[string]any{"containers": []any{map[string]any{"name": "a", "image": "x", "env": map[string]any{"\xff": "1", "\xfe": "2"}}}},
	} {
		checkPodSpec(t, fmt.Sprintf("Go tree %d", i), tree)
	}
}

// sameDecode fails the test unless both decoders gave the same value or
// the same error; it reports whether they gave a value.
func sameDecode(t *testing.T, name string, got, want any, gerr, werr error) bool {
	t.Helper()
	if werr != nil || gerr != nil {
		var wfe, gfe *FieldError
		if !errors.As(werr, &wfe) || !errors.As(gerr, &gfe) || *wfe != *gfe {
			t.Fatalf("%s: error\n got %#v\nwant %#v", name, gerr, werr)
		}
		return false
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: decoded\n got %#v\nwant %#v", name, got, want)
	}
	return true
}

// TestPodSpecCodecCoversEveryField: a pod spec and an envelope with every
// field set decode and encode as the reflective path and encoding/json do,
// so that a field added to the types but not to the hand-written code
// fails here.
func TestPodSpecCodecCoversEveryField(t *testing.T) {
	var p PodSpec
	fill(reflect.ValueOf(&p).Elem())
	tree := jsonTree(t, &p)
	checkPodSpec(t, "every field", tree)
	if got, err := decodeByHand(tree); err != nil || !reflect.DeepEqual(got, &p) {
		t.Fatalf("every field: decoded\n got %#v, %v\nwant %#v", got, err, &p)
	}
	var d manifestDoc
	fill(reflect.ValueOf(&d).Elem())
	checkManifestDoc(t, "every envelope field", jsonTree(t, &d))
}

// fill sets every field of v, recursively, to a non-zero value.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		for _, s := range []string{"a", "1", "root"} { // one its Check passes, if it has one
			v.SetString(s)
			if c, ok := v.Addr().Interface().(checker); !ok || c.Check() == nil {
				break
			}
		}
	case reflect.Interface:
		v.Set(reflect.ValueOf("a"))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Map:
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e)
		v.Set(reflect.MakeMap(v.Type()))
		v.SetMapIndex(reflect.ValueOf("a"), e)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	default:
		panic("fill: " + v.Type().String())
	}
}

// checkManifestDoc holds the envelope's decoder to decodeInto.
func checkManifestDoc(t *testing.T, name string, tree any) {
	t.Helper()
	var want, got manifestDoc
	werr := decodeInto(tree, reflect.ValueOf(&want).Elem(), "")
	gerr := decodeManifestDoc(tree, &got)
	sameDecode(t, name, got, want, gerr, werr)
}

// TestManifestDocDecoder: the envelope of a created object decodes as
// decodeInto decodes it.
func TestManifestDocDecoder(t *testing.T) {
	for _, s := range []string{
		`{"kind":"Pod","name":"p","namespace":"ns","labels":{"a":"1"},"spec":{"containers":[]},"status":{"x":null},"meta":{"revision":1}}`,
		`{"kind":"Pod","name":"p","labels":null,"spec":null,"status":null,"meta":null}`,
		`{"kind":"Pod","name":"p","labels":{"a":1,"b.c":2},"spec":[]}`,
		`{"kind":"Pod","name":"p","labels":{"b.c":2}}`,
		`{"kind":1,"name":true,"namespace":[]}`,
		`{"Kind":"Pod","kind":"Pod","nmae":"p"}`,
		`{"kind":"Pod","spec":"x","status":1,"meta":true}`,
		`{"kind":"Pod","extra":{},"apiVersion":"v1"}`,
		`[]`, `null`, `"Pod"`,
	} {
		var tree any
		if err := json.Unmarshal([]byte(s), &tree); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		checkManifestDoc(t, s, tree)
	}
}

// decodeObjectReflect is DecodeObject as it was, with encoding/json's
// decoder and the reflective decoders throughout.
func decodeObjectReflect(data []byte) (Object, error) {
	tree, err := decodeBody(data)
	if err != nil {
		return Object{}, err
	}
	var d manifestDoc
	if err := decodeInto(tree, reflect.ValueOf(&d).Elem(), ""); err != nil {
		return Object{}, err
	}
	k, err := LookupKind(d.Kind)
	if err != nil || k.Name != "Pod" {
		return Normalize(Object{Kind: d.Kind, Name: d.Name, Namespace: d.Namespace, Labels: d.Labels, Spec: d.Spec})
	}
	// Kind, name, namespace and labels are checked first, as they were.
	o, _, err := ValidateObject(Object{Kind: d.Kind, Name: d.Name, Namespace: d.Namespace, Labels: d.Labels,
		Spec: map[string]any{"containers": []any{map[string]any{"name": "a", "image": "b"}}}})
	if err != nil {
		return Object{}, err
	}
	var spec any
	if d.Spec != nil {
		spec = d.Spec
	}
	ps, err := decodeReflect(spec)
	if err != nil {
		return Object{}, err
	}
	ps.Default()
	if err := ps.Validate(); err != nil {
		return Object{}, within("spec", err)
	}
	b, err := json.Marshal(ps)
	if err != nil {
		return Object{}, err
	}
	o.Spec = nil
	return o, json.Unmarshal(b, &o.Spec)
}

// checkDecodeObject holds DecodeObject to the way it was.
func checkDecodeObject(t *testing.T, data []byte) {
	t.Helper()
	want, werr := decodeObjectReflect(data)
	got, gerr := DecodeObject(data)
	if fmt.Sprint(werr) != fmt.Sprint(gerr) {
		t.Fatalf("%q: error\n got %v\nwant %v", data, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %#v\nwant %#v", data, got, want)
	}
}

// TestDecodeObjectAsBefore: objects and errors of DecodeObject are what
// encoding/json and the reflective decoders gave.
func TestDecodeObjectAsBefore(t *testing.T) {
	bodies := append([]string(nil), treeSamples...)
	for _, s := range podSpecSamples {
		bodies = append(bodies, `{"kind":"Pod","name":"p","spec":`+s+`}`)
	}
	bodies = append(bodies, `{"kind":"Pod","name":"p"} ]`, `{"kind":"Pod","name":"p"} {}`, `{"kind":"Pod","name":"p"} x`, "", " ",
		`{"kind":"Node","name":"n","spec":{"taints":[{"key":"k","effect":"NoSchedule"}]}}`, `{"kind":"Pod","name":"p","labels":{"a":"-"}}`)
	for _, b := range bodies {
		checkDecodeObject(t, []byte(b))
	}
}

// TestNormalizePodSpec: what Normalize stores for a pod spec is what the
// reflective decoder and encoding/json made of it, defaults included.
func TestNormalizePodSpec(t *testing.T) {
	in := `{"containers":[{"name":"app","image":"busybox:1","resources":{"cpu":"100m"},"command":[]}],"placement":{},"privileges":[]}`
	var spec map[string]any
	if err := json.Unmarshal([]byte(in), &spec); err != nil {
		t.Fatal(err)
	}
	o, err := Normalize(Object{Kind: "pod", Name: "p", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(o.Spec)
	want := `{"containers":[{"image":"busybox:1","name":"app","resources":{"cpu":"100m"}}],"failover":"manual","placement":{},"restart":"always"}`
	if string(got) != want {
		t.Fatalf("normalized spec\n got %s\nwant %s", got, want)
	}
}

// FuzzPodSpecDecoder builds spec trees from the fuzzer's bytes, out of the
// pod spec's field names, a few unknown ones, and values of every type,
// and holds the hand-written decoder and encoder to the reflective ones.
func FuzzPodSpecDecoder(f *testing.F) {
	f.Add([]byte{5, 3, 0, 4, 1, 5, 2, 1, 0, 1, 1})
	f.Add([]byte{5, 6, 0, 4, 2, 5, 3, 1, 0, 1, 1, 7, 5, 2, 14, 1, 2, 15, 1, 3})
	f.Add([]byte{5, 2, 6, 5, 2, 17, 5, 1, 18, 4, 1, 5, 1, 19, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &treeGen{data: data}
		tree := g.value(0)
		name := fmt.Sprintf("%#v", tree)
		checkPodSpec(t, name, tree)
		checkManifestDoc(t, name, tree)
	})
}

// treeGen makes a tree from bytes; when they run out, every choice is 0.
type treeGen struct {
	data []byte
}

func (g *treeGen) next(n int) int {
	if len(g.data) == 0 {
		return 0
	}
	b := g.data[0]
	g.data = g.data[1:]
	return int(b) % n
}

var (
	genKeys = []string{"containers", "restart", "failover", "privileges", "placement", "keepImages",
		"name", "image", "command", "args", "env", "workingDir", "user", "resources", "after", "requires",
		"cpu", "memory", "nodeSelector", "tolerations", "score", "spread", "key", "value", "effect",
		"kind", "namespace", "labels", "spec", "status", "meta",
		"Containers", "imag", "zone", "", "A.B", "1x", "A"}
	genStrings = []string{"", "app", "side", "busybox:1", "Upper", "100m", "0.5", "1x", "128Mi", "64MB", "root",
		"hostPath:/srv", "sudo", "always", "never", "fast", "spread", "NoSchedule", "zone", "1000", "0", "a b", "x\xff", "\u00e9"}
	genNumbers = []float64{0, 1, -1, 1.5, 1e300, 12345678901234567890, 100}
)

func (g *treeGen) value(depth int) any {
	kinds := 8
	if depth > 4 {
		kinds = 4 // no more containers
	}
	switch g.next(kinds) {
	case 0:
		return nil
	case 1:
		return genStrings[g.next(len(genStrings))]
	case 2:
		return genNumbers[g.next(len(genNumbers))]
	case 3:
		return g.next(2) == 1
	case 4:
		l := make([]any, g.next(4))
		for i := range l {
			l[i] = g.value(depth + 1)
		}
		return l
	case 5, 6:
		m := map[string]any{}
		for n := g.next(5); n > 0; n-- {
			m[genKeys[g.next(len(genKeys))]] = g.value(depth + 1)
		}
		return m
	default: // Go types a tree built in Go may hold
		switch g.next(3) {
		case 0:
			return []string{genStrings[g.next(len(genStrings))]}
		case 1:
			return map[string]string{genKeys[g.next(len(genKeys))]: genStrings[g.next(len(genStrings))]}
		default:
			return g.next(3)
		}
	}
}

func benchPodSpec() map[string]any {
	return map[string]any{"containers": []any{map[string]any{"name": "app", "image": "busybox:1",
		"resources": map[string]any{"cpu": "100m", "memory": "128Mi"}}}}
}

func BenchmarkDecodePodSpec(b *testing.B) {
	spec := benchPodSpec()
	b.Run("reflect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			decodeReflect(spec)
		}
	})
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			decodeByHand(spec)
		}
	})
}

func BenchmarkNormalizePod(b *testing.B) {
	o := Object{Kind: "Pod", Namespace: "bench", Name: "p000001", Spec: benchPodSpec()}
	b.ReportAllocs()
	for b.Loop() {
		Normalize(o)
	}
}
