package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// A pod as the store writes it, with odd corners of JSON in its spec.
const podJSON = `{"kind":"Pod","name":"p000001","namespace":"default","labels":{"app":"web","skiff.dev/bench":"schedule"},"spec":{"containers":[{"image":"busybox:1","name":"app","resources":{"cpu":"100m","memory":"128Mi"},"env":{"A":"x\u00e9\ud83d\ude00\"\\\/\n","B":null}}],"restart":"always","n":[-0,1.5,1e300,-2.5E-7,12345678901234567890]},"status":{"containers":[{"image":"busybox:1","name":"app","restarts":0,"startedAt":"2026-11-24T23:08:21.123456789Z","state":"running"}],"message":"","node":"sim-00001","phase":"Running"},"meta":{"revision":4,"generation":1,"created":"2026-11-24T23:08:21.123Z","updated":"2026-11-24T23:08:22.5Z","owner":"pinneddeployment/web"}}`

const nodeJSON = `{"kind":"Node","name":"sim-00001","labels":{"skiff.dev/simulator":"sim"},"status":{"capacity":{"cpuMilli":16000,"memoryBytes":68719476736,"pods":110},"pods":3,"state":"ready"},"meta":{"revision":1,"generation":1,"created":"2026-11-24T23:08:21Z","updated":"2026-11-24T23:08:21Z","deleting":"2026-11-24T23:09:00.001Z"}}`

const workItemJSON = `{"id":"r1-start-1","run":"r1","step":"start","controller":"agent","where":"node","node":"sim-00001","kind":"Pod","namespace":"default","name":"p000001","generation":1,"phase":"apply","attempt":1,"timeout":300000000000,"object":{"kind":"Pod","name":"p000001","spec":{"containers":[{"image":"busybox:1","name":"app"}]},"status":{"node":"sim-00001"}}}`

// Answers of each kind the fast decoders take, realistic and odd: what
// they decode must be what encoding/json decodes, errors alike.
var answerSamples = map[string][]string{
	"object": {
		podJSON, nodeJSON, podJSON + "\n", podJSON + " trailing", "null", "", " ", "[]", `{}`,
		`{"kind":"Pod","name":"x","extra":1}`, `{"Kind":"Pod","NAME":"case"}`, `{"kind":"Pod","name":"x","meta":{"revision":1.5}}`,
		`{"kind":"Pod","name":"lone \ud800"}`, `{"kind":"Pod","name":"bad utf8 ` + "\xff" + `"}`, `{"kind":"Pod","name":"x"`,
	},
	"write": {
		`{"op":"created","object":` + podJSON + "}\n", `{"op":"unchanged","object":null}`, `{"op":null}`, `{}`, `null`,
		`{"op":"configured","object":` + podJSON + `,"object":{"status":{"phase":"Failed","x":1}}}`,
		`{"op":"deleted","object":` + nodeJSON + `,"more":true}`, `{"op":1,"object":{}}`, `{"op":"x","object":[]}`,
		`{"op":"x","object":{"kind":"Pod","name":"x","spec":{"a":[1,]}}}`, `{"OP":"created"}`,
	},
	"list": {
		`{"items":[` + podJSON + `,` + nodeJSON + `],"revision":12345}` + "\n", `{"items":[],"revision":1}`, `{"items":null,"revision":1}`,
		`{"items":[null,` + podJSON + `]}`, `{"items":[` + podJSON + `],"items":[{"kind":"Node"}]}`, `{"revision":"1"}`,
		`{"revision":1e3}`, `{"revision":-0}`, `{"revision":null}`, `{"items":{}}`, `{"items":[1]}`, `{"items":[` + podJSON + `,]}`,
		`{"items":[],"unknown":{"a":[1,2]}}`, `{"items":[],"revision":99999999999999999999}`,
	},
	"work": {
		`[` + workItemJSON + `,` + workItemJSON + "]\n", `[]`, `null`, `[null]`, `[{}]`, `{}`,
		strings.Replace(workItemJSON, `"attempt":1`, `"attempt":1.0`, 1), strings.Replace(workItemJSON, `"attempt":1`, `"attempt":null`, 1),
		strings.Replace(workItemJSON, `"timeout":300000000000`, `"timeout":"5m"`, 1), strings.Replace(workItemJSON, `"id"`, `"ID"`, 1),
		`[` + strings.Replace(workItemJSON, `"object":{`, `"object":{"x":"\u003c\u2028",`, 1) + `]`,
		`[` + strings.Replace(workItemJSON, `"object":{`, `"object":null,"object":{`, 1) + `]`,
		`[` + strings.Replace(workItemJSON, `"run":"r1"`, `"run":"r1","future":{"a":1}`, 1) + `]`,
		`[{"attempt":9223372036854775807,"generation":-1}]`, `[{"attempt":9223372036854775808}]`, `[` + workItemJSON,
	},
	"done": {
		`[{"id":"r1-start-1"},{"id":"r2-netup-1","error":{"error":"work item r2-netup-1 is no longer current","code":"conflict","status":409}}]` + "\n",
		`[]`, `null`, `[null]`, `[{}]`, `{}`, `[{"id":"a","error":null}]`, `[{"id":"a","error":{"status":409},"error":{"code":"x"}}]`,
		`[{"id":"a","error":{"status":"409"}}]`, `[{"id":"a","error":{"status":4.09e2}}]`, `[{"ID":"a"}]`, `[{"id":"a","more":1}]`,
		`[{"id":"a","error":{"error":"x","extra":[1]}}]`, `[{"id":"a"}`, `[{"id":"a"}] [`,
	},
}

