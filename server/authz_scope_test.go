package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

// TestEditConfinedToNamespaces: an edit token confined to namespaces media
// and web writes, reads, logs and execs into namespaced objects there only,
// writes no cluster-scoped object, imports no images, and lists and watches
// one namespace at a time; an edit token without namespaces stays
// cluster-wide.
func TestEditConfinedToNamespaces(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	secret, err := e.admin.CreateToken(ctx, "operator:alice", "edit", "web", "media", "web")
	if err != nil {
		t.Fatalf("create an edit token on media and web: %v", err)
	}
	alice := e.client(secret)
	const scope = "operator:alice is confined to namespaces media, web"

	// Objects the admin made in and out of alice's namespaces.
	inShop := api.Ref{Kind: "Pod", Namespace: "shop", Name: "cart"}
	inDefault := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	for _, o := range []api.Object{pod("shop", "cart", "cart:1", nil), pod("default", "web", "nginx:1", nil), pod("media", "old", "old:1", nil)} {
		if _, err := e.admin.Apply(ctx, o, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.admin.Apply(ctx, api.Object{Kind: "Grant", Name: "media-root", Spec: map[string]any{
		"namespaces": []any{"media"}, "privileges": []any{"root"}}}, 0); err != nil {
		t.Fatal(err)
	}

	// Its own namespaces: apply, read, roll back, delete.
	inMedia := api.Ref{Kind: "Pod", Namespace: "media", Name: "jellyfin"}
	res, err := alice.Apply(ctx, pod("media", "jellyfin", "jellyfin:1", nil), 0)
	if err != nil || res.Op != "created" {
		t.Fatalf("alice applying a pod in media: %+v %v", res, err)
	}
	if res, err := alice.Apply(ctx, pod("media", "jellyfin", "jellyfin:2", nil), 0); err != nil || res.Op != "configured" {
		t.Errorf("alice changing a pod in media: %+v %v", res, err)
	}
	if _, err := alice.Apply(ctx, pod("web", "site", "nginx:1", nil), 0); err != nil {
		t.Errorf("alice applying a pod in web: %v", err)
	}
	if o, err := alice.Get(ctx, inMedia); err != nil || image(o) != "jellyfin:2" {
		t.Errorf("alice reading her pod: %s %v", image(o), err)
	}
	if _, err := alice.History(ctx, inMedia, nil); err != nil {
		t.Errorf("alice reading her pod's history: %v", err)
	}
	if _, err := alice.Runs(ctx, inMedia); err != nil {
		t.Errorf("alice reading her pod's runs: %v", err)
	}
	if res, err := alice.Rollback(ctx, inMedia, 1); err != nil || image(res.Object) != "jellyfin:1" {
		t.Errorf("alice rolling back her pod: %+v %v", res, err)
	}
	// Logs and exec pass authorization and find the pod not yet placed.
	err = alice.Logs(ctx, inMedia, "", 0, false, io.Discard)
	wantError(t, "alice's logs of her unplaced pod", err, 409, "conflict", "not on a node")
	_, err = alice.Exec(ctx, inMedia, "", []string{"true"}, false, nil, io.Discard, io.Discard)
	wantError(t, "alice's exec into her unplaced pod", err, 409, "conflict", "not on a node")

	// Other namespaces: no writes, no reads, no logs, no exec; none of it
	// says whether the object exists.
	_, err = alice.Apply(ctx, pod("shop", "cart", "evil:1", nil), 0)
	wantError(t, "alice applying in shop", err, 403, "forbidden", scope, "pod/cart in namespace shop")
	_, err = alice.Apply(ctx, pod("", "new", "evil:1", nil), 0)
	wantError(t, "alice applying in default", err, 403, "forbidden", scope, "namespace default", "pass -n media")
	_, err = alice.Delete(ctx, inShop, 0)
	wantError(t, "alice deleting in shop", err, 403, "forbidden", scope, "namespace shop")
	_, err = alice.Rollback(ctx, inShop, 1)
	wantError(t, "alice rolling back in shop", err, 403, "forbidden", scope)
	for name, ref := range map[string]api.Ref{"existing": inShop, "absent": {Kind: "Pod", Namespace: "shop", Name: "nope"}} {
		_, err = alice.Get(ctx, ref)
		wantError(t, "alice reading an "+name+" pod in shop", err, 403, "forbidden", scope, "namespace shop")
	}
	_, err = alice.Get(ctx, inDefault)
	wantError(t, "alice reading a pod in default", err, 403, "forbidden", scope, "pass -n media")
	_, err = alice.History(ctx, inShop, nil)
	wantError(t, "alice reading history in shop", err, 403, "forbidden", scope)
	_, err = alice.At(ctx, inShop, 1)
	wantError(t, "alice reading a revision in shop", err, 403, "forbidden", scope)
	_, err = alice.Runs(ctx, inShop)
	wantError(t, "alice reading runs in shop", err, 403, "forbidden", scope)
	err = alice.Logs(ctx, inShop, "", 0, false, io.Discard)
	wantError(t, "alice's logs in shop", err, 403, "forbidden", scope)
	_, err = alice.Exec(ctx, inShop, "", []string{"true"}, false, nil, io.Discard, io.Discard)
	wantError(t, "alice's exec in shop", err, 403, "forbidden", scope)

	// Cluster-scoped kinds: read, never written.
	for _, o := range []api.Object{
		{Kind: "Grant", Name: "mine", Spec: map[string]any{"namespaces": []any{"media"}, "privileges": []any{"root"}}},
		{Kind: "Node", Name: "n9"},
		{Kind: "Controller", Name: "c9", Spec: map[string]any{"owns": []any{"Pod:status.x"}}},
	} {
		_, err = alice.Apply(ctx, o, 0)
		wantError(t, "alice applying a "+o.Kind, err, 403, "forbidden", scope, strings.ToLower(o.Kind)+"/"+o.Name, "cluster-scoped")
	}
	grant := api.Ref{Kind: "Grant", Name: "media-root"}
	if _, err := alice.Get(ctx, grant); err != nil {
		t.Errorf("alice reading a grant: %v", err)
	}
	if l, err := alice.List(ctx, "grants", "", ""); err != nil || len(l.Items) != 1 {
		t.Errorf("alice listing grants: %+v %v", l, err)
	}
	_, err = alice.Delete(ctx, grant, 0)
	wantError(t, "alice deleting a grant", err, 403, "forbidden", scope, "grant/media-root", "cluster-scoped")
	_, err = alice.Rollback(ctx, grant, 1)
	wantError(t, "alice rolling back a grant", err, 403, "forbidden", scope, "cluster-scoped")
	_, err = alice.ImportImage(ctx, "n1", "", strings.NewReader("not an archive"))
	wantError(t, "alice importing an image", err, 403, "forbidden", scope, "images")

	// Lists and watches name one of its namespaces.
	_, err = alice.List(ctx, "pods", "", "")
	wantError(t, "alice listing pods in all namespaces", err, 403, "forbidden", scope, "-n media")
	_, err = alice.List(ctx, "pods", "shop", "")
	wantError(t, "alice listing pods in shop", err, 403, "forbidden", scope)
	l, err := alice.List(ctx, "pods", "media", "")
	if err != nil {
		t.Fatalf("alice listing pods in media: %v", err)
	}
	var names []string
	for _, o := range l.Items {
		names = append(names, o.Namespace+"/"+o.Name)
	}
	if want := []string{"media/jellyfin", "media/old"}; !slices.Equal(names, want) {
		t.Errorf("alice's pods in media: %q, want %q", names, want)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = alice.Watch(wctx, "pods", "", 0, func(client.Event) error { return nil })
	wantError(t, "alice watching pods in all namespaces", err, 403, "forbidden", scope, "-n media")
	err = alice.Watch(wctx, "pods", "shop", 0, func(client.Event) error { return nil })
	wantError(t, "alice watching pods in shop", err, 403, "forbidden", scope)
	if _, err := e.admin.Apply(ctx, pod("media", "late", "late:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	errSeen := errors.New("seen")
	err = alice.Watch(wctx, "pods", "media", l.Revision, func(ev client.Event) error {
		if ev.Object.Name == "late" {
			return errSeen
		}
		return nil
	})
	if !errors.Is(err, errSeen) {
		t.Errorf("alice watching pods in media: %v, want the event of pod/late", err)
	}

	// Her last change stands (the rollback to jellyfin:1), and the refused
	// writes reached nothing.
	if _, err := alice.Delete(ctx, api.Ref{Kind: "Pod", Namespace: "web", Name: "site"}, 0); err != nil {
		t.Errorf("alice deleting her pod in web: %v", err)
	}
	if o, err := e.admin.Get(ctx, inShop); err != nil || image(o) != "cart:1" {
		t.Errorf("pod/cart in shop after alice's refused writes: %s %v, want cart:1", image(o), err)
	}
	for _, r := range []api.Ref{{Kind: "Pod", Namespace: "default", Name: "new"}, {Kind: "Grant", Name: "mine"}, {Kind: "Node", Name: "n9"}, {Kind: "Controller", Name: "c9"}} {
		if rev := e.storeRev(r); rev != 0 {
			t.Errorf("refused write created %s (revision %d)", r, rev)
		}
	}

	// An edit token without namespaces is cluster-wide, as before.
	ed, _ := e.token("operator:ed", "edit")
	if _, err := ed.Apply(ctx, pod("shop", "cart", "cart:2", nil), 0); err != nil {
		t.Errorf("cluster-wide edit applying in shop: %v", err)
	}
	if _, err := ed.Apply(ctx, api.Object{Kind: "Node", Name: "n8"}, 0); err != nil {
		t.Errorf("cluster-wide edit applying a Node: %v", err)
	}
	if l, err := ed.List(ctx, "pods", "", ""); err != nil || len(l.Items) != 5 {
		t.Errorf("cluster-wide edit listing all pods: %d items, %v; want 5", len(l.Items), err)
	}
}

// TestScopedTokenRequests: namespaces are stored with an edit token (sorted,
// once each) and listed; on any other token, or when not names, they are
// refused.
func TestScopedTokenRequests(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.admin.CreateToken(ctx, "operator:alice", "edit", "web", "media", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CreateToken(ctx, "operator:ed", "edit"); err != nil {
		t.Fatal(err)
	}
	toks, err := e.admin.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, tk := range toks {
		got[tk.Identity] = tk.Namespaces
	}
	if want := []string{"media", "web"}; !slices.Equal(got["operator:alice"], want) {
		t.Errorf("operator:alice's token lists namespaces %q, want %q", got["operator:alice"], want)
	}
	if ns := got["operator:ed"]; ns != nil {
		t.Errorf("a cluster-wide edit token lists namespaces %q", ns)
	}
	// As stored: the namespaces beside the hash, never the secret.
	resp, err := e.kv.Client.Get(ctx, prefix+"/tokens/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), `"identity":"operator:alice"`) {
			found = strings.Contains(string(kv.Value), `"namespaces":["media","web"]`)
		}
	}
	if !found {
		t.Errorf("operator:alice's stored token does not hold its namespaces")
	}

	for _, c := range []struct {
		ident, role string
		ns          []string
		mention     []string
	}{
		{"operator:x", "admin", []string{"media"}, []string{"only the edit role", "admin"}},
		{"operator:x", "", []string{"media"}, []string{"only the edit role", "admin"}},
		{"operator:x", "view", []string{"media"}, []string{"only the edit role", "view"}},
		{"controller:x", "", []string{"media"}, []string{"controller:x"}},
		{"node:x", "", []string{"media"}, []string{"node:x"}},
		{"operator:x", "edit", []string{"Media"}, []string{"namespace", "Media"}},
		{"operator:x", "edit", []string{"media", ""}, []string{"namespace", "empty"}},
		{"operator:x", "edit", []string{"a/b"}, []string{"namespace", "a/b"}},
	} {
		_, err := e.admin.CreateToken(ctx, c.ident, c.role, c.ns...)
		wantError(t, fmt.Sprintf("token for %s role %q namespaces %q", c.ident, c.role, c.ns), err, 400, "invalid", c.mention...)
	}
	// A confined token is no admin: it issues no tokens.
	alice := e.client(mustToken(t, e, "operator:al2", "edit", "media"))
	_, err = alice.CreateToken(ctx, "operator:al3", "edit")
	wantError(t, "confined edit creating a token", err, 403, "forbidden", "operator:al2")
}

func mustToken(t *testing.T, e *env, ident, role string, namespaces ...string) string {
	t.Helper()
	secret, err := e.admin.CreateToken(context.Background(), ident, role, namespaces...)
	if err != nil {
		t.Fatalf("create token for %s: %v", ident, err)
	}
	return secret
}
