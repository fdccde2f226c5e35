package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
)

// TestGroupedWrites: writes that arrive together share transactions, and
// each is still decided on its own: all of many concurrent creations
// land, each once; under a guard that no longer holds, none does.
func TestGroupedWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := StartEmbedded(ctx, EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := New(e.Client, Options{})
	if _, err := e.Client.Put(ctx, "/term", "1"); err != nil {
		t.Fatal(err)
	}
	guard := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("/term"), ">", 0)}

	writeAll := func(prefix string, n int) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ref := api.Ref{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("%s%03d", prefix, i)}
				_, errs[i] = s.Mutate(ctx, ref, Write{Changer: "controller:test", Cause: "create", Guard: guard},
					func(*api.Object) (*api.Object, error) {
						return &api.Object{Spec: map[string]any{"i": float64(i)}}, nil
					})
			}()
		}
		wg.Wait()
		return errs
	}

	const n = 300
	for i, err := range writeAll("a", n) {
		if err != nil {
			t.Errorf("create a%03d: %v", i, err)
		}
	}
	if s.commits.grouped.Load() == 0 {
		t.Errorf("%d concurrent writes all went in transactions of their own", n)
	}
	objs, _, err := s.List(ctx, "Pod", "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != n {
		t.Fatalf("%d pods stored, want %d", len(objs), n)
	}
	for _, o := range objs {
		var i int
		fmt.Sscanf(o.Name, "a%03d", &i)
		if o.Meta.Revision != 1 || o.Spec["i"] != float64(i) {
			t.Errorf("%s: revision %d, spec %v; want revision 1, i %d", o.Name, o.Meta.Revision, o.Spec, i)
		}
		if h, err := s.History(ctx, o.Ref(), identity.Filter{}); err != nil || len(h) != 1 {
			t.Errorf("%s: history %v, %v; want one revision", o.Name, h, err)
		}
	}

	// The term ends: no write of it lands, grouped or not.
	if _, err := e.Client.Delete(ctx, "/term"); err != nil {
		t.Fatal(err)
	}
	for i, err := range writeAll("b", 100) {
		if !errors.Is(err, ErrGuard) {
			t.Errorf("create b%03d after the guard stopped holding: %v, want ErrGuard", i, err)
		}
	}
	if objs, _, err = s.List(ctx, "Pod", "default"); err != nil || len(objs) != n {
		t.Errorf("after refused writes: %d pods (%v), want %d", len(objs), err, n)
	}
}
