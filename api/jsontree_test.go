package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

var treeSamples = []string{
	`{"kind":"Pod","name":"p000001","namespace":"default","spec":{"containers":[{"image":"busybox:1","name":"app","resources":{"cpu":"100m","memory":"128Mi"}}]},"status":{"containers":[{"image":"busybox:1","name":"app","restarts":0,"startedAt":"2026-11-24T23:08:21.123456789Z","state":"running"}],"ip":"fd00::1:2","message":"","node":"sim-00001","phase":"Running"},"meta":{"revision":4,"generation":1,"created":"2026-11-24T23:08:21.123Z","updated":"2026-11-24T23:08:22.5Z"}}`,
	`{"kind":"Node","name":"n1","labels":{"skiff.dev/simulator":"sim","zone":"a"},"spec":{"taints":[]},"status":{"capacity":{"cpuMilli":16000,"memoryBytes":68719476736,"pods":110},"pods":3},"meta":{"revision":1,"generation":1,"created":"2026-11-24T23:08:21Z","updated":"2026-11-24T23:08:21Z","owner":"pinneddeployment/web","deleting":"2026-11-24T23:09:00.001Z"}}`,
	` { "kind" : "Pod" , "name":"a", "spec": null, "status": {}, "labels": null, "meta": null } `,
	`{"kind":"Pod","name":"esc","spec":{"s":"a\"b\\c\/d\b\f\n\r\t\u00e9\u2028\ud83d\ude00<>&","u":"héllo wörld ☃","n":[-0,1.5,1e300,-2.5E-7,12345678901234567890,0.000001],"b":[true,false,null],"e":{},"l":[]}}`,
	`{"kind":"Pod","name":"dup","spec":{"a":1},"spec":{"b":2},"status":{"x":{"y":1},"x":{"z":2}}}`,
	`{"Kind":"Pod","NAME":"case"}`,
	`{"kind":"Pod","name":"unknown","extra":{"a":1}}`,
	`{"kind":"Pod","name":"bad utf8 \xff"}`,
	`{"kind":"Pod","name":"lone \ud800 surrogate"}`,
	`{"kind":"Pod","name":"x","meta":{"revision":1.5}}`,
	`{"kind":"Pod","name":"x","meta":{"revision":"1"}}`,
	`{"kind":"Pod","name":"x","meta":{"created":null}}`,
	`{"kind":"Pod","name":"x","meta":{"created":"yesterday"}}`,
	`{"kind":"Pod","name":"x","labels":{"a":1}}`,
	`{"kind":"Pod","name":"x","spec":{"a":1e400}}`,
	`{"kind":"Pod","name":"x","spec":{"a":01}}`,
	`{"kind":"Pod","name":"x","spec":{"a":[1,]}}`,
	`{"kind":"Pod","name":"x"} trailing`,
	`{"kind":"Pod","name":"x"`,
	`[1,2]`,
	`null`,
	`{"kind":"Pod","name":"ctl\u0001"}`,
	"{\"kind\":\"Pod\",\"name\":\"raw\ttab\"}",
}

// TestUnmarshalObjectMatchesEncodingJSON: the fast decoder gives what
// encoding/json gives, object and error alike.
func TestUnmarshalObjectMatchesEncodingJSON(t *testing.T) {
	for _, s := range treeSamples {
		checkUnmarshal(t, []byte(s))
	}
}

func checkUnmarshal(t *testing.T, data []byte) {
	t.Helper()
	var want, got Object
	werr := json.Unmarshal(data, &want)
	gerr := UnmarshalObject(data, &got)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%s: error %v, encoding/json %v", data, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %#v\nwant %#v", data, got, want)
	}
	var wt any
	werr = json.Unmarshal(data, &wt)
	gt, gerr := DecodeTree(data)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%s: tree error %v, encoding/json %v", data, gerr, werr)
	}
	if werr == nil && !reflect.DeepEqual(gt, wt) {
		t.Fatalf("%s: tree\n got %#v\nwant %#v", data, gt, wt)
	}
}

// TestAppendMatchesEncodingJSON: the fast encoder writes encoding/json's
// bytes (HTML escaping off), for trees and whole objects.
func TestAppendMatchesEncodingJSON(t *testing.T) {
	del := time.Date(2026, 11, 24, 1, 2, 3, 4000, time.UTC)
	objs := []Object{
		{Kind: "Pod", Name: "p", Namespace: "default", Labels: map[string]string{"b": "2", "a": "<1>"},
			Spec: map[string]any{"n": []any{1.0, -0.0, 1e21, 1e-7, 123456.789, 5e-324}, "s": "a\u2028\x01\x7f\xff<&>", "m": map[string]any{}, "nil": nil,
				"typed": map[string]string{"x": "y"}, "int": 3, "int64": int64(-1 << 62), "strs": []string{"a"}, "nl": []any(nil), "nm": map[string]any(nil)},
			Status: map[string]any{"phase": "Running"},
			Meta: Meta{Revision: 3, Generation: 1, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
				Updated: time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.FixedZone("x", 3600)), Owner: "o", Deleting: &del}},
		{Kind: "Node", Name: "n", Labels: map[string]string{}, Spec: map[string]any{}},
	}
	for _, o := range objs {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&o); err != nil {
			t.Fatal(err)
		}
		got, err := AppendObject(nil, &o)
		if err != nil {
			t.Fatal(err)
		}
		if w := bytes.TrimSuffix(want.Bytes(), []byte("\n")); !bytes.Equal(got, w) {
			t.Fatalf("object\n got %s\nwant %s", got, w)
		}
	}
	bad := Object{Kind: "Pod", Meta: Meta{Created: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	if _, err := AppendObject(nil, &bad); err == nil {
		t.Fatal("a year past 9999 was encoded; encoding/json refuses it")
	}
	if _, err := AppendTree(nil, map[string]any{"x": []any{nan()}}); err == nil {
		t.Fatal("NaN was encoded; encoding/json refuses it")
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

// FuzzJSONTree holds the decoder to encoding/json's results on any input,
// and the encoder to encoding/json's bytes on whatever decodes.
func FuzzJSONTree(f *testing.F) {
	for _, s := range treeSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkUnmarshal(t, data)
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return
		}
		got, err := AppendTree(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		if w := bytes.TrimSuffix(want.Bytes(), []byte("\n")); !bytes.Equal(got, w) {
			t.Fatalf("%s:\n got %s\nwant %s", data, got, w)
		}
	})
}

// EscapeHTML makes what the appenders wrote json.Marshal's bytes, also
// after a prefix it leaves alone.
func TestEscapeHTML(t *testing.T) {
	for _, v := range []any{
		map[string]any{"a": "<b> & </b>", "k<>": []any{"x&y", 1.5, nil, true}},
		"plain",
		map[string]any{"line": "a\u2028b", "é": "ü"},
	} {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		b, err := AppendTree([]byte("prefix<&>"), v)
		if err != nil {
			t.Fatal(err)
		}
		if got := EscapeHTML(b, len("prefix<&>")); string(got) != "prefix<&>"+string(want) {
			t.Errorf("EscapeHTML(AppendTree(%v)) = %s, want prefix<&>%s", v, got, want)
		}
	}
}
