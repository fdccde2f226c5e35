package store_test

import (
	"context"
	"errors"
	"testing"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/store"
)

// Two servers on one etcd: each store remembers the objects it wrote, and
// neither loses or misreports the other's changes because of it.
func TestTwoStoresOnOneEtcd(t *testing.T) {
	e, _ := startEtcd(t, "")
	a := store.New(e.Client, store.Options{})
	b := store.New(e.Client, store.Options{})
	ctx := context.Background()
	ref := podRef("default", "web")
	withEnv := func(v string) func(*api.Object) {
		return func(o *api.Object) { o.Spec = map[string]any{"env": v} }
	}

	write(t, a, ref, "operator:alice", "apply", api.Object{Spec: map[string]any{"env": "1"}})
	edit(t, b, ref, "operator:bob", "apply", withEnv("2"))
	// a remembers revision 1; its change is made on revision 2 (fn may
	// be asked first on what a remembers, but the last time on etcd's).
	res := edit(t, a, ref, "operator:alice", "apply", func(o *api.Object) {
		o.Labels = map[string]string{"app": "web"}
	})
	if res.Object.Meta.Revision != 3 || res.Object.Spec["env"] != "2" || res.Object.Labels["app"] != "web" {
		t.Errorf("after both: rev %d spec %v labels %v, want rev 3 with env 2 and app=web", res.Object.Meta.Revision, res.Object.Spec, res.Object.Labels)
	}

	// A change that is no change on what a remembers is one on etcd's.
	edit(t, b, ref, "operator:bob", "apply", withEnv("4"))
	res = edit(t, a, ref, "operator:alice", "apply", withEnv("2"))
	if res.Op != store.Configured || res.Object.Meta.Revision != 5 {
		t.Errorf("setting env back to 2 after b set 4: %s at rev %d, want configured at rev 5", res.Op, res.Object.Meta.Revision)
	}
	// And no change on etcd's is reported unchanged.
	res = edit(t, b, ref, "operator:bob", "apply", withEnv("2"))
	if res.Op != store.Unchanged || res.Object.Meta.Revision != 5 {
		t.Errorf("b setting env 2 again: %s at rev %d, want unchanged at rev 5", res.Op, res.Object.Meta.Revision)
	}

	// An expected revision is checked against etcd, not what a remembers.
	if _, err := a.Mutate(ctx, ref, store.Write{Changer: "operator:alice", Expect: 5}, setTo(api.Object{Spec: map[string]any{"env": "6"}})); err != nil {
		t.Fatalf("write expecting revision 5, which a has not seen written: %v", err)
	}

	// Deleted by b, a's edit finds nothing; re-created by a, its history
	// goes on after b's deletion.
	if _, err := b.Delete(ctx, ref, store.Write{Changer: "operator:bob"}); err != nil {
		t.Fatal(err)
	}
	_, err := a.Mutate(ctx, ref, store.Write{Changer: "operator:alice"}, func(cur *api.Object) (*api.Object, error) {
		if cur == nil {
			return nil, errors.New("object vanished")
		}
		return cur, nil
	})
	if err == nil || err.Error() != "object vanished" {
		t.Errorf("editing an object deleted elsewhere: %v, want object vanished", err)
	}
	res = write(t, a, ref, "operator:alice", "apply", api.Object{Spec: map[string]any{"env": "8"}})
	if res.Op != store.Created || res.Object.Meta.Revision != 8 {
		t.Errorf("re-created: %s at rev %d, want created at rev 8", res.Op, res.Object.Meta.Revision)
	}
	h, err := b.History(ctx, ref, identity.Filter{})
	if err != nil || len(h) != 8 {
		t.Fatalf("history: %d entries, %v; want 8", len(h), err)
	}
}
