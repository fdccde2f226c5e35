package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/store"
)

// startEtcd starts an embedded etcd member in dir (a fresh temporary
// directory if dir is "") and stops it when the test ends. The returned stop
// function may be called earlier, to restart the member on the same dir; it
// is safe to call more than once.
func startEtcd(t *testing.T, dir string) (*store.Embedded, func()) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: dir})
	if err != nil {
		t.Fatalf("start embedded etcd in %s: %v", dir, err)
	}
	var once sync.Once
	stop := func() { once.Do(e.Close) }
	t.Cleanup(stop)
	return e, stop
}

// newStore starts a fresh embedded etcd and returns a store on it.
func newStore(t *testing.T, o store.Options) *store.Store {
	t.Helper()
	e, _ := startEtcd(t, "")
	return store.New(e.Client, o)
}

// fakeClock is a deterministic clock for store.Options.Now: every reading
// is one second after the previous one. It is not safe for concurrent use
// by writers that race; tests that race use the real clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// pod returns a Pod reference in namespace ns.
func podRef(ns, name string) api.Ref { return api.Ref{Kind: "Pod", Namespace: ns, Name: name} }

// setTo returns a Mutate function that replaces the object's labels, spec,
// status and owner with those of want (whether or not it exists).
func setTo(want api.Object) func(*api.Object) (*api.Object, error) {
	return func(cur *api.Object) (*api.Object, error) {
		next := want.DeepCopy()
		return &next, nil
	}
}

// write replaces an object's content and fails the test on error.
func write(t *testing.T, st *store.Store, ref api.Ref, changer, cause string, want api.Object) store.Result {
	t.Helper()
	res, err := st.Mutate(context.Background(), ref, store.Write{Changer: changer, Cause: cause}, setTo(want))
	if err != nil {
		t.Fatalf("write %s by %s: %v", ref, changer, err)
	}
	return res
}

// edit changes an object in place via fn and fails the test on error.
func edit(t *testing.T, st *store.Store, ref api.Ref, changer, cause string, fn func(o *api.Object)) store.Result {
	t.Helper()
	res, err := st.Mutate(context.Background(), ref, store.Write{Changer: changer, Cause: cause},
		func(cur *api.Object) (*api.Object, error) {
			if cur == nil {
				return nil, errors.New("object vanished")
			}
			fn(cur)
			return cur, nil
		})
	if err != nil {
		t.Fatalf("edit %s by %s: %v", ref, changer, err)
	}
	return res
}

func mustGet(t *testing.T, st *store.Store, ref api.Ref) api.Object {
	t.Helper()
	o, err := st.Get(context.Background(), ref)
	if err != nil {
		t.Fatalf("get %s: %v", ref, err)
	}
	return o
}

func mustHistory(t *testing.T, st *store.Store, ref api.Ref, patterns ...string) []store.Entry {
	t.Helper()
	f, err := identity.ParseFilter(patterns)
	if err != nil {
		t.Fatalf("filter %q: %v", patterns, err)
	}
	h, err := st.History(context.Background(), ref, f)
	if err != nil {
		t.Fatalf("history of %s: %v", ref, err)
	}
	return h
}

// entry is the part of a history entry tests compare.
type entry struct {
	Rev     int64
	Changer string
	Cause   string
}

func entries(h []store.Entry) []entry {
	out := make([]entry, len(h))
	for i, e := range h {
		out[i] = entry{e.Rev, e.Changer, e.Cause}
	}
	return out
}

func checkHistory(t *testing.T, st *store.Store, ref api.Ref, want []entry, patterns ...string) {
	t.Helper()
	got := entries(mustHistory(t, st, ref, patterns...))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("history of %s (filter %q):\n got  %+v\n want %+v", ref, patterns, got, want)
	}
}

// jsonTree round-trips v through JSON, the form in which the store returns
// trees (numbers as float64, lists as []any).
func jsonTree(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %v: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return out
}

// sameContent compares what a user sees of two objects: identity, labels,
// spec, status, owner, deletion mark and the meta counters and times. Empty and absent
// maps are the same.
func sameContent(t *testing.T, what string, got, want api.Object) {
	t.Helper()
	g := jsonTree(t, contentOf(got))
	w := jsonTree(t, contentOf(want))
	if !reflect.DeepEqual(g, w) {
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		t.Errorf("%s:\n got  %s\n want %s", what, gb, wb)
	}
}

func contentOf(o api.Object) map[string]any {
	m := map[string]any{
		"kind": o.Kind, "namespace": o.Namespace, "name": o.Name,
		"revision": o.Meta.Revision, "generation": o.Meta.Generation,
		"created": o.Meta.Created.UTC().Format(time.RFC3339Nano),
		"updated": o.Meta.Updated.UTC().Format(time.RFC3339Nano),
		"owner":   o.Meta.Owner,
	}
	if o.Meta.Deleting != nil {
		m["deleting"] = o.Meta.Deleting.UTC().Format(time.RFC3339Nano)
	}
	if len(o.Labels) > 0 {
		m["labels"] = o.Labels
	}
	if len(o.Spec) > 0 {
		m["spec"] = o.Spec
	}
	if len(o.Status) > 0 {
		m["status"] = o.Status
	}
	return m
}

func names(objs []api.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		if o.Namespace != "" {
			out[i] = o.Namespace + "/" + o.Name
		} else {
			out[i] = o.Name
		}
	}
	return out
}