// newAnswer returns a fresh value of the kind of answer named.
func newAnswer(kind string) any {
	switch kind {
	case "object":
		return new(api.Object)
	case "write":
		return new(WriteResult)
	case "list":
		return new(ListResult)
	case "work":
		return new([]workflow.WorkItem)
	case "done":
		return new([]workDone)
	}
	panic(kind)
}

// checkAnswer holds decodeAnswer to json.NewDecoder(...).Decode, which
// the client used before.
func checkAnswer(t *testing.T, kind string, data []byte) {
	t.Helper()
	want, got := newAnswer(kind), newAnswer(kind)
	werr := json.NewDecoder(bytes.NewReader(data)).Decode(want)
	gerr := decodeAnswer(data, got)
	if fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Fatalf("%s %q: error %v, encoding/json %v", kind, data, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s %q:\n got %#v\nwant %#v", kind, data, got, want)
	}
}

func TestDecodeAnswerMatchesEncodingJSON(t *testing.T) {
	for kind, samples := range answerSamples {
		for _, s := range samples {
			checkAnswer(t, kind, []byte(s))
		}
	}
}

// TestDecodeAnswerFast: the answers a server writes take the fast path
// (or the tests above would pass with encoding/json alone).
func TestDecodeAnswerFast(t *testing.T) {
	for kind, s := range map[string]string{"object": podJSON + "\n", "write": answerSamples["write"][0], "list": answerSamples["list"][0], "work": answerSamples["work"][0], "done": answerSamples["done"][0]} {
		if _, ok := readAnswer([]byte(s), newAnswer(kind)); !ok {
			t.Errorf("%s: %s went to encoding/json", kind, s)
		}
	}
}

// TestDecodeBody: a body read whole, or one that breaks off, small or
// larger than a buffer, decodes as the streaming decoder did: its value,
// its error, or the value if it was whole before the break.
func TestDecodeBody(t *testing.T) {
	broken := errors.New("stream reset")
	list := `{"items":[` + strings.Repeat(podJSON+",", 99) + podJSON + `],"revision":7}` + "\n"
	for _, body := range []string{podJSON[:100], podJSON, podJSON + "\n", list, list[:5000], list[:len(list)-1], list[:len(list)-3]} {
		readers := map[string]func() io.Reader{
			"whole":    func() io.Reader { return strings.NewReader(body) },
			"by bytes": func() io.Reader { return iotest.OneByteReader(strings.NewReader(body)) },
			"broken": func() io.Reader {
				return io.MultiReader(iotest.HalfReader(strings.NewReader(body)), iotest.ErrReader(broken))
			},
		}
		for name, reader := range readers {
			for _, kind := range []string{"object", "list"} {
				want, got := newAnswer(kind), newAnswer(kind)
				werr := json.NewDecoder(reader()).Decode(want)
				gerr := decodeBody(reader(), got)
				if fmt.Sprint(gerr) != fmt.Sprint(werr) || !reflect.DeepEqual(got, want) {
					t.Fatalf("%s %s %.40q…: %v %#v, encoding/json %v %#v", name, kind, body, gerr, got, werr, want)
				}
			}
		}
	}
}

