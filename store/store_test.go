package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/store"
)

// TestCreateUpdateHistory: every write is a revision with who and why, in
// order; writing what is already there is no revision at all.
func TestCreateUpdateHistory(t *testing.T) {
	clock := newFakeClock()
	st := newStore(t, store.Options{Now: clock.Now})
	ctx := context.Background()
	ref := podRef("default", "web")

	res := write(t, st, ref, "operator:alice", "apply", api.Object{
		Labels: map[string]string{"app": "web"},
		Spec:   map[string]any{"image": "nginx:1", "replicas": 1.0},
	})
	if res.Op != store.Created || res.Object.Meta.Revision != 1 || res.Object.Meta.Generation != 1 {
		t.Fatalf("create: op %s rev %d gen %d, want created rev 1 gen 1", res.Op, res.Object.Meta.Revision, res.Object.Meta.Generation)
	}
	created := res.Object.Meta.Created

	res = write(t, st, ref, "operator:bob", "apply", api.Object{
		Labels: map[string]string{"app": "web"},
		Spec:   map[string]any{"image": "nginx:2", "replicas": 1.0},
	})
	if res.Op != store.Configured || res.Object.Meta.Revision != 2 || res.Object.Meta.Generation != 2 {
		t.Fatalf("spec update: op %s rev %d gen %d, want configured rev 2 gen 2", res.Op, res.Object.Meta.Revision, res.Object.Meta.Generation)
	}

	res = edit(t, st, ref, "controller:scheduler", "status", func(o *api.Object) {
		o.Status = map[string]any{"node": "n1"}
	})
	if res.Op != store.Configured || res.Object.Meta.Revision != 3 || res.Object.Meta.Generation != 2 {
		t.Fatalf("status update: op %s rev %d gen %d, want configured rev 3 gen 2 (status is not spec)", res.Op, res.Object.Meta.Revision, res.Object.Meta.Generation)
	}

	res = edit(t, st, ref, "operator:alice", "label", func(o *api.Object) { o.Labels["tier"] = "front" })
	if res.Op != store.Configured || res.Object.Meta.Revision != 4 || res.Object.Meta.Generation != 2 {
		t.Fatalf("label update: op %s rev %d gen %d, want configured rev 4 gen 2 (labels are not spec)", res.Op, res.Object.Meta.Revision, res.Object.Meta.Generation)
	}

	want := []entry{
		{1, "operator:alice", "apply"},
		{2, "operator:bob", "apply"},
		{3, "controller:scheduler", "status"},
		{4, "operator:alice", "label"},
	}
	checkHistory(t, st, ref, want)
	h := mustHistory(t, st, ref)
	for i := 1; i < len(h); i++ {
		if !h[i].Time.After(h[i-1].Time) {
			t.Errorf("history times not increasing: rev %d at %v, rev %d at %v", h[i-1].Rev, h[i-1].Time, h[i].Rev, h[i].Time)
		}
	}
	if !h[0].Time.Equal(created) {
		t.Errorf("history rev 1 time %v, want the creation time %v", h[0].Time, created)
	}

	// Unchanged: the same content again, by someone else, makes no revision.
	cur := mustGet(t, st, ref)
	res = write(t, st, ref, "operator:carol", "apply", cur)
	if res.Op != store.Unchanged {
		t.Errorf("rewrite of the same content: op %s, want unchanged", res.Op)
	}
	if res.Object.Meta.Revision != 4 {
		t.Errorf("rewrite of the same content: revision %d, want 4", res.Object.Meta.Revision)
	}
	// fn returning nil also changes nothing.
	res, err := st.Mutate(ctx, ref, store.Write{Changer: "operator:carol"}, func(*api.Object) (*api.Object, error) { return nil, nil })
	if err != nil || res.Op != store.Unchanged || res.Object.Meta.Revision != 4 {
		t.Errorf("mutate returning nil: op %s rev %d err %v, want unchanged rev 4", res.Op, res.Object.Meta.Revision, err)
	}
	checkHistory(t, st, ref, want)
	got := mustGet(t, st, ref)
	if got.Meta.Revision != 4 || !got.Meta.Updated.Equal(cur.Meta.Updated) {
		t.Errorf("after unchanged writes: revision %d updated %v, want 4 and %v", got.Meta.Revision, got.Meta.Updated, cur.Meta.Updated)
	}
	if !got.Meta.Created.Equal(created) {
		t.Errorf("created moved from %v to %v", created, got.Meta.Created)
	}

	// A write with no changer is refused.
	if _, err := st.Mutate(ctx, ref, store.Write{}, setTo(api.Object{})); err == nil {
		t.Errorf("write without a changer succeeded")
	}
	// Mutate on an absent object whose fn declines is not found.
	_, err = st.Mutate(ctx, podRef("default", "absent"), store.Write{Changer: "operator:alice"},
		func(*api.Object) (*api.Object, error) { return nil, nil })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("declined mutate of an absent object: %v, want ErrNotFound", err)
	}
	// fn's error is returned and nothing is written.
	boom := errors.New("boom")
	if _, err := st.Mutate(ctx, ref, store.Write{Changer: "operator:alice"},
		func(*api.Object) (*api.Object, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("mutate with failing fn: %v, want boom", err)
	}
	checkHistory(t, st, ref, want)
}

