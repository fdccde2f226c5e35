package workflow

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// sampleRuns are records like those the engine makes (a pod's run as
// recorded, one running, one that failed) and odd ones: empty and nil
// lists, zones, escapes, invalid UTF-8, attributes of every kind.
func sampleRuns() []RunRecord {
	t0 := time.Date(2026, 11, 25, 1, 44, 31, 592647589, time.UTC)
	at := func(ms int) *time.Time { t := t0.Add(time.Duration(ms) * time.Millisecond); return &t }
	zoned := time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.FixedZone("x", -5*3600-1800))
	return []RunRecord{
		{ID: "1a210603a68-000089", Object: "pod/p000006", Kind: "Pod", Namespace: "default", Name: "p000006", Generation: 1,
			Phase: Up, Target: "running", State: RunDone, Started: t0, Finished: at(159), Steps: []StepRecord{
				{Name: "admit", Controller: "admission", Where: "cluster", State: Done, Started: at(0), Finished: at(1), Attempts: 1,
					ReadHash: "5143e83087a7c300335904a0"},
				{Name: "admitted", Target: true, State: Done, Started: at(13), Finished: at(13), After: []string{"admit"}, Requires: []string{"admit"}},
				{Name: "schedule", Controller: "scheduler", Where: "cluster", State: Done, Started: at(13), Finished: at(13), Attempts: 1,
					Log:    []LogLine{{Time: *at(13), Attempt: 1, Msg: "placed", Attrs: map[string]any{"node": "sim-00026"}}},
					Writes: []string{"status.node"}, After: []string{"admitted"}, Requires: []string{"admitted"}, ReadHash: "38bda97eeb5533da1678f413"},
				{Name: "address", Controller: "ipam", Where: "cluster", State: Done, Started: at(28), Finished: at(28), Attempts: 1,
					Log: []LogLine{{Time: *at(28), Attempt: 1, Msg: "address",
						Attrs: map[string]any{"node": "sim-00026", "ip": "fd16:579e:541a:bed0:4c00:537c:29ff:2dce"}}}},
			}},
		{ID: "r2", Object: "node/n", Kind: "Node", Name: "n", Generation: 7, Phase: Down, Target: "stopped", State: RunRunning,
			Cause: "retry", Started: zoned, Steps: []StepRecord{
				{Name: "drain", Controller: "agent", Where: "node", State: Waiting, Optional: true,
					WaitingOn: []string{"agent", "a<b>&c"}, Wants: []string{"x"}},
				{Name: "gone", State: Running, Started: &zoned, Attempts: 3, Log: []LogLine{
					{Time: zoned, Msg: "no attrs"},
					{Time: t0, Attempt: 2, Msg: "typed attrs", Attrs: map[string]any{
						"privileges": []string{"hostPath:/srv:ro", "<root>"}, "n": 3, "f": 1.5, "big": 1e21, "small": 1e-7,
						"nil": nil, "b": true, "m": map[string]string{"z": "1", "a": "2"}, "tree": map[string]any{"l": []any{1.0, "x", nil}},
						"empty": map[string]any{}, "d": 1500 * time.Millisecond}},
					{Time: t0, Msg: "empty attrs", Attrs: map[string]any{}},
				}},
			}},
		{ID: "r3", Object: "pod/ns/x", Kind: "Pod", Namespace: "ns", Name: "x", State: RunFailed,
			Reason: "step \"pull\" failed: image <none> & \x01\t\n\u2028\u2029 bad \xff utf8 é ☃", Started: t0, Finished: &t0,
			Steps: []StepRecord{}},
		{ID: "", Steps: nil},
	}
}

// checkRunJSON holds AppendJSON to json.Marshal: the same bytes, or an
// error both ways.
func checkRunJSON(t *testing.T, r *RunRecord) {
	t.Helper()
	want, werr := json.Marshal(r)
	got, gerr := r.AppendJSON([]byte("prefix"))
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("error %v, encoding/json %v", gerr, werr)
	}
	if werr != nil {
		return
	}
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Fatalf("what was before is gone: %s", got)
	}
	if got = got[len("prefix"):]; !bytes.Equal(got, want) {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
}

func TestRunRecordJSONMatchesEncodingJSON(t *testing.T) {
	for _, r := range sampleRuns() {
		checkRunJSON(t, &r)
	}
}

// Records encoding/json refuses are refused.
func TestRunRecordJSONErrors(t *testing.T) {
	late := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	bad := []RunRecord{
		{Started: late},
		{Finished: &late},
		{Steps: []StepRecord{{Finished: &late}}},
		{Steps: []StepRecord{{Log: []LogLine{{Time: late}}}}},
		{Steps: []StepRecord{{Log: []LogLine{{Attrs: map[string]any{"x": math.NaN()}}}}}},
		{Steps: []StepRecord{{Log: []LogLine{{Attrs: map[string]any{"x": make(chan int)}}}}}},
		{Started: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 25*3600))},
	}
	for i, r := range bad {
		if _, err := json.Marshal(&r); err == nil {
			t.Fatalf("%d: encoding/json takes it", i)
		}
		if b, err := r.AppendJSON(nil); err == nil {
			t.Errorf("%d: encoded %s; encoding/json refuses it", i, b)
		}
	}
}

// FuzzRunRecordJSON holds AppendJSON to encoding/json's bytes on records
// made of arbitrary strings, numbers, times and log attributes (any JSON
// tree).
func FuzzRunRecordJSON(f *testing.F) {
	f.Add("1a210603a68-000089", "admit", "done", "<a&b>", int64(1), 3, int64(1764035071592647589), 0, []byte(`{"node":"sim-1","n":[1,2.5,null,true]}`))
	f.Add("", "", "", "\xff\u2028", int64(-1), 0, int64(-62135596800000000), -3600, []byte(`{}`))
	f.Add("x", "y\x00", "\"", "", int64(math.MaxInt64), -1, int64(253402300799999999), 86399, []byte(`{"a":{"b":[{}]},"c":"<\u00e9>"}`))
	f.Fuzz(func(t *testing.T, s1, s2, s3, s4 string, n int64, attempts int, nanos int64, zone int, attrs []byte) {
		tm := time.Unix(0, nanos).In(time.FixedZone("z", zone))
		var tree map[string]any
		_ = json.Unmarshal(attrs, &tree)
		r := RunRecord{ID: s1, Object: s2, Kind: s3, Namespace: s4, Name: s1 + s4, Generation: n, Phase: s2, Target: s3,
			State: s4, Reason: s3, Cause: s2, Started: tm, Finished: &tm, Steps: []StepRecord{
				{Name: s1, Controller: s2, Target: attempts%2 == 0, Where: s3, State: s4, Optional: attempts%3 == 0,
					Started: &tm, Attempts: attempts, WaitingOn: []string{s1, s2}, Reason: s3,
					Log:    []LogLine{{Time: tm, Attempt: attempts, Msg: s4, Attrs: tree}, {Msg: s1}},
					Writes: []string{s4}, After: []string{}, Requires: nil, Wants: []string{s3}, ReadHash: s2},
				{},
			}}
		checkRunJSON(t, &r)
	})
}