var watchSamples = []string{
	`{"type":"created","object":` + podJSON + `,"revision":7}`,
	`{"type":"deleted","object":` + nodeJSON + `,"revision":8}`,
	`{"error":"watch: revision 3 was compacted"}`,
	`{"type":"configured","object":null,"revision":null,"error":null}`,
	`{"type":"configured","object":{"kind":"Pod","name":"x","status":{"phase":"Running"}},"object":{"status":{"node":"n"}},"revision":9}`,
	`{"type":"created","object":` + podJSON + `,"revision":7,"extra":[1]}`,
	`{"Type":"created"}`, `{"type":"created","revision":1.5}`, `{"type":"x","object":{"kind":1}}`,
	`null`, ``, `[]`, `{"type":"x"} {}`, `{"type":"\ud83d\ude00 \u00e9 \/"}`, `{"type":"\udc00"}`,
}

// TestDecodeWatchLineMatchesEncodingJSON holds the watch's decoder to
// json.Unmarshal, which the client used before.
func TestDecodeWatchLineMatchesEncodingJSON(t *testing.T) {
	for _, s := range watchSamples {
		checkWatchLine(t, []byte(s))
	}
	// What a server writes takes the fast path.
	var ev watchLine
	if !readWatchLine([]byte(watchSamples[0]), &ev) || ev.Object.Name != "p000001" || ev.Revision != 7 {
		t.Fatalf("%s went to encoding/json", watchSamples[0])
	}
}

func checkWatchLine(t *testing.T, data []byte) {
	t.Helper()
	var want, got watchLine
	werr := json.Unmarshal(data, &want)
	got.Error = "left from the line before"
	gerr := decodeWatchLine(data, &got)
	if fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Fatalf("%q: error %v, encoding/json %v", data, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %#v\nwant %#v", data, got, want)
	}
}

// TestEncodeBodyMatchesEncodingJSON: request bodies are json.Marshal's
// bytes, HTML escaping and errors included.
func TestEncodeBodyMatchesEncodingJSON(t *testing.T) {
	var pod api.Object
	if err := json.Unmarshal([]byte(podJSON), &pod); err != nil {
		t.Fatal(err)
	}
	del := time.Date(2026, 11, 24, 1, 2, 3, 4000, time.UTC)
	zero := 0.0
	bodies := []any{
		pod,
		api.Object{Kind: "Pod", Name: "p", Labels: map[string]string{"a": "<b>"}},
		api.Object{Kind: "Node", Name: "n", Spec: map[string]any{"s": "\u2028 \x01 \xff", "i": 3, "f": 1e21}, Meta: api.Meta{Deleting: &del}},
		api.Object{Kind: "Pod", Meta: api.Meta{Created: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		workflow.Result{},
		workflow.Result{Err: "no such step \"x\" & more"},
		workflow.Result{Err: "both", Writes: map[string]any{"status.x": 1}},
		workflow.Result{Writes: map[string]any{}},
		workflow.Result{Writes: map[string]any{"status.phase": "Running", "status.message": "", "status.containers": []any{
			map[string]any{"name": "app", "image": "busybox:1", "state": "running", "restarts": 0, "startedAt": "2026-11-24T23:08:21.123456789Z"}}}},
		workflow.Result{Writes: map[string]any{"status.containers": []any(nil), "status.n": int64(-1 << 62), "status.f": zero / zero}},
		map[string]any{"status": map[string]any{"status.pods": 3, "status.capacity": map[string]any{"cpuMilli": int64(16000), "pods": 110}}},
		map[string]any{"writes": map[string]any{"status.x": []string{"typed"}, "status.y": map[string]string{"a": "b"}}},
		map[string]any{"status": map[string]any(nil)},
		map[string]int64{"to": 3},
	}
	for _, b := range bodies {
		want, werr := json.Marshal(b)
		got, gerr := encodeBody(b)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) || !bytes.Equal(got, want) {
			t.Fatalf("%#v:\n got %s %v\nwant %s %v", b, got, gerr, want, werr)
		}
	}
}

// FuzzDecodeAnswer holds the answer and watch decoders to encoding/json on
// any input.
func FuzzDecodeAnswer(f *testing.F) {
	for _, samples := range answerSamples {
		for _, s := range samples {
			f.Add([]byte(s))
		}
	}
	for _, s := range watchSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for kind := range answerSamples {
			checkAnswer(t, kind, data)
		}
		checkWatchLine(t, data)
	})
}