// TestAtReconstructsEveryRevision writes ~30 revisions of every kind of
// change with a snapshot every 4 revisions and reads every one back.
func TestAtReconstructsEveryRevision(t *testing.T) {
	clock := newFakeClock()
	st := newStore(t, store.Options{SnapshotEvery: 4, Now: clock.Now})
	ctx := context.Background()
	ref := podRef("history", "web")

	type step struct {
		what string
		fn   func(o *api.Object)
	}
	steps := []step{
		{"label added", func(o *api.Object) { o.Labels["tier"] = "front" }},
		{"spec scalar", func(o *api.Object) { o.Spec["replicas"] = 2.0 }},
		{"status set", func(o *api.Object) { o.Status = map[string]any{"phase": "Pending"} }},
		{"list grows", func(o *api.Object) { o.Spec["ports"] = []any{80.0, 443.0} }},
		{"status keys", func(o *api.Object) { o.Status["phase"] = "Running"; o.Status["node"] = "n1" }},
		{"label key deleted", func(o *api.Object) { delete(o.Labels, "tier") }},
		{"nested map added", func(o *api.Object) { o.Spec["env"] = map[string]any{"A": "1"} }},
		{"nested key added", func(o *api.Object) { o.Spec["env"].(map[string]any)["B"] = "2" }},
		{"nested key deleted", func(o *api.Object) { delete(o.Spec["env"].(map[string]any), "A") }},
		{"status key deleted", func(o *api.Object) { delete(o.Status, "node") }},
		{"list shrinks", func(o *api.Object) { o.Spec["ports"] = []any{443.0} }},
		{"label value", func(o *api.Object) { o.Labels["app"] = "web2" }},
		{"list element", func(o *api.Object) { o.Spec["ports"] = []any{8443.0} }},
		{"status list of maps", func(o *api.Object) {
			o.Status["conditions"] = []any{map[string]any{"type": "Ready", "ok": true}, map[string]any{"type": "Live", "ok": true}}
		}},
		{"field inside list of maps", func(o *api.Object) {
			o.Status["conditions"].([]any)[1].(map[string]any)["ok"] = false
		}},
		{"all labels removed", func(o *api.Object) { o.Labels = nil }},
		{"spec key deleted", func(o *api.Object) { delete(o.Spec, "env") }},
		{"status removed", func(o *api.Object) { o.Status = nil }},
		{"labels back", func(o *api.Object) { o.Labels = map[string]string{"app": "web", "app.kubernetes.io/name": "web"} }},
		{"deep map", func(o *api.Object) { o.Spec["a"] = map[string]any{"b": map[string]any{"c": 1.0}} }},
		{"deep change and add", func(o *api.Object) {
			b := o.Spec["a"].(map[string]any)["b"].(map[string]any)
			b["c"], b["d"] = 2.0, "x"
		}},
		{"type change map to string", func(o *api.Object) { o.Spec["a"] = "flat" }},
		{"status back", func(o *api.Object) { o.Status = map[string]any{"phase": "Done"} }},
		{"list of lists", func(o *api.Object) { o.Spec["matrix"] = []any{[]any{1.0, 2.0}, []any{3.0}} }},
		{"inner list grows", func(o *api.Object) { o.Spec["matrix"].([]any)[1] = []any{3.0, 4.0} }},
		{"owner and label", func(o *api.Object) { o.Meta.Owner = "pinneddeployment/web"; o.Labels["rev"] = "x" }},
		{"odd keys", func(o *api.Object) {
			o.Spec["we.ird"] = 1.0
			o.Spec["0lead"] = 2.0
			o.Spec["sp ace"] = map[string]any{"[x]": "y", `q"uote`: true}
		}},
		{"null value", func(o *api.Object) { o.Spec["nullable"] = nil }},
		{"null to value and odd key change", func(o *api.Object) {
			o.Spec["nullable"] = "now"
			o.Spec["sp ace"].(map[string]any)["[x]"] = "z"
		}},
		{"owner removed, list to scalar", func(o *api.Object) { o.Meta.Owner = ""; o.Spec["ports"] = 1.0 }},
		{"status and spec together", func(o *api.Object) {
			o.Spec["replicas"] = 3.0
			o.Status["phase"] = "Again"
		}},
	}

	written := map[int64]api.Object{} // what Get returned right after each write
	res := write(t, st, ref, "operator:alice", "apply", api.Object{
		Labels: map[string]string{"app": "web"},
		Spec:   map[string]any{"image": "nginx:1", "replicas": 1.0, "ports": []any{80.0}},
	})
	written[1] = mustGet(t, st, ref)
	sameContent(t, "Get after create vs write result", written[1], res.Object)
	wantGen := int64(1)
	prevSpec := jsonTree(t, written[1].Spec)
	for i, s := range steps {
		res := edit(t, st, ref, "operator:alice", s.what, s.fn)
		rev := int64(i + 2)
		if res.Op != store.Configured || res.Object.Meta.Revision != rev {
			t.Fatalf("step %q: op %s rev %d, want configured rev %d", s.what, res.Op, res.Object.Meta.Revision, rev)
		}
		got := mustGet(t, st, ref)
		// What is stored is what the step wrote.
		intended := map[string]any{"labels": res.Object.Labels, "spec": res.Object.Spec, "status": res.Object.Status, "owner": res.Object.Meta.Owner}
		stored := map[string]any{"labels": got.Labels, "spec": got.Spec, "status": got.Status, "owner": got.Meta.Owner}
		if !reflect.DeepEqual(jsonTree(t, stored), jsonTree(t, intended)) {
			t.Errorf("step %q (rev %d): stored %v, want %v", s.what, rev, stored, intended)
		}
		spec := jsonTree(t, got.Spec)
		if !reflect.DeepEqual(spec, prevSpec) {
			wantGen++
		}
		prevSpec = spec
		if got.Meta.Generation != wantGen {
			t.Errorf("step %q (rev %d): generation %d, want %d (it counts spec changes only)", s.what, rev, got.Meta.Generation, wantGen)
		}
		written[rev] = got
	}
	last := int64(len(steps) + 1)
	if last < 30 {
		t.Fatalf("only %d revisions written", last)
	}

	for rev := int64(1); rev <= last; rev++ {
		at, err := st.At(ctx, ref, rev)
		if err != nil {
			t.Errorf("At(%d): %v", rev, err)
			continue
		}
		what := fmt.Sprintf("At(%d)", rev)
		if rev > 1 {
			what += fmt.Sprintf(" after %q", steps[rev-2].what)
		}
		sameContent(t, what, at, written[rev])
	}
	// Reading revisions in any order gives the same answers (no state
	// carried between reads).
	for _, rev := range []int64{last, 5, 4, 1, 17, 16} {
		at, err := st.At(ctx, ref, rev)
		if err != nil {
			t.Fatalf("At(%d) again: %v", rev, err)
		}
		sameContent(t, fmt.Sprintf("At(%d) again", rev), at, written[rev])
	}
	sameContent(t, "At(last) vs Get", mustGet(t, st, ref), written[last])

	for _, rev := range []int64{0, -1, last + 1, last + 100} {
		if _, err := st.At(ctx, ref, rev); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("At(%d) beyond history: %v, want ErrNotFound", rev, err)
		}
	}
	if _, err := st.At(ctx, podRef("history", "never"), 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("At(1) of an object that never existed: %v, want ErrNotFound", err)
	}
}

