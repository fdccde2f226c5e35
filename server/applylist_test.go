package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/server"
)

// TestApplyList: many objects in one request are applied in order, as
// one apply each would be, up to the first that fails; a list with an
// invalid object writes nothing.
func TestApplyList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pods := []api.Object{
		pod("web", "a", "nginx:1", nil),
		pod("web", "b", "nginx:1", map[string]string{"app": "b"}),
		pod("media", "c", "nginx:1", nil),
	}
	res, err := e.admin.ApplyList(ctx, pods)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("%d results, want 3", len(res))
	}
	for i, r := range res {
		if r.Op != "created" || r.Object.Ref() != pods[i].Ref() || r.Object.Meta.Revision != 1 {
			t.Errorf("result %d: %s %s rev %d, want %s created rev 1", i, r.Object.Ref(), r.Op, r.Object.Meta.Revision, pods[i].Ref())
		}
		got, err := e.admin.Get(ctx, pods[i].Ref())
		if err != nil || got.Spec["containers"].([]any)[0].(map[string]any)["image"] != "nginx:1" {
			t.Errorf("%s after apply: %v, %v", pods[i].Ref(), got.Spec, err)
		}
		h, err := e.admin.History(ctx, pods[i].Ref(), nil)
		if err != nil || len(h) != 1 || h[0].Changer != "operator:root" || h[0].Cause != "apply" {
			t.Errorf("%s history: %+v, %v; want one revision by operator:root for apply", pods[i].Ref(), h, err)
		}
	}

	// Again, one changed: the others are unchanged.
	pods[1] = pod("web", "b", "nginx:2", map[string]string{"app": "b"})
	if res, err = e.admin.ApplyList(ctx, pods); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"unchanged", "configured", "unchanged"} {
		if string(res[i].Op) != want {
			t.Errorf("second apply, %s: %s, want %s", pods[i].Ref(), res[i].Op, want)
		}
	}

	// An invalid object refuses the whole list before anything is written.
	bad := pod("web", "d", "nginx:1", nil)
	bad.Spec["restart"] = "sometimes"
	_, err = e.admin.ApplyList(ctx, []api.Object{pod("web", "new", "nginx:1", nil), bad})
	wantError(t, "list with an invalid object", err, 400, "invalid", "items[1]", "spec.restart")
	if _, err := e.admin.Get(ctx, api.Ref{Kind: "Pod", Namespace: "web", Name: "new"}); err == nil {
		t.Error("pod web/new was written although the list held an invalid object")
	}

	// A token for namespace web only: the object before the forbidden one
	// is applied, the one after is not tried.
	secret, err := e.admin.CreateToken(ctx, "operator:alice", "edit", "web")
	if err != nil {
		t.Fatal(err)
	}
	alice := e.client(secret)
	res, err = alice.ApplyList(ctx, []api.Object{pod("web", "x", "nginx:1", nil), pod("media", "y", "nginx:1", nil), pod("web", "z", "nginx:1", nil)})
	wantError(t, "list with a forbidden object", err, 403, "forbidden", "pod/y")
	if len(res) != 1 || res[0].Object.Name != "x" || res[0].Op != "created" {
		t.Errorf("results before the forbidden object: %+v, want web/x created", res)
	}
	for _, name := range []string{"y", "z"} {
		ns := "web"
		if name == "y" {
			ns = "media"
		}
		if _, err := e.admin.Get(ctx, api.Ref{Kind: "Pod", Namespace: ns, Name: name}); err == nil {
			t.Errorf("pod %s/%s was written after the list failed", ns, name)
		}
	}

	// The body is checked.
	for _, body := range []string{`[]`, `{"items":{}}`, `{"items":[],"extra":1}`, `{"items":`} {
		r := e.do("POST", "/v1/apply/list", e.root, []byte(body))
		if r.status != 400 || r.err.Code != "invalid" {
			t.Errorf("body %s: %d %+v, want 400 invalid", body, r.status, r.err)
		}
	}
	r := e.do("POST", "/v1/apply/list", e.root, []byte(`{"items":[`+strings.Repeat(`{"kind":"Pod"},`, 1000)+`{"kind":"Pod"}]}`))
	if r.status != 400 || !strings.Contains(r.err.Error, "at most 1000") {
		t.Errorf("1001 objects: %d %+v, want 400 saying at most 1000", r.status, r.err)
	}
}

// More lists at once than the server works on (MaxListsInFlight) are all
// applied: the others wait their turn.
func TestApplyListsBeyondSlots(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	n := server.MaxListsInFlight + 4
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := e.admin.ApplyList(ctx, []api.Object{pod("web", fmt.Sprintf("p%d-a", i), "nginx:1", nil), pod("web", fmt.Sprintf("p%d-b", i), "nginx:1", nil)})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	l, err := e.admin.List(ctx, "Pod", "web", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 2*n {
		t.Errorf("%d pods, want %d", len(l.Items), 2*n)
	}
}
