package server

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// A pod's start reported as the simulator reports it.
const startDone = `{"id":"r1-start-1","writes":{"status.containers":[{"image":"busybox:1","name":"app","restarts":0,"startedAt":"2026-11-24T23:08:21.123456789Z","state":"running"}],"status.message":"","status.phase":"Running"}}`

// Bodies of work completions, realistic and odd: the fast decoders must
// read what encoding/json reads, and refuse what it refuses.
var completionSamples = []string{
	`[` + startDone + `,{"id":"r1-netup-1"},{"id":"r2-start-1","error":"no such image"}]`, `[]`, `null`, `[null]`, `[{}]`, `{}`, ``, `[`,
	`[{"id":"a","error":null,"writes":null}]`, `[{"id":"a","writes":{"status.x":1},"writes":{"status.y":[1.5,-0,1e300]}}]`,
	`[{"id":"a","writes":{"status.x":1},"writes":null}]`, `[{"ID":"a","Error":"e","WRITES":{"x":1}}]`, `[{"id":"a","extra":{"b":[1]}}]`,
	`[{"id":1}]`, `[{"id":"a","error":{}}]`, `[{"id":"a","writes":[]}]`, `[{"id":"a"}] trailing`, `[{"id":"a"}]` + "\n",
	`[{"id":"\u0061\ud83d\ude00"}]`, `[{"id":"lone \ud800"}]`, `[{"id":"bad utf8 ` + "\xff" + `"}]`, `[{"id":"a","writes":{"x":[1,]}}]`,
	startDone, `{"error":"x"}`, `{"writes":{"status.network":"ready"}}`, `{"id":"a","writes":{}}`, `{"Writes":{"a":"b"}}`, `[1]`, `"x"`,
}

// TestDecodeCompletionsMatchesEncodingJSON holds the list's decoder to
// json.Unmarshal into []WorkCompletion, and the single completion's to
// json.Unmarshal into a Result, which POST /v1/work/{id}/done used.
func TestDecodeCompletionsMatchesEncodingJSON(t *testing.T) {
	for _, s := range completionSamples {
		checkCompletions(t, []byte(s))
	}
}

func checkCompletions(t *testing.T, data []byte) {
	t.Helper()
	var want []WorkCompletion
	werr := json.Unmarshal(data, &want)
	refuse := werr != nil || want == nil || len(want) > MaxWorkBatch
	for _, c := range want {
		refuse = refuse || c.ID == ""
	}
	got, gerr := decodeCompletions(data)
	if refuse != (gerr != nil) || !refuse && !reflect.DeepEqual(got, want) {
		t.Fatalf("list %q:\n got %#v, %v\nwant %#v, %v", data, got, gerr, want, werr)
	}

	var wantRes, gotRes workflow.Result
	werr = json.Unmarshal(data, &wantRes)
	if ok := decodeCompletion(data, &gotRes); ok != (werr == nil) || ok && !reflect.DeepEqual(gotRes, wantRes) {
		t.Fatalf("completion %q: %v %#v; encoding/json %v %#v", data, ok, gotRes, werr, wantRes)
	}
}

// TestDecodeCompletionsFast: what clients send takes the fast path (or
// the test above would pass with encoding/json alone).
func TestDecodeCompletionsFast(t *testing.T) {
	var list []WorkCompletion
	r := api.NewJSONReader([]byte(completionSamples[0]))
	if !readCompletions(&r, &list) || !r.End() || len(list) != 3 || list[0].Writes["status.phase"] != "Running" {
		t.Errorf("%s went to encoding/json", completionSamples[0])
	}
	var res workflow.Result
	r = api.NewJSONReader([]byte(`{"writes":{"status.network":"ready"}}`))
	if !readResult(&r, &res, nil) || !r.End() || res.Writes["status.network"] != "ready" {
		t.Errorf("a single completion went to encoding/json")
	}
}

// TestDecodeCompletionsChecks: a list too long or with an item without id
// is refused whole.
func TestDecodeCompletionsChecks(t *testing.T) {
	long := "[" + strings.Repeat(`{"id":"a"},`, MaxWorkBatch) + `{"id":"a"}]`
	if _, err := decodeCompletions([]byte(long)); err == nil || !strings.Contains(err.Error(), "at most 4096 items; this has 4097") {
		t.Errorf("a list of %d: %v", MaxWorkBatch+1, err)
	}
	if _, err := decodeCompletions([]byte(`[{"id":"a"},{"error":"x"}]`)); err == nil || !strings.Contains(err.Error(), "items[1] has no id") {
		t.Errorf("an item without id: %v", err)
	}
}

// FuzzDecodeCompletions holds the completions' decoders to encoding/json
// on any input.
func FuzzDecodeCompletions(f *testing.F) {
	for _, s := range completionSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkCompletions(t, data)
	})
}