// TestDeleteKeepsHistory: a deleted object's history stays readable, a
// re-creation continues its revision numbers, and rolling back to a revision
// before the delete brings it back.
func TestDeleteKeepsHistory(t *testing.T) {
	clock := newFakeClock()
	st := newStore(t, store.Options{SnapshotEvery: 4, Now: clock.Now})
	ctx := context.Background()
	ref := podRef("default", "db")

	write(t, st, ref, "operator:alice", "apply", api.Object{Labels: map[string]string{"app": "db"}, Spec: map[string]any{"image": "pg:15"}})
	edit(t, st, ref, "operator:alice", "apply", func(o *api.Object) { o.Spec["image"] = "pg:16" })
	edit(t, st, ref, "controller:scheduler", "status", func(o *api.Object) { o.Status = map[string]any{"node": "n1"} })
	before := map[int64]api.Object{}
	for rev := int64(1); rev <= 3; rev++ {
		o, err := st.At(ctx, ref, rev)
		if err != nil {
			t.Fatalf("At(%d) before delete: %v", rev, err)
		}
		before[rev] = o
	}

	del, err := st.Delete(ctx, ref, store.Write{Changer: "operator:bob"})
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if del.Meta.Revision != 4 || del.Name != "db" {
		t.Errorf("delete returned %s rev %d, want db rev 4", del.Name, del.Meta.Revision)
	}
	if _, err := st.Get(ctx, ref); !errors.Is(err, store.ErrNotFound) || !store.IsNotFound(err) {
		t.Errorf("get after delete: %v, want ErrNotFound", err)
	}
	if _, err := st.Delete(ctx, ref, store.Write{Changer: "operator:bob"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if objs, _, err := st.List(ctx, "Pod", "default"); err != nil || len(objs) != 0 {
		t.Errorf("list after delete: %v %v, want empty", names(objs), err)
	}
	checkHistory(t, st, ref, []entry{
		{1, "operator:alice", "apply"},
		{2, "operator:alice", "apply"},
		{3, "controller:scheduler", "status"},
		{4, "operator:bob", "delete"},
	})
	_, err = st.At(ctx, ref, 4)
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("At(deletion revision): %v, want ErrNotFound", err)
	} else if !strings.Contains(err.Error(), "deletion") {
		t.Errorf("At(deletion revision) message %q does not say it was deleted", err)
	}
	for rev, want := range before {
		at, err := st.At(ctx, ref, rev)
		if err != nil {
			t.Fatalf("At(%d) after delete: %v", rev, err)
		}
		sameContent(t, fmt.Sprintf("At(%d) after delete", rev), at, want)
	}

	// Re-create: revisions continue, generation and creation time start over.
	res := write(t, st, ref, "operator:carol", "apply", api.Object{Spec: map[string]any{"image": "pg:17"}})
	if res.Op != store.Created || res.Object.Meta.Revision != 5 || res.Object.Meta.Generation != 1 {
		t.Fatalf("re-create: op %s rev %d gen %d, want created rev 5 gen 1", res.Op, res.Object.Meta.Revision, res.Object.Meta.Generation)
	}
	if !res.Object.Meta.Created.After(before[1].Meta.Created) {
		t.Errorf("re-created object keeps the old creation time %v", res.Object.Meta.Created)
	}
	if len(res.Object.Labels) != 0 || len(res.Object.Status) != 0 {
		t.Errorf("re-created object carries old labels %v or status %v", res.Object.Labels, res.Object.Status)
	}
	written := map[int64]api.Object{5: mustGet(t, st, ref)}
	for i, fn := range []func(o *api.Object){
		func(o *api.Object) { o.Labels = map[string]string{"v": "6"} },
		func(o *api.Object) { o.Spec["image"] = "pg:17.1" },
		func(o *api.Object) { o.Status = map[string]any{"node": "n2"} },
		func(o *api.Object) { o.Labels["v"] = "9" }, // rev 9: a snapshot
		func(o *api.Object) { o.Spec["x"] = 1.0 },
	} {
		rev := int64(6 + i)
		edit(t, st, ref, "operator:carol", "apply", fn)
		written[rev] = mustGet(t, st, ref)
	}
	for rev, want := range written {
		at, err := st.At(ctx, ref, rev)
		if err != nil {
			t.Fatalf("At(%d) after re-create: %v", rev, err)
		}
		sameContent(t, fmt.Sprintf("At(%d) after re-create", rev), at, want)
	}

	// Delete again, then roll back to a revision from the first life.
	if _, err := st.Delete(ctx, ref, store.Write{Changer: "operator:bob", Cause: "cleanup"}); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	rb, err := st.Rollback(ctx, ref, 2, store.Write{Changer: "operator:dave"})
	if err != nil {
		t.Fatalf("rollback of a deleted object to 2: %v", err)
	}
	if rb.Op != store.Created || rb.Object.Meta.Revision != 12 {
		t.Errorf("rollback of a deleted object: op %s rev %d, want created rev 12", rb.Op, rb.Object.Meta.Revision)
	}
	got := mustGet(t, st, ref)
	if !reflect.DeepEqual(got.Labels, before[2].Labels) || !reflect.DeepEqual(got.Spec, before[2].Spec) {
		t.Errorf("after rollback to 2: labels %v spec %v, want %v %v", got.Labels, got.Spec, before[2].Labels, before[2].Spec)
	}
	if len(got.Status) != 0 {
		t.Errorf("rollback re-created the object with status %v; a deleted object has none to keep", got.Status)
	}
	h := entries(mustHistory(t, st, ref))
	wantTail := []entry{{11, "operator:bob", "cleanup"}, {12, "operator:dave", "rollback to 2"}}
	if len(h) != 12 || !reflect.DeepEqual(h[10:], wantTail) {
		t.Errorf("history after re-delete and rollback: %+v, want 12 entries ending %+v", h, wantTail)
	}
	if _, err := st.At(ctx, ref, 11); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("At(11), the second deletion: %v, want ErrNotFound", err)
	}
	if _, err := st.Rollback(ctx, ref, 4, store.Write{Changer: "operator:dave"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rollback to the deletion revision: %v, want ErrNotFound", err)
	}
}

// TestRequestDeletion marks an object as being deleted: a revision of its
// own, readable in history, kept by rollback, removed by Delete.
func TestRequestDeletion(t *testing.T) {
	clock := newFakeClock()
	st := newStore(t, store.Options{SnapshotEvery: 4, Now: clock.Now})
	ctx := context.Background()
	ref := podRef("default", "web")
	write(t, st, ref, "operator:alice", "apply", api.Object{Spec: map[string]any{"image": "a:1"}})
	edit(t, st, ref, "operator:alice", "apply", func(o *api.Object) { o.Spec["image"] = "a:2" })

	res, err := st.RequestDeletion(ctx, ref, store.Write{Changer: "operator:bob"})
	if err != nil {
		t.Fatalf("request deletion: %v", err)
	}
	if res.Op != store.Configured || res.Object.Meta.Revision != 3 || res.Object.Meta.Deleting == nil {
		t.Fatalf("request deletion: op %s rev %d deleting %v, want configured rev 3 with a deletion time", res.Op, res.Object.Meta.Revision, res.Object.Meta.Deleting)
	}
	if res.Object.Meta.Generation != 2 {
		t.Errorf("requesting deletion changed the generation to %d", res.Object.Meta.Generation)
	}
	marked := mustGet(t, st, ref)
	if marked.Meta.Deleting == nil || !marked.Meta.Deleting.Equal(*res.Object.Meta.Deleting) {
		t.Errorf("stored deletion mark %v, want %v", marked.Meta.Deleting, res.Object.Meta.Deleting)
	}
	// Asking again changes nothing.
	again, err := st.RequestDeletion(ctx, ref, store.Write{Changer: "operator:carol"})
	if err != nil || again.Op != store.Unchanged || again.Object.Meta.Revision != 3 {
		t.Errorf("second request: op %s rev %d %v, want unchanged rev 3", again.Op, again.Object.Meta.Revision, err)
	}
	// Rollback restores intent, not the deletion mark's absence.
	rb, err := st.Rollback(ctx, ref, 1, store.Write{Changer: "operator:alice"})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Object.Meta.Deleting == nil || rb.Object.Spec["image"] != "a:1" {
		t.Errorf("rollback of an object being deleted: deleting %v image %v, want still deleting with a:1", rb.Object.Meta.Deleting, rb.Object.Spec["image"])
	}
	for rev := int64(1); rev <= 4; rev++ {
		at, err := st.At(ctx, ref, rev)
		if err != nil {
			t.Fatalf("At(%d): %v", rev, err)
		}
		if (at.Meta.Deleting != nil) != (rev >= 3) {
			t.Errorf("At(%d): deleting %v", rev, at.Meta.Deleting)
		}
	}
	sameContent(t, "At(4) vs Get", func() api.Object { o, _ := st.At(ctx, ref, 4); return o }(), mustGet(t, st, ref))
	if _, err := st.Delete(ctx, ref, store.Write{Changer: "controller:workflow", Cause: "delete: stopped"}); err != nil {
		t.Fatal(err)
	}
	checkHistory(t, st, ref, []entry{
		{1, "operator:alice", "apply"},
		{2, "operator:alice", "apply"},
		{3, "operator:bob", "delete requested"},
		{4, "operator:alice", "rollback to 1"},
		{5, "controller:workflow", "delete: stopped"},
	})
	if _, err := st.RequestDeletion(ctx, ref, store.Write{Changer: "operator:bob"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("request deletion of a deleted object: %v, want ErrNotFound", err)
	}
	// Re-created, it is not being deleted.
	res = write(t, st, ref, "operator:alice", "apply", api.Object{Spec: map[string]any{"image": "a:3"}})
	if res.Object.Meta.Deleting != nil {
		t.Errorf("re-created object is marked as being deleted")
	}
}

// TestRollback writes labels and spec of an old revision as a new one and
// keeps the current status.
func TestRollback(t *testing.T) {
	clock := newFakeClock()
	st := newStore(t, store.Options{SnapshotEvery: 4, Now: clock.Now})
	ctx := context.Background()
	ref := podRef("default", "web")

	write(t, st, ref, "operator:alice", "apply", api.Object{
		Labels: map[string]string{"app": "web", "track": "stable"},
		Spec:   map[string]any{"image": "nginx:1", "ports": []any{80.0}},
	}) // 1
	edit(t, st, ref, "controller:scheduler", "status", func(o *api.Object) { o.Status = map[string]any{"node": "n1"} }) // 2
	edit(t, st, ref, "operator:alice", "apply", func(o *api.Object) {
		o.Spec["image"] = "nginx:2"
		o.Spec["ports"] = []any{80.0, 443.0}
	}) // 3
	edit(t, st, ref, "operator:alice", "apply", func(o *api.Object) { delete(o.Labels, "track"); o.Labels["canary"] = "yes" }) // 4
	edit(t, st, ref, "node:n1", "status", func(o *api.Object) { o.Status["phase"] = "Running" })                               // 5
	cur := mustGet(t, st, ref)
	one, err := st.At(ctx, ref, 1)
	if err != nil {
		t.Fatal(err)
	}

	res, err := st.Rollback(ctx, ref, 1, store.Write{Changer: "operator:bob", Cause: "ignored"})
	if err != nil {
		t.Fatalf("rollback to 1: %v", err)
	}
	if res.Op != store.Configured || res.Object.Meta.Revision != 6 {
		t.Errorf("rollback: op %s rev %d, want configured rev 6", res.Op, res.Object.Meta.Revision)
	}
	got := mustGet(t, st, ref)
	if !reflect.DeepEqual(got.Labels, one.Labels) {
		t.Errorf("labels after rollback %v, want those of rev 1 %v", got.Labels, one.Labels)
	}
	if !reflect.DeepEqual(got.Spec, one.Spec) {
		t.Errorf("spec after rollback %v, want that of rev 1 %v", got.Spec, one.Spec)
	}
	if !reflect.DeepEqual(got.Status, cur.Status) {
		t.Errorf("status after rollback %v, want the current one %v", got.Status, cur.Status)
	}
	if got.Meta.Generation != cur.Meta.Generation+1 {
		t.Errorf("generation after rollback %d, want %d (the spec changed)", got.Meta.Generation, cur.Meta.Generation+1)
	}
	if !got.Meta.Created.Equal(cur.Meta.Created) {
		t.Errorf("rollback changed the creation time from %v to %v", cur.Meta.Created, got.Meta.Created)
	}
	h := entries(mustHistory(t, st, ref))
	if last := h[len(h)-1]; last != (entry{6, "operator:bob", "rollback to 1"}) {
		t.Errorf("last history entry %+v, want {6 operator:bob rollback to 1}", last)
	}
	at6, err := st.At(ctx, ref, 6)
	if err != nil {
		t.Fatal(err)
	}
	sameContent(t, "At(6) vs Get after rollback", at6, got)

	// Rolling back to what is already there writes nothing.
	res, err = st.Rollback(ctx, ref, 1, store.Write{Changer: "operator:bob"})
	if err != nil || res.Op != store.Unchanged || res.Object.Meta.Revision != 6 {
		t.Errorf("second rollback to 1: op %s rev %d err %v, want unchanged rev 6", res.Op, res.Object.Meta.Revision, err)
	}
	// Rolling back to a status-only revision restores that revision's
	// labels and spec, still not its status.
	res, err = st.Rollback(ctx, ref, 5, store.Write{Changer: "operator:bob"})
	if err != nil {
		t.Fatalf("rollback to 5: %v", err)
	}
	five, _ := st.At(ctx, ref, 5)
	got = mustGet(t, st, ref)
	if got.Meta.Revision != 7 || !reflect.DeepEqual(got.Spec, five.Spec) || !reflect.DeepEqual(got.Labels, five.Labels) {
		t.Errorf("rollback to 5: rev %d labels %v spec %v, want rev 7 %v %v", got.Meta.Revision, got.Labels, got.Spec, five.Labels, five.Spec)
	}
	if !reflect.DeepEqual(got.Status, cur.Status) {
		t.Errorf("status after rollback to 5 %v, want %v", got.Status, cur.Status)
	}
	if _, err := st.Rollback(ctx, ref, 99, store.Write{Changer: "operator:bob"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rollback to a revision that does not exist: %v, want ErrNotFound", err)
	}
	if n := len(mustHistory(t, st, ref)); n != 7 {
		t.Errorf("history has %d entries, want 7", n)
	}
}

// TestOptimisticConcurrency: a write based on a stale revision fails with a
// conflict that says who moved the object on, and writes nothing.
func TestOptimisticConcurrency(t *testing.T) {
	st := newStore(t, store.Options{})
	ctx := context.Background()
	ref := podRef("default", "web")

	write(t, st, ref, "operator:alice", "apply", api.Object{Spec: map[string]any{"image": "nginx:1"}})
	edit(t, st, ref, "controller:scheduler", "status", func(o *api.Object) { o.Status = map[string]any{"node": "n1"} })
	before := mustGet(t, st, ref)

	called := false
	_, err := st.Mutate(ctx, ref, store.Write{Changer: "operator:bob", Cause: "apply", Expect: 1},
		func(cur *api.Object) (*api.Object, error) {
			called = true
			cur.Spec["image"] = "nginx:2"
			return cur, nil
		})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale write: %v, want ErrConflict", err)
	}
	var ce *store.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("stale write error %T is not a *store.ConflictError", err)
	}
	if ce.Expected != 1 || ce.Actual != 2 || ce.LastChanger != "controller:scheduler" {
		t.Errorf("conflict: expected %d actual %d by %q, want 1, 2, controller:scheduler", ce.Expected, ce.Actual, ce.LastChanger)
	}
	for _, s := range []string{"revision 2", "controller:scheduler", "revision 1"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("conflict message %q does not mention %q", err, s)
		}
	}
	if called {
		t.Errorf("the write function ran although the expected revision was stale")
	}
	after := mustGet(t, st, ref)
	sameContent(t, "object after a refused write", after, before)
	checkHistory(t, st, ref, []entry{{1, "operator:alice", "apply"}, {2, "controller:scheduler", "status"}})

	// Delete with a stale revision is refused too.
	if _, err := st.Delete(ctx, ref, store.Write{Changer: "operator:bob", Expect: 1}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("stale delete: %v, want ErrConflict", err)
	}
	if _, err := st.Get(ctx, ref); err != nil {
		t.Errorf("object gone after a refused delete: %v", err)
	}
	// Expecting a revision of an object that does not exist.
	_, err = st.Mutate(ctx, podRef("default", "nope"), store.Write{Changer: "operator:bob", Expect: 3}, setTo(api.Object{}))
	if !errors.As(err, &ce) || ce.Actual != 0 || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("expecting revision 3 of an absent object: %v, want a conflict saying it does not exist", err)
	}
	if _, err := st.Get(ctx, podRef("default", "nope")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused write created the object: %v", err)
	}
	// The right revision succeeds.
	res, err := st.Mutate(ctx, ref, store.Write{Changer: "operator:bob", Cause: "apply", Expect: 2},
		func(cur *api.Object) (*api.Object, error) { cur.Spec["image"] = "nginx:2"; return cur, nil })
	if err != nil || res.Object.Meta.Revision != 3 {
		t.Errorf("write expecting the current revision: rev %d err %v, want rev 3", res.Object.Meta.Revision, err)
	}
	if _, err := st.Delete(ctx, ref, store.Write{Changer: "operator:bob", Expect: 3}); err != nil {
		t.Errorf("delete expecting the current revision: %v", err)
	}
}

