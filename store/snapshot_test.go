package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/store"
)

// dumpStore reads everything a user can read of refs: each current object
// (or that it is gone), its history and every revision's content.
func dumpStore(t *testing.T, st *store.Store, refs []api.Ref) map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string]any{}
	for _, ref := range refs {
		h, err := st.History(ctx, ref, identity.Filter{})
		if err != nil {
			t.Fatalf("history of %s: %v", ref, err)
		}
		out[ref.String()+" history"] = h
		for _, e := range h {
			o, err := st.At(ctx, ref, e.Rev)
			if err != nil {
				out[fmt.Sprintf("%s@%d", ref, e.Rev)] = err.Error()
				continue
			}
			out[fmt.Sprintf("%s@%d", ref, e.Rev)] = jsonTree(t, contentOf(o))
		}
		if o, err := st.Get(ctx, ref); err != nil {
			out[ref.String()] = err.Error()
		} else {
			out[ref.String()] = jsonTree(t, contentOf(o))
		}
	}
	return out
}

func TestSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	e, _ := startEtcd(t, "")
	o := store.Options{SnapshotEvery: 4}
	st := store.New(e.Client, o)
	web, gone, node := podRef("default", "web"), podRef("team", "gone"), api.Ref{Kind: "Node", Name: "n1"}
	write(t, st, web, "operator:alice", "apply", api.Object{Labels: map[string]string{"app": "web"}, Spec: map[string]any{"v": 0.0}})
	for i := 1; i <= 5; i++ {
		edit(t, st, web, "controller:scheduler", "step schedule", func(o *api.Object) { o.Status = map[string]any{"n": float64(i)} })
	}
	write(t, st, gone, "operator:alice", "apply", api.Object{Spec: map[string]any{"v": 1.0}})
	if _, err := st.Delete(ctx, gone, store.Write{Changer: "operator:carol"}); err != nil {
		t.Fatal(err)
	}
	write(t, st, node, "node:n1", "register", api.Object{Status: map[string]any{"addr": "10.0.0.1"}})
	refs := []api.Ref{web, gone, node}
	before := dumpStore(t, st, refs)
	_, etcdRev, err := st.List(ctx, "Pod", "")
	if err != nil {
		t.Fatal(err)
	}

	snap := filepath.Join(t.TempDir(), "etcd.db")
	info, err := st.SaveSnapshot(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	wantCensus := store.Census{Objects: map[string]int{"Pod": 1, "Node": 1}, Revisions: 6 + 2 + 1}
	if info.Revision < etcdRev || !reflect.DeepEqual(info.Census, wantCensus) || len(info.SHA256) != 64 {
		t.Fatalf("snapshot info %+v, want revision ≥ %d and census %+v", info, etcdRev, wantCensus)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Size() != info.Size {
		t.Fatalf("snapshot file: %v, size %d want %d", err, fi.Size(), info.Size)
	}

	// A write after the snapshot is not in the restored store.
	edit(t, st, web, "operator:alice", "apply", func(o *api.Object) { o.Spec["v"] = 99.0 })

	dir := filepath.Join(t.TempDir(), "etcd")
	if err := store.RestoreSnapshot(store.RestoreOptions{Snapshot: snap, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := store.RestoreSnapshot(store.RestoreOptions{Snapshot: snap, Dir: dir}); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("restore into the same directory again: %v, want ErrNotEmpty", err)
	}
	e2, _ := startEtcd(t, dir)
	st2 := store.New(e2.Client, o)
	if after := dumpStore(t, st2, refs); !reflect.DeepEqual(after, before) {
		t.Errorf("restored store differs:\n got  %v\n want %v", after, before)
	}
	if c, err := st2.Count(ctx, 0); err != nil || !reflect.DeepEqual(c, wantCensus) {
		t.Errorf("restored census %+v (%v), want %+v", c, err, wantCensus)
	}

	// A watch from a revision the old store had reached is told to list
	// again: the restore moved revisions on and compacted the old ones.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ev := <-st2.Watch(wctx, "Pod", "", etcdRev)
	if !errors.Is(ev.Err, store.ErrCompacted) {
		t.Errorf("watch from revision %d after restore: %+v, want ErrCompacted", etcdRev, ev)
	}
	_, rev2, err := st2.List(ctx, "Pod", "")
	if err != nil || rev2 < etcdRev+store.RevisionBump {
		t.Errorf("restored store's etcd revision %d (%v), want at least %d", rev2, err, etcdRev+store.RevisionBump)
	}

	// Writes go on from the restored revisions.
	res := edit(t, st2, web, "operator:alice", "apply", func(o *api.Object) { o.Spec["v"] = 7.0 })
	if res.Object.Meta.Revision != 7 {
		t.Errorf("first write after restore: rev %d, want 7", res.Object.Meta.Revision)
	}
	res = write(t, st2, gone, "operator:alice", "apply", api.Object{Spec: map[string]any{"v": 2.0}})
	if res.Op != store.Created || res.Object.Meta.Revision != 3 {
		t.Errorf("re-create after restore: op %s rev %d, want created rev 3", res.Op, res.Object.Meta.Revision)
	}
}

// An external etcd is reached over gRPC, where the snapshot stream ends
// in io.EOF (in-process it ends in "context canceled"): both are whole.
func TestSnapshotOverGRPC(t *testing.T) {
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	lo, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*lo}, []url.URL{*lo}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = nil, []url.URL{*lo}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	kv, err := store.Dial([]string{"http://" + e.Clients[0].Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	st := store.New(kv, store.Options{})
	write(t, st, podRef("default", "web"), "operator:alice", "apply", api.Object{Spec: map[string]any{"v": 1.0}})
	info, err := st.SaveSnapshot(context.Background(), filepath.Join(t.TempDir(), "etcd.db"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Objects["Pod"] != 1 || info.Revisions != 1 {
		t.Errorf("snapshot over gRPC: %+v", info)
	}
}
