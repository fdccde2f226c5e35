package store_test

import (
	"context"
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