// TestNoLostWrites: concurrent read-modify-write increments all land, each
// as its own revision.
func TestNoLostWrites(t *testing.T) {
	st := newStore(t, store.Options{})
	const workers, perWorker = 8, 50
	const total = workers * perWorker

	counter := func(o api.Object) float64 {
		v, _ := o.Spec["counter"].(float64)
		return v
	}
	run := func(t *testing.T, name string, incr func(ctx context.Context, ref api.Ref, changer string) error) {
		ctx := context.Background()
		ref := podRef("counters", name)
		write(t, st, ref, "operator:setup", "create", api.Object{Spec: map[string]any{"counter": 0.0}})
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				changer := fmt.Sprintf("controller:w%d", w)
				for i := 0; i < perWorker; i++ {
					if err := incr(ctx, ref, changer); err != nil {
						t.Errorf("%s: increment %d: %v", changer, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		final := mustGet(t, st, ref)
		if c := counter(final); c != total {
			t.Errorf("final counter %v, want %d", c, total)
		}
		if final.Meta.Revision != total+1 {
			t.Errorf("final revision %d, want %d", final.Meta.Revision, total+1)
		}
		h := mustHistory(t, st, ref)
		if len(h) != total+1 {
			t.Errorf("history has %d entries, want %d (1 create + %d increments)", len(h), total+1, total)
		}
		perChanger := map[string]int{}
		for i, e := range h {
			if e.Rev != int64(i+1) {
				t.Errorf("history entry %d has rev %d", i, e.Rev)
				break
			}
			perChanger[e.Changer]++
		}
		for w := 0; w < workers; w++ {
			if n := perChanger[fmt.Sprintf("controller:w%d", w)]; n != perWorker {
				t.Errorf("controller:w%d made %d revisions, want %d", w, n, perWorker)
			}
		}
		seen := map[float64]int64{}
		for rev := int64(1); rev <= total+1; rev++ {
			o, err := st.At(ctx, ref, rev)
			if err != nil {
				t.Fatalf("At(%d): %v", rev, err)
			}
			c := counter(o)
			if prev, dup := seen[c]; dup {
				t.Errorf("counter %v at both rev %d and rev %d: a write was lost", c, prev, rev)
			}
			seen[c] = rev
			if c != float64(rev-1) {
				t.Errorf("At(%d) counter %v, want %d", rev, c, rev-1)
			}
		}
	}

	t.Run("expect", func(t *testing.T) {
		run(t, "with-expect", func(ctx context.Context, ref api.Ref, changer string) error {
			for attempt := 0; attempt < 100000; attempt++ {
				o, err := st.Get(ctx, ref)
				if err != nil {
					return err
				}
				next := counter(o) + 1
				_, err = st.Mutate(ctx, ref, store.Write{Changer: changer, Cause: "increment", Expect: o.Meta.Revision},
					func(cur *api.Object) (*api.Object, error) {
						cur.Spec["counter"] = next
						return cur, nil
					})
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				return err
			}
			return errors.New("gave up after too many conflicts")
		})
	})
	t.Run("no-expect", func(t *testing.T) {
		run(t, "without-expect", func(ctx context.Context, ref api.Ref, changer string) error {
			_, err := st.Mutate(ctx, ref, store.Write{Changer: changer, Cause: "increment"},
				func(cur *api.Object) (*api.Object, error) {
					cur.Spec["counter"] = counter(*cur) + 1
					return cur, nil
				})
			return err
		})
	})
}

// TestHistoryFilter selects history entries by changer patterns.
func TestHistoryFilter(t *testing.T) {
	st := newStore(t, store.Options{})
	ref := podRef("default", "web")
	write(t, st, ref, "operator:alice", "apply", api.Object{Spec: map[string]any{"n": 0.0}})
	for i, ch := range []string{"controller:scheduler", "operator:bob", "controller:autoscaler", "node:n1", "controller:scheduler", "operator:alice"} {
		edit(t, st, ref, ch, "w", func(o *api.Object) { o.Spec["n"] = float64(i + 1) })
	}
	all := []entry{
		{1, "operator:alice", "apply"},
		{2, "controller:scheduler", "w"},
		{3, "operator:bob", "w"},
		{4, "controller:autoscaler", "w"},
		{5, "node:n1", "w"},
		{6, "controller:scheduler", "w"},
		{7, "operator:alice", "w"},
	}
	pick := func(revs ...int64) []entry {
		out := []entry{}
		for _, r := range revs {
			out = append(out, all[r-1])
		}
		return out
	}
	for _, c := range []struct {
		patterns []string
		want     []entry
	}{
		{nil, all},
		{[]string{"operator:*"}, pick(1, 3, 7)},
		{[]string{"operator"}, pick(1, 3, 7)},
		{[]string{"!controller:scheduler"}, pick(1, 3, 4, 5, 7)},
		{[]string{"controller:*", "!controller:scheduler"}, pick(4)},
		{[]string{"operator:*,!operator:bob"}, pick(1, 7)},
		{[]string{"operator:*", "node:*", "!operator:alice"}, pick(3, 5)},
		{[]string{"controller:sched*"}, pick(2, 6)},
		{[]string{"operator:nobody"}, pick()},
	} {
		got := entries(mustHistory(t, st, ref, c.patterns...))
		if len(got) == 0 && len(c.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("history filtered by %q:\n got  %+v\n want %+v", c.patterns, got, c.want)
		}
	}
	f, err := identity.ParseFilter([]string{"operator:*"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.History(context.Background(), podRef("default", "never"), f); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("history of an object that never existed: %v, want ErrNotFound", err)
	}
}

// TestList lists by namespace, across namespaces and for cluster-scoped
// kinds, sorted.
func TestList(t *testing.T) {
	st := newStore(t, store.Options{})
	ctx := context.Background()
	for _, r := range []api.Ref{
		podRef("beta", "db"), podRef("alpha", "web"), podRef("alpha", "api"),
		podRef("alpha", "web-2"), podRef("gamma", "a"),
		{Kind: "Node", Name: "n2"}, {Kind: "Node", Name: "n1"}, {Kind: "Node", Name: "n10"},
		{Kind: "Grant", Name: "g1"},
	} {
		write(t, st, r, "operator:alice", "apply", api.Object{Spec: map[string]any{"x": r.Name}})
	}
	if _, err := st.Delete(ctx, podRef("gamma", "a"), store.Write{Changer: "operator:alice"}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		kind, ns string
		want     []string
	}{
		{"Pod", "alpha", []string{"alpha/api", "alpha/web", "alpha/web-2"}},
		{"Pod", "beta", []string{"beta/db"}},
		{"Pod", "gamma", []string{}},
		{"Pod", "alp", []string{}},
		{"Pod", "", []string{"alpha/api", "alpha/web", "alpha/web-2", "beta/db"}},
		{"Node", "", []string{"n1", "n10", "n2"}},
		{"Grant", "", []string{"g1"}},
		{"Controller", "", []string{}},
	} {
		objs, rev, err := st.List(ctx, c.kind, c.ns)
		if err != nil {
			t.Errorf("list %s in %q: %v", c.kind, c.ns, err)
			continue
		}
		if got := names(objs); !reflect.DeepEqual(got, c.want) {
			t.Errorf("list %s in %q: %v, want %v", c.kind, c.ns, got, c.want)
		}
		if rev <= 0 {
			t.Errorf("list %s in %q: store revision %d", c.kind, c.ns, rev)
		}
		for _, o := range objs {
			if o.Kind != c.kind || o.Spec["x"] != o.Name || o.Meta.Revision != 1 {
				t.Errorf("list %s in %q: object %+v is not what was written", c.kind, c.ns, o)
			}
		}
	}
	n, err := st.Get(ctx, api.Ref{Kind: "Node", Name: "n1"})
	if err != nil || n.Namespace != "" || n.Name != "n1" {
		t.Errorf("get node n1: %+v %v", n, err)
	}
}

// Regression: List across namespaces sorts by namespace, then name; in
// etcd key order (KIND/NS/NAME) "team-b/" comes before "team/" ('-' < '/').
func TestListAcrossNamespacesSortsByNamespace(t *testing.T) {
	st := newStore(t, store.Options{})
	ctx := context.Background()
	for _, r := range []api.Ref{podRef("team", "web"), podRef("team-b", "api")} {
		write(t, st, r, "operator:alice", "apply", api.Object{Spec: map[string]any{"x": 1.0}})
	}
	objs, _, err := st.List(ctx, "Pod", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(objs), []string{"team/web", "team-b/api"}; !reflect.DeepEqual(got, want) {
		t.Errorf("list across namespaces: %v, want %v (sorted by namespace, then name)", got, want)
	}
}

// TestWatch sees what happens after a list, in order.
func TestWatch(t *testing.T) {
	st := newStore(t, store.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := podRef("apps", "old")
	write(t, st, old, "operator:alice", "apply", api.Object{Spec: map[string]any{"image": "a:1"}})
	_, rev, err := st.List(ctx, "Pod", "apps")
	if err != nil {
		t.Fatal(err)
	}
	nsEvents := st.Watch(ctx, "Pod", "apps", rev)
	allEvents := st.Watch(ctx, "Pod", "", rev)
	nodeEvents := st.Watch(ctx, "Node", "", rev)

	web := podRef("apps", "web")
	write(t, st, web, "operator:alice", "apply", api.Object{Labels: map[string]string{"app": "web"}, Spec: map[string]any{"image": "web:1"}})
	write(t, st, podRef("other", "x"), "operator:alice", "apply", api.Object{Spec: map[string]any{"image": "x:1"}})
	edit(t, st, web, "operator:alice", "apply", func(o *api.Object) { o.Spec["image"] = "web:2" })
	if _, err := st.Delete(ctx, old, store.Write{Changer: "operator:alice"}); err != nil {
		t.Fatal(err)
	}
	write(t, st, api.Ref{Kind: "Node", Name: "n1"}, "node:n1", "register", api.Object{Status: map[string]any{"addr": "10.0.0.1"}})
	// Re-creating the deleted object is a creation again.
	write(t, st, old, "operator:alice", "apply", api.Object{Spec: map[string]any{"image": "a:2"}})

	type ev struct {
		Type  store.Op
		Name  string
		Rev   int64
		Image any
	}
	check := func(ch <-chan store.Event, what string, want []ev) {
		t.Helper()
		var lastRev int64
		for i, w := range want {
			select {
			case e, ok := <-ch:
				if !ok || e.Err != nil {
					t.Fatalf("%s event %d: closed or failed: %v", what, i, e.Err)
				}
				if e.Revision <= lastRev {
					t.Errorf("%s event %d: store revision %d not after %d", what, i, e.Revision, lastRev)
				}
				lastRev = e.Revision
				if e.Revision <= rev {
					t.Errorf("%s event %d: store revision %d is not after the list revision %d", what, i, e.Revision, rev)
				}
				got := ev{e.Type, e.Object.Namespace + "/" + e.Object.Name, e.Object.Meta.Revision, e.Object.Spec["image"]}
				if got != w {
					t.Errorf("%s event %d: %+v, want %+v", what, i, got, w)
				}
			case <-ctx.Done():
				t.Fatalf("%s event %d: none before the test's deadline", what, i)
			}
		}
	}
	check(nsEvents, "watch of namespace apps", []ev{
		{store.Created, "apps/web", 1, "web:1"},
		{store.Configured, "apps/web", 2, "web:2"},
		{store.Deleted, "apps/old", 1, "a:1"},
		{store.Created, "apps/old", 3, "a:2"},
	})
	check(allEvents, "watch of all namespaces", []ev{
		{store.Created, "apps/web", 1, "web:1"},
		{store.Created, "other/x", 1, "x:1"},
		{store.Configured, "apps/web", 2, "web:2"},
		{store.Deleted, "apps/old", 1, "a:1"},
		{store.Created, "apps/old", 3, "a:2"},
	})
	check(nodeEvents, "watch of nodes", []ev{{store.Created, "/n1", 1, nil}})

	// Nothing else arrives, and the channel closes when the context ends.
	select {
	case e := <-nsEvents:
		t.Errorf("unexpected extra event %+v", e)
	default:
	}
	cancel()
	for range nsEvents {
	}
}

// TestRestartKeepsData: objects and history survive restarting etcd on the
// same directory.
func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, stop := startEtcd(t, dir)
	o := store.Options{SnapshotEvery: 4}
	st := store.New(e.Client, o)
	web, gone, node := podRef("default", "web"), podRef("default", "gone"), api.Ref{Kind: "Node", Name: "n1"}
	write(t, st, web, "operator:alice", "apply", api.Object{Labels: map[string]string{"app": "web"}, Spec: map[string]any{"v": 0.0}})
	for i := 1; i <= 6; i++ {
		edit(t, st, web, "operator:bob", "apply", func(o *api.Object) { o.Spec["v"] = float64(i) })
	}
	write(t, st, gone, "operator:alice", "apply", api.Object{Spec: map[string]any{"v": 1.0}})
	if _, err := st.Delete(ctx, gone, store.Write{Changer: "operator:carol"}); err != nil {
		t.Fatal(err)
	}
	write(t, st, node, "node:n1", "register", api.Object{Status: map[string]any{"addr": "10.0.0.1"}})

	beforeObj := mustGet(t, st, web)
	beforeHist := mustHistory(t, st, web)
	beforeAt := map[int64]api.Object{}
	for rev := int64(1); rev <= 7; rev++ {
		a, err := st.At(ctx, web, rev)
		if err != nil {
			t.Fatal(err)
		}
		beforeAt[rev] = a
	}
	stop()

	e2, _ := startEtcd(t, dir)
	st2 := store.New(e2.Client, o)
	sameContent(t, "web after restart", mustGet(t, st2, web), beforeObj)
	if got := mustHistory(t, st2, web); !reflect.DeepEqual(got, beforeHist) {
		t.Errorf("history after restart:\n got  %+v\n want %+v", got, beforeHist)
	}
	for rev, want := range beforeAt {
		a, err := st2.At(ctx, web, rev)
		if err != nil {
			t.Errorf("At(%d) after restart: %v", rev, err)
			continue
		}
		sameContent(t, fmt.Sprintf("At(%d) after restart", rev), a, want)
	}
	checkHistory(t, st2, gone, []entry{{1, "operator:alice", "apply"}, {2, "operator:carol", "delete"}})
	if _, err := st2.Get(ctx, gone); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted object after restart: %v, want ErrNotFound", err)
	}
	pods, _, err := st2.List(ctx, "Pod", "")
	if err != nil || !reflect.DeepEqual(names(pods), []string{"default/web"}) {
		t.Errorf("pods after restart: %v %v", names(pods), err)
	}
	if n := mustGet(t, st2, node); n.Status["addr"] != "10.0.0.1" {
		t.Errorf("node after restart: %+v", n)
	}
	// Writing continues the revisions.
	res := edit(t, st2, web, "operator:alice", "apply", func(o *api.Object) { o.Spec["v"] = 7.0 })
	if res.Object.Meta.Revision != 8 || res.Object.Meta.Generation != beforeObj.Meta.Generation+1 {
		t.Errorf("first write after restart: rev %d gen %d, want 8 and %d", res.Object.Meta.Revision, res.Object.Meta.Generation, beforeObj.Meta.Generation+1)
	}
	res = write(t, st2, gone, "operator:alice", "apply", api.Object{Spec: map[string]any{"v": 2.0}})
	if res.Op != store.Created || res.Object.Meta.Revision != 3 {
		t.Errorf("re-create after restart: op %s rev %d, want created rev 3", res.Op, res.Object.Meta.Revision)
	}
}

// TestAtRandomWalk: a long, seeded sequence of random edits, deletions,
// re-creations and rollbacks with a snapshot every 3 revisions; the current
// object always matches a model of what was written, and At(n) gives back
// exactly what Get gave right after revision n.
func TestAtRandomWalk(t *testing.T) {
	st := newStore(t, store.Options{SnapshotEvery: 3, Now: newFakeClock().Now})
	ctx := context.Background()
	ref := podRef("walk", "obj")
	rng := rand.New(rand.NewPCG(1, 2))

	type model struct {
		Labels map[string]string
		Spec   map[string]any
		Status map[string]any
	}
	randLeaf := func() any {
		switch rng.IntN(5) {
		case 0:
			return float64(rng.IntN(10))
		case 1:
			return fmt.Sprintf("s%d", rng.IntN(10))
		case 2:
			return rng.IntN(2) == 0
		case 3:
			l := make([]any, rng.IntN(4))
			for i := range l {
				l[i] = float64(rng.IntN(3))
			}
			return l
		}
		return map[string]any{fmt.Sprintf("k%d", rng.IntN(3)): float64(rng.IntN(3))}
	}
	mutateTree := func(m map[string]any) map[string]any {
		if m == nil {
			m = map[string]any{}
		}
		k := fmt.Sprintf("f%d", rng.IntN(5))
		switch rng.IntN(4) {
		case 0:
			delete(m, k)
		case 1:
			if sub, ok := m[k].(map[string]any); ok {
				sub[fmt.Sprintf("k%d", rng.IntN(3))] = randLeaf()
				break
			}
			m[k] = randLeaf()
		case 2:
			if l, ok := m[k].([]any); ok && len(l) > 0 {
				l[rng.IntN(len(l))] = randLeaf()
				break
			}
			m[k] = randLeaf()
		default:
			m[k] = randLeaf()
		}
		return m
	}

	var (
		exists  bool
		cur     model
		gen     int64
		rev     int64
		written = map[int64]*api.Object{} // nil: deleted at that revision
		live    []int64                   // revisions at which the object existed
	)
	toModel := func(o api.Object) model {
		return model{Labels: o.Labels, Spec: o.Spec, Status: o.Status}
	}
	for step := 0; step < 150; step++ {
		var op string
		r := rng.IntN(10)
		switch {
		case !exists && r < 3 && len(live) > 0:
			op = "rollback"
		case !exists:
			op = "create"
		case r == 0:
			op = "delete"
		case r == 1 && len(live) > 0:
			op = "rollback"
		default:
			op = "edit"
		}
		var res store.Result
		var err error
		next := model{}
		switch op {
		case "create":
			next = model{Labels: map[string]string{"step": fmt.Sprint(step)}, Spec: mutateTree(nil)}
			res, err = st.Mutate(ctx, ref, store.Write{Changer: "operator:w", Cause: op}, setTo(api.Object{Labels: next.Labels, Spec: next.Spec}))
		case "delete":
			_, err = st.Delete(ctx, ref, store.Write{Changer: "operator:w"})
		case "rollback":
			to := live[rng.IntN(len(live))]
			old := written[to]
			next = model{Labels: old.Labels, Spec: old.Spec}
			if exists {
				next.Status = cur.Status
			}
			op = fmt.Sprintf("rollback to %d", to)
			res, err = st.Rollback(ctx, ref, to, store.Write{Changer: "operator:w"})
		case "edit":
			o := api.Object{Labels: cur.Labels, Spec: cur.Spec, Status: cur.Status}
			c := o.DeepCopy()
			switch rng.IntN(3) {
			case 0:
				if c.Labels == nil {
					c.Labels = map[string]string{}
				}
				k := fmt.Sprintf("l%d", rng.IntN(3))
				if _, ok := c.Labels[k]; ok && rng.IntN(2) == 0 {
					delete(c.Labels, k)
				} else {
					c.Labels[k] = fmt.Sprint(rng.IntN(5))
				}
			case 1:
				c.Spec = mutateTree(c.Spec)
			default:
				c.Status = mutateTree(c.Status)
			}
			next = toModel(c)
			res, err = st.Mutate(ctx, ref, store.Write{Changer: "operator:w", Cause: op}, setTo(c))
		}
		if err != nil {
			t.Fatalf("step %d %s: %v", step, op, err)
		}
		if op == "delete" {
			rev++
			exists = false
			written[rev] = nil
			continue
		}
		if res.Op == store.Unchanged {
			got := mustGet(t, st, ref)
			if got.Meta.Revision != rev {
				t.Fatalf("step %d %s: unchanged, but revision moved from %d to %d", step, op, rev, got.Meta.Revision)
			}
			continue
		}
		rev++
		if !exists || res.Op == store.Created {
			gen = 1
		} else if !reflect.DeepEqual(jsonTree(t, cur.Spec), jsonTree(t, next.Spec)) {
			gen++
		}
		exists = true
		cur = toModel(jsonObject(t, api.Object{Labels: next.Labels, Spec: next.Spec, Status: next.Status}))
		got := mustGet(t, st, ref)
		if got.Meta.Revision != rev || got.Meta.Generation != gen {
			t.Fatalf("step %d %s: rev %d gen %d, want rev %d gen %d", step, op, got.Meta.Revision, got.Meta.Generation, rev, gen)
		}
		if !reflect.DeepEqual(jsonTree(t, toModel(got)), jsonTree(t, cur)) {
			t.Fatalf("step %d %s: stored %+v, want %+v", step, op, toModel(got), cur)
		}
		written[rev] = &got
		live = append(live, rev)
	}
	if len(live) < 100 {
		t.Fatalf("only %d live revisions in the walk", len(live))
	}
	h := mustHistory(t, st, ref)
	if int64(len(h)) != rev {
		t.Errorf("history has %d entries, want %d", len(h), rev)
	}
	for n := int64(1); n <= rev; n++ {
		at, err := st.At(ctx, ref, n)
		want := written[n]
		if want == nil {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("At(%d), a deletion: %v, want ErrNotFound", n, err)
			}
			if h[n-1].Cause != "delete" {
				t.Errorf("history entry %d: cause %q, want delete", n, h[n-1].Cause)
			}
			continue
		}
		if err != nil {
			t.Errorf("At(%d): %v", n, err)
			continue
		}
		sameContent(t, fmt.Sprintf("At(%d) (%s)", n, h[n-1].Cause), at, *want)
	}
}

// jsonObject round-trips an object through JSON, as the store does.
func jsonObject(t *testing.T, o api.Object) api.Object {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var out api.Object
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Regression: a snapshot of an object with an empty body (no labels, spec,
// status or owner, e.g. a bare Node) must read back; with record.Full
// tagged omitempty and no other mark, it read back as a patch with no base
// ("history damaged") for that revision and every later one up to the next
// snapshot.
func TestAtEmptyObject(t *testing.T) {
	st := newStore(t, store.Options{SnapshotEvery: 4})
	ctx := context.Background()
	ref := api.Ref{Kind: "Node", Name: "n1"}
	write(t, st, ref, "operator:alice", "apply", api.Object{})
	edit(t, st, ref, "node:n1", "status", func(o *api.Object) { o.Status = map[string]any{"addr": "10.0.0.1"} })
	for rev := int64(1); rev <= 2; rev++ {
		o, err := st.At(ctx, ref, rev)
		if err != nil {
			t.Errorf("At(%d) of a node created with no labels, spec or status: %v", rev, err)
			continue
		}
		if o.Name != "n1" || o.Meta.Revision != rev {
			t.Errorf("At(%d): %+v", rev, o)
		}
	}
	if _, err := st.Rollback(ctx, ref, 1, store.Write{Changer: "operator:alice"}); err != nil {
		t.Errorf("rollback to the empty revision 1: %v", err)
	}
}
