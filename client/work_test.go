package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"skiff.dev/skiff/workflow"
)

// workListServer answers POST /v1/work/done as the server does, refusing
// the items whose id starts with "stale", and keeps the bodies it got.
func workListServer(t *testing.T) (*testServer, func() [][]byte) {
	t.Helper()
	var mu sync.Mutex
	var bodies [][]byte
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var list []Completion
		if r.URL.Path != "/v1/work/done" || json.Unmarshal(body, &list) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
		ans := []workDone{}
		for _, c := range list {
			d := workDone{ID: c.ID}
			if strings.HasPrefix(c.ID, "stale") {
				d.Error = &applyListError{Error: "work item " + c.ID + " is no longer current", Code: "conflict", Status: 409}
			}
			ans = append(ans, d)
		}
		answer(ans)(w, r)
	})
	return srv, func() [][]byte { mu.Lock(); defer mu.Unlock(); return bodies }
}

// CompleteWorkList sends a long list in parts, each within the server's
// bounds on items and bytes, as json.Marshal encodes it, and answers each
// item's outcome.
func TestCompleteWorkListParts(t *testing.T) {
	srv, bodies := workListServer(t)
	c := testClient(t, srv)
	var list []Completion
	for i := range 10000 {
		list = append(list, Completion{ID: fmt.Sprintf("r%d-netup-1", i)})
	}
	list[5000].ID = "stale-5000"
	errs, err := c.CompleteWorkList(context.Background(), list)
	if err != nil || len(errs) != len(list) {
		t.Fatalf("10,000 items: %d errors, %v", len(errs), err)
	}
	for i, e := range errs {
		if i == 5000 {
			var ae *Error
			if !errors.As(e, &ae) || ae.Status != 409 || !IsCode(e, "conflict") || !strings.Contains(ae.Message, "stale-5000 is no longer current") {
				t.Errorf("the stale item: %v, want its 409 conflict", e)
			}
		} else if e != nil {
			t.Fatalf("item %d: %v", i, e)
		}
	}
	var sizes []int
	for _, b := range bodies() {
		var part []Completion
		json.Unmarshal(b, &part)
		sizes = append(sizes, len(part))
	}
	if fmt.Sprint(sizes) != "[4096 4096 1808]" {
		t.Errorf("10,000 items sent in parts of %v, want [4096 4096 1808]", sizes)
	}

	// Large writes: parts within applyListBytes, one item at least.
	before := len(bodies())
	list = nil
	for i := range 10 {
		list = append(list, Completion{ID: fmt.Sprint(i), Result: workflow.Result{Writes: map[string]any{"status.x": strings.Repeat("x", 300<<10)}}})
	}
	list = append(list, Completion{ID: "huge", Result: workflow.Result{Writes: map[string]any{"status.x": strings.Repeat("x", applyListBytes)}}})
	if errs, err = c.CompleteWorkList(context.Background(), list); err != nil || errors.Join(errs...) != nil {
		t.Fatalf("10 items of 300 KiB and one of 1 MiB: %v, %v", errs, err)
	}
	sizes = nil
	for _, b := range bodies()[before:] {
		var part []Completion
		json.Unmarshal(b, &part)
		sizes = append(sizes, len(part))
		if len(part) > 1 && len(b) > applyListBytes {
			t.Errorf("a part of %d items is %d bytes, over %d", len(part), len(b), applyListBytes)
		}
	}
	if fmt.Sprint(sizes) != "[3 3 3 1 1]" {
		t.Errorf("10 items of 300 KiB and one of 1 MiB sent in parts of %v, want [3 3 3 1 1]", sizes)
	}
}

// The body of CompleteWorkList is json.Marshal's bytes, HTML escaping
// included; an item that cannot be encoded fails alone.
func TestCompleteWorkListBody(t *testing.T) {
	srv, bodies := workListServer(t)
	c := testClient(t, srv)
	zero := 0.0
	list := []Completion{
		{ID: "r1-start-1", Result: workflow.Result{Writes: map[string]any{"status.phase": "Running", "status.message": "", "status.containers": []any{
			map[string]any{"name": "app", "image": "busybox:1", "state": "running", "restarts": 0, "startedAt": "2026-11-24T23:08:21.123456789Z"}}}}},
		{ID: "r1-netup-1"},
		{ID: "<r2>&", Result: workflow.Result{Err: "no such step \"x\" & more"}},
		{ID: "r3", Result: workflow.Result{Err: "both", Writes: map[string]any{"status.x": 1}}},
		{ID: "r4", Result: workflow.Result{Writes: map[string]any{}}},
		{ID: "r5", Result: workflow.Result{Writes: map[string]any{"status.x": []string{"typed"}, "status.y": map[string]string{"a": "<b>"}}}},
		{ID: "nan", Result: workflow.Result{Writes: map[string]any{"status.f": zero / zero}}},
		{ID: "\u2028 \xff"},
	}
	errs, err := c.CompleteWorkList(context.Background(), list)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		_, merr := json.Marshal(list[i])
		if fmt.Sprint(e) != fmt.Sprint(merr) {
			t.Errorf("item %s: %v, want %v", list[i].ID, e, merr)
		}
	}
	want, _ := json.Marshal(append(list[:6:6], list[7]))
	if b := bodies(); len(b) != 1 || !bytes.Equal(b[0], want) {
		t.Errorf("body\n%s\nwant\n%s", b, want)
	}
}

// A part the server refuses as a whole is every one of its items' error,
// and the list's; the items of other parts are completed all the same.
func TestCompleteWorkListRefused(t *testing.T) {
	srv, _ := workListServer(t)
	c := testClient(t, srv)
	calls := 0
	srv.set(func(w http.ResponseWriter, r *http.Request) {
		if calls++; calls == 1 {
			fail(403, "forbidden")(w, r)
			return
		}
		answer([]workDone{{ID: "b"}})(w, r)
	})
	list := make([]Completion, MaxWorkList+1)
	for i := range list {
		list[i].ID = "a"
	}
	list[MaxWorkList].ID = "b"
	errs, err := c.CompleteWorkList(context.Background(), list)
	if !IsCode(err, "forbidden") {
		t.Fatalf("list error %v, want the first part's 403", err)
	}
	if !IsCode(errs[0], "forbidden") || !IsCode(errs[MaxWorkList-1], "forbidden") || errs[MaxWorkList] != nil {
		t.Errorf("items' errors %v … %v, %v: want the first part's 403 and nil", errs[0], errs[MaxWorkList-1], errs[MaxWorkList])
	}
}
