package store_test

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
	"skiff.dev/skiff/store"
)

// setStatus returns next, a copy-on-write change of cur: status.key set
// to v (deleted if v is nil), sharing labels, spec and every other status
// field with cur. Of an object the store takes to be absent, it changes
// nothing (the store then reads it).
func setStatus(cur *api.Object, key string, v any) *api.Object {
	if cur == nil {
		return nil
	}
	next := *cur
	next.Status = maps.Clone(cur.Status)
	if next.Status == nil {
		next.Status = map[string]any{}
	}
	if v == nil {
		delete(next.Status, key)
	} else {
		next.Status[key] = v
	}
	return &next
}

// MutateShared writes what Mutate writes, byte for byte (the object and
// every revision, patches and snapshots), when fn returns an object
// sharing what it left alone with cur; and cur, which fn gets without a
// copy, is never changed.
func TestMutateSharedWritesAsMutate(t *testing.T) {
	e, _ := startEtcd(t, "")
	ctx := context.Background()
	// One fixed time: the stores make different numbers of attempts.
	now := func() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) }
	copied := store.New(e.Client, store.Options{Prefix: "/copied", SnapshotEvery: 3, Now: now})
	shared := store.New(e.Client, store.Options{Prefix: "/shared", SnapshotEvery: 3, Now: now})
	// Another server writing the shared store's objects, so that it
	// loses races and fn runs again on what etcd has.
	other := store.New(e.Client, store.Options{Prefix: "/shared", SnapshotEvery: 3, Now: now})
	ref := podRef("default", "web")
	w := store.Write{Changer: "controller:test", Cause: "step"}
	start := api.Object{Labels: map[string]string{"app": "web"},
		Spec: map[string]any{"image": "nginx", "containers": []any{map[string]any{"name": "web"}}}}
	for _, st := range []*store.Store{copied, shared} {
		if _, err := st.Mutate(ctx, ref, w, setTo(start)); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		key string
		v   any
	}{
		{"node", "n1"}, {"phase", "Pending"}, {"phase", "Running"}, {"phase", "Running"},
		{"containers", []any{map[string]any{"ready": true}}}, {"node", nil}, {"ip", "10.0.0.1"}, {"phase", nil},
	}
	for i, step := range steps {
		if i == 3 {
			// The other server writes, and writes back: the shared store's
			// remembered object is stale, its write fails the compare.
			for _, v := range []any{"elsewhere", nil} {
				if _, err := other.MutateShared(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
					return setStatus(cur, "x", v), nil
				}); err != nil {
					t.Fatal(err)
				}
				if _, err := copied.Mutate(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
					return setStatus(cur, "x", v), nil
				}); err != nil {
					t.Fatal(err)
				}
			}
		}
		want, err := copied.Mutate(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
			return setStatus(cur, step.key, step.v), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		got, err := shared.MutateShared(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
			calls++
			before := cur.DeepCopy()
			next := setStatus(cur, step.key, step.v)
			t.Cleanup(func() {
				if !reflect.DeepEqual(*cur, before) {
					t.Errorf("step %d: cur changed: %+v, was %+v", i, *cur, before)
				}
			})
			return next, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if i == 3 && calls != 2 {
			t.Errorf("step %d after another server wrote: fn called %d times, want 2", i, calls)
		}
		if got.Op != want.Op || !reflect.DeepEqual(got.Object, want.Object) {
			t.Errorf("step %d: MutateShared gave %s %+v, Mutate %s %+v", i, got.Op, got.Object, want.Op, want.Object)
		}
	}
	read := func(prefix string) map[string]string {
		resp, err := e.Client.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		kvs := map[string]string{}
		for _, kv := range resp.Kvs {
			kvs[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
		}
		return kvs
	}
	got, want := read("/shared/"), read("/copied/")
	if len(want) < len(steps) {
		t.Fatalf("only %d keys written", len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s:\nshared %s\ncopied %s", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("shared store has %d keys, copied %d", len(got), len(want))
	}
}

// A step's field writes applied copy-on-write, as the orchestrator does:
// the object fn got is left as it was, and the revision's patch is what a
// whole copy would give.
func TestMutateSharedFieldWrites(t *testing.T) {
	st := newStore(t, store.Options{Now: newFakeClock().Now})
	ctx := context.Background()
	ref := podRef("default", "web")
	w := store.Write{Changer: "controller:test", Cause: "step"}
	write(t, st, ref, "operator:alice", "apply", api.Object{Labels: map[string]string{"app": "web"},
		Spec: map[string]any{"image": "nginx"}, Status: map[string]any{"node": "n1", "containers": []any{map[string]any{"ready": false}}}})
	edits, err := fieldpath.Edits([]fieldpath.Op{{Path: "status.containers[0].ready", Value: true}, {Path: "status.phase", Value: "Running"}})
	if err != nil {
		t.Fatal(err)
	}
	var before api.Object
	var cur *api.Object
	res, err := st.MutateShared(ctx, ref, w, func(c *api.Object) (*api.Object, error) {
		cur, before = c, c.DeepCopy()
		nb, err := fieldpath.ApplyEdits(c.Body(), edits)
		if err != nil {
			return nil, err
		}
		next := *c
		next.SetBody(nb.(map[string]any))
		return &next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*cur, before) {
		t.Errorf("cur changed: %+v, was %+v", *cur, before)
	}
	if res.Object.Status["phase"] != "Running" || !reflect.DeepEqual(res.Object.Status["containers"], []any{map[string]any{"ready": true}}) {
		t.Errorf("written status %v", res.Object.Status)
	}
	old, err := st.At(ctx, ref, 1)
	if err != nil {
		t.Fatal(err)
	}
	now, err := st.At(ctx, ref, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(now.Status, res.Object.Status) || !reflect.DeepEqual(old.Status, before.Status) {
		t.Errorf("history: rev 1 %v, rev 2 %v", old.Status, now.Status)
	}
}

// A watch of shared objects (the workflows') sees exactly what Watch sees,
// decoded types and all, for writes whose objects the store kept (a string
// set by MutateShared) and for writes it decodes again (an int or a
// []string, which decoding turns into float64 and []any; a Mutate).
func TestWatchSharedSeesWhatWatchSees(t *testing.T) {
	ctx, st, ref, w := newPod(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, rev, err := st.List(ctx, "Pod", "")
	if err != nil {
		t.Fatal(err)
	}
	plain := st.Watch(ctx, "Pod", "", rev)
	shared := st.WatchShared(ctx, "Pod", "", rev)
	writes := []any{"n1", 3, []string{"a", "b"}, map[string]any{"x": "y"}}
	for _, v := range writes {
		if _, err := st.MutateShared(ctx, ref, w, func(cur *api.Object) (*api.Object, error) { return setStatus(cur, "v", v), nil }); err != nil {
			t.Fatal(err)
		}
	}
	edit(t, st, ref, "operator:alice", "apply", func(o *api.Object) { o.Labels = map[string]string{"app": "web"} })
	for i := range len(writes) + 1 {
		a, b := <-plain, <-shared
		if a.Err != nil || b.Err != nil {
			t.Fatalf("event %d: errors %v, %v", i, a.Err, b.Err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("event %d:\n Watch       %+v\n WatchShared %+v", i, a, b)
		}
	}
}

// A shared object modified in place is found out the next time it is
// used (test binaries check): here a MutateShared caller changes the
// object it wrote after the write, which would make the next write's diff,
// and so the history, wrong.
func TestSharedObjectModifiedInPlacePanics(t *testing.T) {
	ctx, st, ref, w := newPod(t)
	var wrote *api.Object
	if _, err := st.MutateShared(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
		wrote = setStatus(cur, "node", "n1")
		return wrote, nil
	}); err != nil {
		t.Fatal(err)
	}
	wrote.Status["node"] = "n2" // forbidden: the store keeps it
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "modified in place") {
			t.Fatalf("recovered %v, want a panic about a shared object modified in place", r)
		}
	}()
	st.MutateShared(ctx, ref, w, func(cur *api.Object) (*api.Object, error) { return setStatus(cur, "ip", "fd00::1"), nil })
}

// Mutate's fn gets a copy of its own, which it may change in place, even
// of an object the store keeps shared; what it wrote stays its own.
func TestMutateCopiesSharedObjects(t *testing.T) {
	ctx, st, ref, w := newPod(t)
	if _, err := st.MutateShared(ctx, ref, w, func(cur *api.Object) (*api.Object, error) { return setStatus(cur, "node", "n1"), nil }); err != nil {
		t.Fatal(err)
	}
	res, err := st.Mutate(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
		cur.Status["node"] = "n2" // in place: allowed to Mutate
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Object.Status["node"] = "n3" // the caller's own
	// The next shared write starts from n2, as stored, and does not panic.
	if _, err := st.MutateShared(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
		if cur.Status["node"] != "n2" {
			t.Errorf("base status.node = %v, want n2", cur.Status["node"])
		}
		return setStatus(cur, "ip", "fd00::1"), nil
	}); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, st, ref)
	if got.Status["node"] != "n2" || got.Status["ip"] != "fd00::1" {
		t.Errorf("status = %v, want node n2 and ip fd00::1", got.Status)
	}
}

// newPod starts a store with one pod written, and returns the write a
// step's would be.
func newPod(t *testing.T) (context.Context, *store.Store, api.Ref, store.Write) {
	e, _ := startEtcd(t, "")
	ctx := context.Background()
	st := store.New(e.Client, store.Options{})
	ref := podRef("default", "web")
	w := store.Write{Changer: "controller:test", Cause: "step"}
	if _, err := st.Mutate(ctx, ref, w, setTo(api.Object{Spec: map[string]any{"image": "nginx"}})); err != nil {
		t.Fatal(err)
	}
	return ctx, st, ref, w
}
