package store

import (
	"encoding/json"
	"fmt"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
)

// TestRecordAppendMatchesEncodingJSON: revisions are written as
// encoding/json wrote them, so history reads them back the same.
func TestRecordAppendMatchesEncodingJSON(t *testing.T) {
	recs := []record{
		{Rev: 1, Time: 1764025701000, Changer: "operator:alice", Cause: "apply", Gen: 1, Created: 1764025701000,
			Full: map[string]any{"spec": map[string]any{"x": 1.5, "s": "<&>"}}, Snap: true},
		{Rev: 2, Time: 1764025701001, Changer: "node:n1", Patch: []fieldpath.Op{
			{Path: "status.phase", Value: "Running"}, {Path: "status.x", Delete: true},
			{Path: "status.containers", Value: []any{map[string]any{"name": "app", "restarts": 0.0}}},
			{Path: "status.m", Value: map[string]any{}}}},
		{Rev: 3, Time: 1, Changer: "c", Snap: true, Full: map[string]any{}},
		{Rev: 4, Time: 2, Changer: "c", Deleted: true, Patch: []fieldpath.Op{}},
	}
	for _, r := range recs {
		want, err := marshalString(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.append(nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("record\n got %s\nwant %s", got, want)
		}
		var back record
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
	}
}

// History keys are the object's history prefix and the revision padded to
// twelve digits, as fmt's %012d wrote them, so that they sort by revision.
func TestHistKeyAsPrinted(t *testing.T) {
	s := New(nil, Options{})
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	for _, rev := range []int64{0, 1, 9, 10, 12345, 999999999999, 1000000000000, 1 << 62} {
		if got, want := s.histKey(ref, rev), fmt.Sprintf("%s%012d", s.histPrefix(ref), rev); got != want {
			t.Errorf("histKey(%d) = %q, want %q", rev, got, want)
		}
	}
}
