package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseManifests feeds arbitrary bytes to the manifest parser: it must
// never panic, and every answer is either objects that validate again or
// one ErrInvalid error on one line.
func FuzzParseManifests(f *testing.F) {
	f.Add([]byte(goodPod))
	f.Add([]byte(goodPod + "---\n" + goodPod))
	f.Add([]byte("kind: Pod\nname: w\nspec: {containers: [{name: a, image: b, resources: {cpu: 1x}}]}\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b, *b]\n"))
	f.Add([]byte("kind: Grant\nname: g\nspec: {namespaces: ['*'], privileges: ['hostPath:/srv:ro']}\n"))
	f.Add([]byte("{\"kind\":\"Node\",\"name\":\"n\",\"spec\":{\"taints\":[{\"key\":\"k\",\"effect\":\"NoSchedule\"}]}}"))
	f.Add([]byte("kind: Controller\nname: c\nspec: {steps: [{name: s, kind: Pod, timeout: 1s}], owns: ['Pod:status.x[*]']}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := ParseManifests("f.yaml", bytes.NewReader(data), "")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			return
		}
		for _, o := range objs {
			// What the parser accepted is canonical: it passes again unchanged.
			again, err := Normalize(o)
			if err != nil {
				t.Fatalf("accepted %s does not validate again: %v", o.Ref(), err)
			}
			a, _ := json.Marshal(o)
			b, _ := json.Marshal(again)
			if !bytes.Equal(a, b) {
				t.Fatalf("normalizing %s twice differs:\n%s\n%s", o.Ref(), a, b)
			}
		}
	})
}

// FuzzDecodeObject feeds arbitrary JSON bodies to the API's decoder.
func FuzzDecodeObject(f *testing.F) {
	f.Add([]byte(`{"kind":"Pod","name":"w","spec":{"containers":[{"name":"a","image":"b"}]}}`))
	f.Add([]byte(`{"kind":"Pod","name":"w","spec":{"containers":[{"name":"a","image":"b","env":{"A.B":"x"}}]}}`))
	f.Add([]byte(`{"kind":"Grant","name":"g","spec":{"namespaces":["*"],"privileges":["root"]}}`))
	f.Add([]byte(`[1,2,3]`))
	for _, s := range treeSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeObject(t, data)
		o, err := DecodeObject(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		if _, err := Normalize(o); err != nil {
			t.Fatalf("accepted object does not validate again: %v", err)
		}
	})
}
