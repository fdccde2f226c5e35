package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/store"
	"skiff.dev/skiff/workflow"
)

// A leader whose session expired while it goes on running writes nothing
// more as leader: its term's writes are refused by etcd, its engine holds
// nothing, and the next leader's writes go through.
func TestDeposedLeaderWritesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st := store.New(e.Client, store.Options{Prefix: "/skiff"})
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	if _, err := st.Mutate(ctx, ref, store.Write{Changer: "operator:root", Cause: "apply"}, func(*api.Object) (*api.Object, error) {
		return &api.Object{Kind: "Pod", Namespace: "default", Name: "web", Spec: map[string]any{"containers": []any{map[string]any{"name": "main", "image": "busybox"}}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	start := func(name string) *Orchestrator {
		o, err := NewOrchestrator(st, e.Client, "/skiff", slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"admission", "nodes"})
		if err != nil {
			t.Fatal(err)
		}
		o.SetIdentity(name, "")
		o.SetLeaderTTL(2 * time.Second)
		octx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { o.Run(octx); close(done) }()
		t.Cleanup(func() { stop(); <-done })
		return o
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 30s", what)
			}
		}
	}
	a := start("a")
	wait("a leads", a.IsLeader)
	b := start("b")
	old := a.term()
	wait("a ran the pod's workflow", func() bool {
		runs, err := a.Runs(ctx, ref)
		return err == nil && len(runs) > 0 && runs[0].State == workflow.RunDone
	})

	// The session ends on etcd's side, as when its lease expires.
	resp, err := e.Client.Get(ctx, "/skiff/leader/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("no election key: %v", err)
	}
	if _, err := e.Client.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	wait("b leads", b.IsLeader)
	wait("a stops leading", func() bool { return !a.IsLeader() })

	wctx, done := inTerm(context.Background(), old)
	defer done()
	_, err = a.writeAs(context.WithoutCancel(wctx), toRef(ref), "controller:nodes", "evicted", map[string]any{"status.evicted": map[string]any{"node": "n1"}})
	if !errors.Is(err, store.ErrGuard) {
		t.Errorf("a write of the deposed leader's term: %v, want %v", err, store.ErrGuard)
	}
	if err := old.ctx.Err(); err == nil {
		t.Error("the deposed leader's term goes on: its leader work was not cancelled")
	}
	bctx, bdone := inTerm(context.Background(), b.term())
	defer bdone()
	if _, err := b.writeAs(bctx, toRef(ref), "controller:nodes", "evicted", map[string]any{"status.evicted": map[string]any{"node": "n1"}}); err != nil {
		t.Errorf("a write of the new leader's term: %v", err)
	}
}
