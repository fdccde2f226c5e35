package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/server"
	"skiff.dev/skiff/store"
)

const prefix = "/skiff"

// env is one API server over its own embedded etcd, serving TLS on a
// loopback port, with the workflow orchestrator running as in the daemon and
// an admin token for operator:root.
type env struct {
	t      *testing.T
	url    string
	ca     *server.CA
	kv     *store.Embedded
	st     *store.Store
	tokens *server.Tokens
	http   *http.Client // trusts the cluster CA; sends no token by itself
	root   string       // admin token secret
	admin  *client.Client
}

func newEnv(t *testing.T, configure ...func(*server.Orchestrator)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	st := store.New(e.Client, store.Options{Prefix: prefix})
	ca, err := server.EnsureCA(ctx, e.Client, prefix)
	if err != nil {
		t.Fatalf("ensure CA: %v", err)
	}
	cert, err := ca.ServerCert(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	tokens := server.NewTokens(e.Client, prefix)
	root, _, err := tokens.Create(ctx, identity.Identity{Kind: identity.Operator, Name: "root"}, server.RoleAdmin, "test")
	if err != nil {
		t.Fatalf("bootstrap admin token: %v", err)
	}

	// The orchestrator runs as in the daemon; its log is shown if the test
	// fails.
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() && logs.Len() > 0 {
			t.Logf("orchestrator log:\n%s", logs.String())
		}
	})
	orch, err := server.NewOrchestrator(st, e.Client, prefix, slog.New(slog.NewTextHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range configure {
		f(orch)
	}
	orchCtx, stopOrch := context.WithCancel(context.Background())
	orchDone := make(chan struct{})
	go func() { orch.Run(orchCtx); close(orchDone) }()
	t.Cleanup(func() { stopOrch(); <-orchDone }) // runs before etcd closes

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           server.New(st, tokens, orch),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // TLS handshake failures are expected in TestTLS
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() }) // runs before the orchestrator stops

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	ev := &env{
		t: t, url: "https://" + ln.Addr().String(), ca: ca, kv: e, st: st, tokens: tokens, root: root,
		http: &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2: true,
		}},
	}
	t.Cleanup(ev.http.CloseIdleConnections)
	ev.admin = ev.client(root)
	return ev
}

// client returns an API client that sends token.
func (e *env) client(token string) *client.Client {
	e.t.Helper()
	c, err := client.New(client.Config{Servers: []string{e.url}, Token: token, CA: string(e.ca.CertPEM)})
	if err != nil {
		e.t.Fatalf("client: %v", err)
	}
	return c
}

// token issues a token through the API, as the admin, and returns a client
// that uses it.
func (e *env) token(ident, role string) (*client.Client, string) {
	e.t.Helper()
	secret, err := e.admin.CreateToken(context.Background(), ident, role)
	if err != nil {
		e.t.Fatalf("create token for %s (%s): %v", ident, role, err)
	}
	return e.client(secret), secret
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

// eventually waits for cond, which reports what it saw, to become true.
// Work done in the background (the orchestrator reloading registrations,
// a deletion's down run) is awaited this way; the bound only keeps a broken
// server from hanging the test.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; last saw %s", what, saw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// register applies a Controller registration with c (an operator's client
// or the controller's own): the server enforces it once the apply
// returns, and lists it.
func (e *env) register(c *client.Client, name string, owns ...string) {
	e.t.Helper()
	ctx := context.Background()
	o := api.Object{Kind: "Controller", Name: name, Spec: map[string]any{"owns": toAny(owns)}}
	if _, err := c.Apply(ctx, o, 0); err != nil {
		e.t.Fatalf("register controller %s: %v", name, err)
	}
	l, err := e.admin.Controllers(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, c := range l {
		if c.Name == name {
			return
		}
		names = append(names, c.Name)
	}
	e.t.Fatalf("controller %s applied but not listed (listed: %v)", name, names)
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// waitGone waits until an object no longer exists (a pod's deletion runs
// its down workflow first).
func (e *env) waitGone(ref api.Ref) {
	e.t.Helper()
	eventually(e.t, ref.String()+" removed", func() (bool, string) {
		rev := e.storeRev(ref)
		return rev == 0, fmt.Sprintf("revision %d", rev)
	})
}

// response is a raw HTTP answer.
type response struct {
	status int
	body   []byte
	err    server.ErrorBody // decoded when status >= 400
}

// do sends a raw request; token "" sends no Authorization header.
func (e *env) do(method, path, token string, body []byte) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	r := response{status: resp.StatusCode, body: b}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &r.err); err != nil {
			e.t.Errorf("%s %s: %d answer is not an error body: %q", method, path, resp.StatusCode, b)
		}
	}
	return r
}

// wantError checks that err is an API error with status and code whose
// message contains every one of contains.
func wantError(t *testing.T, what string, err error, status int, code string, contains ...string) {
	t.Helper()
	var ae *client.Error
	if !errors.As(err, &ae) {
		t.Errorf("%s: error %v (%T), want HTTP %d %s", what, err, err, status, code)
		return
	}
	if ae.Status != status || ae.Code != code {
		t.Errorf("%s: HTTP %d %q (%s), want %d %q", what, ae.Status, ae.Code, ae.Message, status, code)
	}
	for _, s := range contains {
		if !strings.Contains(ae.Message, s) {
			t.Errorf("%s: message %q does not mention %q", what, ae.Message, s)
		}
	}
}

func pod(ns, name, image string, labels map[string]string) api.Object {
	return api.Object{Kind: "Pod", Namespace: ns, Name: name, Labels: labels,
		Spec: map[string]any{"containers": []any{map[string]any{"name": "main", "image": image}}}}
}

func image(o api.Object) string {
	cs, _ := o.Spec["containers"].([]any)
	if len(cs) == 0 {
		return ""
	}
	c, _ := cs[0].(map[string]any)
	s, _ := c["image"].(string)
	return s
}

// storeRev is the current revision of an object as the store has it, 0 if
// it does not exist.
func (e *env) storeRev(ref api.Ref) int64 {
	e.t.Helper()
	o, err := e.st.Get(context.Background(), ref)
	if store.IsNotFound(err) {
		return 0
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return o.Meta.Revision
}

func historyOf(t *testing.T, c *client.Client, ref api.Ref, changers ...string) []string {
	t.Helper()
	h, err := c.History(context.Background(), ref, changers)
	if err != nil {
		t.Fatalf("history of %s: %v", ref, err)
	}
	out := make([]string, len(h))
	for i, e := range h {
		out[i] = fmt.Sprintf("%d %s %s", e.Rev, e.Changer, e.Cause)
	}
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	if id, role, err := e.admin.Whoami(ctx); err != nil || id != "operator:root" || role != "admin" {
		t.Fatalf("whoami with the admin token: %q %q %v", id, role, err)
	}

	for _, c := range []struct{ what, header string }{
		{"no Authorization header", ""},
		{"empty bearer", "Bearer "},
		{"not bearer", "Basic cm9vdDpyb290"},
		{"garbage token", "Bearer garbage"},
		{"unknown token id", "Bearer skiff.000000000000.c2VjcmV0"},
		{"right id, wrong secret", "Bearer " + e.root[:strings.LastIndexByte(e.root, '.')] + ".wrong"},
		{"token without the scheme", e.root},
	} {
		for _, path := range []string{"/v1/whoami", "/v1/objects/pods", "/v1/tokens"} {
			req, _ := http.NewRequest("GET", e.url+path, nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			resp, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var eb server.ErrorBody
			json.NewDecoder(resp.Body).Decode(&eb)
			resp.Body.Close()
			if resp.StatusCode != 401 || eb.Code != "unauthenticated" || eb.Error == "" {
				t.Errorf("%s, GET %s: %d %+v, want 401 unauthenticated", c.what, path, resp.StatusCode, eb)
			}
		}
	}
	// Through the client too.
	_, _, err := e.client("garbage").Whoami(ctx)
	wantError(t, "whoami with a garbage token", err, 401, "unauthenticated")
	_, err = e.client("").Apply(ctx, pod("default", "web", "nginx:1", nil), 0)
	wantError(t, "apply with no token", err, 401, "unauthenticated")
	if rev := e.storeRev(api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}); rev != 0 {
		t.Errorf("unauthenticated apply wrote revision %d", rev)
	}

	// Revocation takes effect at once.
	temp, secret := e.token("operator:temp", "edit")
	if id, _, err := temp.Whoami(ctx); err != nil || id != "operator:temp" {
		t.Fatalf("whoami with a new token: %q %v", id, err)
	}
	id := strings.Split(secret, ".")[1]
	if err := e.admin.RevokeToken(ctx, id); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, _, err = temp.Whoami(ctx)
	wantError(t, "whoami with a revoked token", err, 401, "unauthenticated")
	_, err = temp.Apply(ctx, pod("default", "web", "nginx:1", nil), 0)
	wantError(t, "apply with a revoked token", err, 401, "unauthenticated")
	toks, err := e.admin.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.ID == id {
			t.Errorf("revoked token %s is still listed", id)
		}
	}
	err = e.admin.RevokeToken(ctx, id)
	wantError(t, "revoking twice", err, 404, "not_found")
}

func TestTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, bobSecret := e.token("operator:bob", "view")
	e.token("controller:sched", "")
	nodeClient, _ := e.token("node:n1", "")
	if id, role, err := nodeClient.Whoami(ctx); err != nil || id != "node:n1" || role != "" {
		t.Errorf("whoami as node:n1: %q %q %v", id, role, err)
	}
	// An operator token without a role is an admin.
	dflt, _ := e.token("operator:dflt", "")
	if _, role, _ := dflt.Whoami(ctx); role != "admin" {
		t.Errorf("operator token created without a role has role %q, want admin", role)
	}

	// Secrets and hashes are never listed.
	r := e.do("GET", "/v1/tokens", e.root, nil)
	if r.status != 200 {
		t.Fatalf("list tokens: %d %s", r.status, r.body)
	}
	var listed []server.Token
	if err := json.Unmarshal(r.body, &listed); err != nil {
		t.Fatal(err)
	}
	bobSecretPart := bobSecret[strings.LastIndexByte(bobSecret, '.')+1:]
	if bytes.Contains(r.body, []byte(bobSecretPart)) {
		t.Errorf("token list contains a secret")
	}
	got := map[string]server.Token{}
	for _, tk := range listed {
		if tk.Hash != "" {
			t.Errorf("token %s listed with its hash", tk.ID)
		}
		got[tk.Identity] = tk
	}
	for ident, role := range map[string]string{"operator:root": "admin", "operator:bob": "view", "controller:sched": "", "node:n1": "", "operator:dflt": "admin"} {
		tk, ok := got[ident]
		if !ok {
			t.Errorf("token for %s not listed", ident)
			continue
		}
		if tk.Role != role {
			t.Errorf("token for %s has role %q, want %q", ident, tk.Role, role)
		}
		if ident != "operator:root" && tk.CreatedBy != "operator:root" {
			t.Errorf("token for %s created by %q, want operator:root", ident, tk.CreatedBy)
		}
	}

	for _, c := range []struct{ ident, role, mention string }{
		{"controller:x", "admin", "role"},
		{"operator:x", "superuser", "superuser"},
		{"robot:x", "", "robot:x"},
		{"operator:", "", "operator:"},
		{"operator:Alice", "", "operator:Alice"},
	} {
		_, err := e.admin.CreateToken(ctx, c.ident, c.role)
		wantError(t, fmt.Sprintf("token for %q role %q", c.ident, c.role), err, 400, "invalid", c.mention)
	}
	if r := e.do("POST", "/v1/tokens", e.root, []byte(`{"identity": 5}`)); r.status != 400 || r.err.Code != "invalid" {
		t.Errorf("token request with a bad body: %d %+v, want 400 invalid", r.status, r.err)
	}
}

// TestOperatorLifecycle: an admin operator applies, reads, lists, rolls back
// and deletes.
func TestOperatorLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.admin
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}

	res, err := c.Apply(ctx, pod("", "web", "nginx:1", map[string]string{"app": "web"}), 0)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.Op != "created" || res.Object.Namespace != "default" || res.Object.Meta.Revision != 1 || res.Object.Meta.Generation != 1 {
		t.Errorf("apply: %s %s rev %d gen %d, want created in default, rev 1 gen 1", res.Op, res.Object.Namespace, res.Object.Meta.Revision, res.Object.Meta.Generation)
	}
	if res.Object.Spec["restart"] != "always" {
		t.Errorf("applied spec %v lacks the defaulted restart policy", res.Object.Spec)
	}
	res, err = c.Apply(ctx, pod("default", "web", "nginx:1", map[string]string{"app": "web"}), 0)
	if err != nil || res.Op != "unchanged" || res.Object.Meta.Revision != 1 {
		t.Errorf("apply of the same object: %s rev %d %v, want unchanged rev 1", res.Op, res.Object.Meta.Revision, err)
	}
	// Status and meta in the body are ignored.
	o := pod("default", "web", "nginx:2", map[string]string{"app": "web"})
	o.Status = map[string]any{"progress": "Forged"}
	o.Meta.Revision = 42
	res, err = c.Apply(ctx, o, 0)
	if err != nil || res.Op != "configured" || res.Object.Meta.Revision != 2 || res.Object.Meta.Generation != 2 {
		t.Fatalf("apply of a changed object: %s rev %d gen %d %v, want configured rev 2 gen 2", res.Op, res.Object.Meta.Revision, res.Object.Meta.Generation, err)
	}
	if res.Object.Status != nil {
		t.Errorf("apply stored status %v from the request body", res.Object.Status)
	}
	if _, err := c.Apply(ctx, pod("staging", "api", "api:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(ctx, api.Object{Kind: "Node", Name: "n1", Spec: map[string]any{"unschedulable": true}}, 0); err != nil {
		t.Fatalf("apply node: %v", err)
	}

	got, err := c.Get(ctx, ref)
	if err != nil || image(got) != "nginx:2" || got.Meta.Revision != 2 || got.Labels["app"] != "web" {
		t.Errorf("get: %+v %v", got, err)
	}
	for _, l := range []struct {
		kind, ns, sel string
		want          []string
	}{
		{"pods", "default", "", []string{"web"}},
		{"pods", "", "", []string{"web", "api"}},
		{"po", "", "app=web", []string{"web"}},
		{"Pod", "", "app=nope", []string{}},
		{"nodes", "", "", []string{"n1"}},
	} {
		lr, err := c.List(ctx, l.kind, l.ns, l.sel)
		if err != nil {
			t.Errorf("list %s %q %q: %v", l.kind, l.ns, l.sel, err)
			continue
		}
		var names []string
		for _, o := range lr.Items {
			names = append(names, o.Name)
		}
		if names == nil {
			names = []string{}
		}
		if !sameStrings(names, l.want) || lr.Revision <= 0 {
			t.Errorf("list %s in %q selector %q: %v at %d, want %v", l.kind, l.ns, l.sel, names, lr.Revision, l.want)
		}
	}
	_, err = c.List(ctx, "pods", "", "app in (")
	wantError(t, "list with a bad selector", err, 400, "invalid", "selector")

	at1, err := c.At(ctx, ref, 1)
	if err != nil || image(at1) != "nginx:1" || at1.Meta.Revision != 1 {
		t.Errorf("revision 1: %+v %v", at1, err)
	}
	_, err = c.At(ctx, ref, 9)
	wantError(t, "a revision that does not exist", err, 404, "not_found")

	rb, err := c.Rollback(ctx, ref, 1)
	if err != nil || rb.Op != "configured" || rb.Object.Meta.Revision != 3 || image(rb.Object) != "nginx:1" {
		t.Errorf("rollback to 1: %+v %v, want configured rev 3 with nginx:1", rb, err)
	}
	_, err = c.Rollback(ctx, ref, 7)
	wantError(t, "rollback to a revision that does not exist", err, 404, "not_found")
	if r := e.do("POST", "/v1/objects/pods/default/web/rollback", e.root, []byte(`{"to": 0}`)); r.status != 400 || r.err.Code != "invalid" {
		t.Errorf("rollback to 0: %d %+v, want 400 invalid", r.status, r.err)
	}

	// A node has no down workflow: deleting it removes it at once.
	nref := api.Ref{Kind: "Node", Name: "n1"}
	del, err := c.Delete(ctx, nref, 0)
	if err != nil || del.Op != "deleted" || del.Object.Meta.Revision != 2 {
		t.Errorf("delete node: %+v %v, want deleted at rev 2", del, err)
	}
	_, err = c.Get(ctx, nref)
	wantError(t, "get node after delete", err, 404, "not_found", "node/n1")
	if h := historyOf(t, c, nref); !sameStrings(h, []string{"1 operator:root apply", "2 operator:root delete"}) {
		t.Errorf("node history: %q", h)
	}

	// A pod is marked as being deleted; its down run then removes it.
	del, err = c.Delete(ctx, ref, 0)
	if err != nil || del.Op != "deleting" || del.Object.Meta.Revision != 4 || del.Object.Meta.Deleting == nil {
		t.Errorf("delete pod: %+v %v, want deleting at rev 4", del, err)
	}
	e.waitGone(ref)
	_, err = c.Get(ctx, ref)
	wantError(t, "get after delete", err, 404, "not_found", "pod/web")
	_, err = c.Delete(ctx, ref, 0)
	wantError(t, "delete twice", err, 404, "not_found")
	want := []string{"1 operator:root apply", "2 operator:root apply", "3 operator:root rollback to 1",
		"4 operator:root delete requested", "5 controller:workflow delete: stopped"}
	if h := historyOf(t, c, ref); !sameStrings(h, want) {
		t.Errorf("history: %q, want %q", h, want)
	}
	_, err = c.At(ctx, ref, 5)
	wantError(t, "the revision of the deletion", err, 404, "not_found")
	if at4, err := c.At(ctx, ref, 4); err != nil || at4.Meta.Deleting == nil {
		t.Errorf("revision 4 (delete requested): %+v %v, want it marked as being deleted", at4, err)
	}
	// A deleted object comes back by rollback, not marked for deletion.
	rb, err = c.Rollback(ctx, ref, 2)
	if err != nil || rb.Op != "created" || rb.Object.Meta.Revision != 6 || image(rb.Object) != "nginx:2" || rb.Object.Meta.Deleting != nil {
		t.Errorf("rollback of a deleted object to 2: %+v %v, want created rev 6 with nginx:2", rb, err)
	}

	// Unknown endpoints, methods and kinds.
	if r := e.do("POST", "/v1/objects/pods", e.root, []byte(`{}`)); r.status != 405 || r.err.Code != "method_not_allowed" {
		t.Errorf("POST to a list: %d %+v, want 405", r.status, r.err)
	}
	if r := e.do("GET", "/v1/objects/pods/default/web/nonsense", e.root, nil); r.status != 404 || r.err.Code != "not_found" {
		t.Errorf("unknown sub-resource: %d %+v, want 404", r.status, r.err)
	}
	if r := e.do("GET", "/v1/objects/widgets", e.root, nil); r.status != 400 || !strings.Contains(r.err.Error, "widgets") {
		t.Errorf("unknown kind: %d %+v, want 400 naming it", r.status, r.err)
	}
	if r := e.do("GET", "/v1/objects/pods/default/Bad_Name", e.root, nil); r.status != 400 || !strings.Contains(r.err.Error, "Bad_Name") {
		t.Errorf("bad name in path: %d %+v, want 400 naming it", r.status, r.err)
	}
}

// TestAuthorization checks who may write what.
func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	if _, err := e.admin.Apply(ctx, pod("default", "web", "nginx:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	viewer, _ := e.token("operator:vera", "view")
	editor, _ := e.token("operator:ed", "edit")
	ctrl, _ := e.token("controller:x", "")
	node, _ := e.token("node:n1", "")

	// A controller registers itself, and only itself.
	e.register(ctrl, "x", "Pod:status.progress")
	_, err := ctrl.Apply(ctx, api.Object{Kind: "Controller", Name: "y"}, 0)
	wantError(t, "controller registering another", err, 403, "forbidden", "controller:x", "controller/y")
	// A node registers its own Node object, and no other. (With labels or
	// spec it cannot: see TestNodeRegistersItself.)
	if _, err := node.Apply(ctx, api.Object{Kind: "Node", Name: "n1"}, 0); err != nil {
		t.Errorf("node:n1 applying node/n1: %v", err)
	}
	_, err = node.Apply(ctx, api.Object{Kind: "Node", Name: "n2", Spec: map[string]any{"unschedulable": true}}, 0)
	wantError(t, "node:n1 applying node/n2", err, 403, "forbidden", "node:n1", "node/n2")

	// Operators and controllers may read; a node reads only the pods
	// placed on it (see TestNodeRestriction).
	if _, err := node.Get(ctx, ref); err == nil {
		t.Errorf("node:n1 read pod/web, which is not placed on it")
	}
	for name, c := range map[string]*client.Client{"view": viewer, "edit": editor, "controller": ctrl} {
		if _, err := c.Get(ctx, ref); err != nil {
			t.Errorf("%s get: %v", name, err)
		}
		if _, err := c.List(ctx, "pods", "", ""); err != nil {
			t.Errorf("%s list: %v", name, err)
		}
		if _, err := c.History(ctx, ref, nil); err != nil {
			t.Errorf("%s history: %v", name, err)
		}
		if _, err := c.At(ctx, ref, 1); err != nil {
			t.Errorf("%s revision: %v", name, err)
		}
	}

	// view: no writes of any kind.
	_, err = viewer.Apply(ctx, pod("default", "web", "nginx:2", nil), 0)
	wantError(t, "view apply", err, 403, "forbidden", "operator:vera", "view")
	_, err = viewer.Apply(ctx, pod("default", "new", "nginx:2", nil), 0)
	wantError(t, "view create", err, 403, "forbidden")
	_, err = viewer.Delete(ctx, ref, 0)
	wantError(t, "view delete", err, 403, "forbidden")
	_, err = viewer.Rollback(ctx, ref, 1)
	wantError(t, "view rollback", err, 403, "forbidden")
	_, err = viewer.PutStatus(ctx, ref, map[string]any{"progress": "x"}, 0)
	wantError(t, "view status", err, 403, "forbidden")
	_, err = viewer.CreateToken(ctx, "operator:mallory", "admin")
	wantError(t, "view create token", err, 403, "forbidden", "operator:vera")

	// controller: the status fields it owns, nothing else.
	_, err = ctrl.Apply(ctx, pod("default", "web", "evil:1", nil), 0)
	wantError(t, "controller apply", err, 403, "forbidden", "controller:x", "pod/web")
	_, err = ctrl.Delete(ctx, ref, 0)
	wantError(t, "controller delete", err, 403, "forbidden", "controller:x")
	_, err = ctrl.Rollback(ctx, ref, 1)
	wantError(t, "controller rollback", err, 403, "forbidden", "controller:x")
	_, err = ctrl.CreateToken(ctx, "controller:y", "")
	wantError(t, "controller create token", err, 403, "forbidden", "controller:x")
	_, err = ctrl.ListTokens(ctx)
	wantError(t, "controller list tokens", err, 403, "forbidden")
	res, err := ctrl.PutStatus(ctx, ref, map[string]any{"progress": "Running"}, 0)
	if err != nil || res.Op != "configured" || res.Object.Status["progress"] != "Running" || res.Object.Meta.Revision != 2 {
		t.Errorf("controller status write of a field it owns: %+v %v", res, err)
	}
	_, err = ctrl.PutStatus(ctx, ref, map[string]any{"progress": "Running", "node": "n1"}, 0)
	wantError(t, "controller status write of a field it does not own", err, 403, "forbidden", "controller:x", "status.node")
	// It sees only the fields it declared.
	if o, err := ctrl.Get(ctx, ref); err != nil || o.Spec != nil || o.Status["progress"] != "Running" {
		t.Errorf("controller:x reading pod/web: spec %v status %v (%v), want no spec and its own status.progress", o.Spec, o.Status, err)
	}
	// node: what the agent owns; nothing is registered as the agent here.
	_, err = node.PutStatus(ctx, ref, map[string]any{"progress": "Running", "node": "n1"}, 0)
	wantError(t, "node status write", err, 403, "forbidden", "node:n1")
	_, err = node.Apply(ctx, pod("default", "web", "evil:1", nil), 0)
	wantError(t, "node apply", err, 403, "forbidden", "node:n1")
	_, err = ctrl.PutStatus(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: "absent"}, map[string]any{"progress": "x"}, 0)
	wantError(t, "status of an absent object", err, 404, "not_found")
	if r := e.do("PUT", "/v1/objects/pods/default/web/status", "", []byte(`{"status":{}}`)); r.status != 401 {
		t.Errorf("status write without a token: %d", r.status)
	}

	// operators never write status, admin or not.
	_, err = e.admin.PutStatus(ctx, ref, map[string]any{"progress": "Forged"}, 0)
	wantError(t, "admin status", err, 403, "forbidden", "operator:root", "status")
	_, err = editor.PutStatus(ctx, ref, map[string]any{"progress": "Forged"}, 0)
	wantError(t, "edit status", err, 403, "forbidden", "operator:ed")

	// edit: objects yes, tokens no.
	if res, err := editor.Apply(ctx, pod("default", "web", "nginx:2", nil), 0); err != nil || res.Op != "configured" {
		t.Errorf("edit apply: %+v %v", res, err)
	}
	_, err = editor.CreateToken(ctx, "operator:ed2", "admin")
	wantError(t, "edit create token", err, 403, "forbidden", "operator:ed", "admin")
	_, err = editor.ListTokens(ctx)
	wantError(t, "edit list tokens", err, 403, "forbidden")
	err = editor.RevokeToken(ctx, "000000000000")
	wantError(t, "edit revoke token", err, 403, "forbidden")

	// None of the refused writes reached the store.
	got, err := e.admin.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta.Revision != 3 || image(got) != "nginx:2" || got.Status["progress"] != "Running" || got.Status["node"] != nil {
		t.Errorf("after all writes: rev %d image %s status %v, want rev 3, nginx:2, phase Running only", got.Meta.Revision, image(got), got.Status)
	}
	want := []string{"1 operator:root apply", "2 controller:x status", "3 operator:ed apply"}
	if h := historyOf(t, e.admin, ref); !sameStrings(h, want) {
		t.Errorf("history: %q, want %q", h, want)
	}
	for _, r := range []api.Ref{{Kind: "Pod", Namespace: "default", Name: "new"}, {Kind: "Node", Name: "n2"}, {Kind: "Controller", Name: "y"}} {
		if rev := e.storeRev(r); rev != 0 {
			t.Errorf("refused write created %s (revision %d)", r, rev)
		}
	}
	toks, err := e.admin.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Identity == "operator:mallory" || tk.Identity == "controller:y" || tk.Identity == "operator:ed2" {
			t.Errorf("refused token creation made a token for %s", tk.Identity)
		}
	}
}

// TestChangerAttribution: history names the token's identity, whatever the
// request says.
func TestChangerAttribution(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, aliceSecret := e.token("operator:alice", "edit")
	bob, _ := e.token("operator:bob", "edit")
	ctrl, ctrlSecret := e.token("controller:x", "")
	e.register(ctrl, "x", "Pod:status.progress")
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}

	if _, err := alice.Apply(ctx, pod("default", "web", "nginx:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ctrl.PutStatus(ctx, ref, map[string]any{"progress": "Running"}, 0); err != nil {
		t.Fatal(err)
	}
	// Claims of another changer in the body or the query are not honoured.
	body := `{"kind":"Pod","name":"web","namespace":"default",
		"spec":{"containers":[{"name":"main","image":"nginx:2"}]},
		"meta":{"changer":"operator:root","owner":"x"}}`
	if r := e.do("POST", "/v1/apply?changer=operator:root", aliceSecret, []byte(body)); r.status != 200 {
		t.Fatalf("apply with a claimed changer: %d %s", r.status, r.body)
	}
	r := e.do("PUT", "/v1/objects/pods/default/web/status", ctrlSecret, []byte(`{"status":{"progress":"Done"},"changer":"operator:root"}`))
	if r.status != 400 || r.err.Code != "invalid" || !strings.Contains(r.err.Error, "changer") {
		t.Errorf("status write claiming a changer: %d %+v, want 400 invalid naming the field", r.status, r.err)
	}
	if _, err := bob.Rollback(ctx, ref, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Delete(ctx, ref, 0); err != nil {
		t.Fatal(err)
	}
	e.waitGone(ref)

	want := []string{
		"1 operator:alice apply",
		"2 controller:x status",
		"3 operator:alice apply",
		"4 operator:bob rollback to 1",
		"5 operator:alice delete requested",
		"6 controller:workflow delete: stopped",
	}
	if h := historyOf(t, e.admin, ref); !sameStrings(h, want) {
		t.Errorf("history: %q, want %q", h, want)
	}
	if h := historyOf(t, e.admin, ref, "operator:*"); !sameStrings(h, []string{want[0], want[2], want[3], want[4]}) {
		t.Errorf("history of operators: %q", h)
	}
	if h := historyOf(t, e.admin, ref, "!operator:alice"); !sameStrings(h, []string{want[1], want[3], want[5]}) {
		t.Errorf("history without alice: %q", h)
	}
	if h := historyOf(t, e.admin, ref, "controller", "!controller:workflow", "operator:bob"); !sameStrings(h, []string{want[1], want[3]}) {
		t.Errorf("history of controllers but the workflow, and bob: %q", h)
	}
	if r := e.do("GET", "/v1/objects/pods/default/web/history?changer=[", e.root, nil); r.status != 400 || r.err.Code != "invalid" {
		t.Errorf("history with a malformed pattern: %d %+v, want 400", r.status, r.err)
	}
	at3, err := e.admin.At(ctx, ref, 3)
	if err != nil {
		t.Fatal(err)
	}
	if at3.Meta.Owner != "" || image(at3) != "nginx:2" {
		t.Errorf("revision 3: owner %q image %q, want no owner (meta in the body is ignored) and nginx:2", at3.Meta.Owner, image(at3))
	}
}

// TestApplyValidation: invalid objects are refused with the field path, and
// nothing is written.
func TestApplyValidation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	if _, err := e.admin.Apply(ctx, pod("default", "web", "nginx:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	container := func(fields string) string {
		return `{"kind":"Pod","name":"web","spec":{"containers":[{"name":"main","image":"nginx:9"` + fields + `}]}}`
	}
	for _, c := range []struct {
		what, body string
		mention    []string
	}{
		{"not JSON", `{"kind":`, []string{"JSON"}},
		{"two values", `{} {}`, []string{"more than one"}},
		{"unknown top-level field", `{"kind":"Pod","name":"web","spex":{}}`, []string{"spex", "unknown field", "spec"}},
		{"unknown spec field", container(`,"imagee":"x"`), []string{"spec.containers[0].imagee", "unknown field"}},
		{"bad memory quantity", container(`,"resources":{"memory":"64MB"}`), []string{"spec.containers[0].resources.memory", "64MB"}},
		{"bad cpu quantity", container(`,"resources":{"cpu":"lots"}`), []string{"spec.containers[0].resources.cpu", "lots"}},
		{"number for a string", `{"kind":"Pod","name":"web","spec":{"containers":[{"name":"main","image":"nginx:9"}],"restart":5}}`, []string{"spec.restart", "string"}},
		{"string for a list", `{"kind":"Pod","name":"web","spec":{"containers":"nginx"}}`, []string{"spec.containers", "list"}},
		{"string for a map", container(`,"env":"A=1"`), []string{"spec.containers[0].env", "map"}},
		{"bad enum", `{"kind":"Pod","name":"web","spec":{"containers":[{"name":"main","image":"nginx:9"}],"restart":"sometimes"}}`, []string{"spec.restart", "sometimes"}},
		{"bad env name", container(`,"env":{"1X":"y"}`), []string{`spec.containers[0].env["1X"]`}},
		{"bad container name", `{"kind":"Pod","name":"web","spec":{"containers":[{"name":"Main","image":"nginx:9"}]}}`, []string{"spec.containers[0].name", "Main"}},
		{"no containers", `{"kind":"Pod","name":"web","spec":{}}`, []string{"spec.containers"}},
		{"bad name", `{"kind":"Pod","name":"Web_1","spec":{"containers":[{"name":"main","image":"nginx:9"}]}}`, []string{"name", "Web_1"}},
		{"missing name", `{"kind":"Pod","spec":{"containers":[{"name":"main","image":"nginx:9"}]}}`, []string{"name", "missing"}},
		{"bad namespace", `{"kind":"Pod","name":"web","namespace":"Prod!","spec":{"containers":[{"name":"main","image":"nginx:9"}]}}`, []string{"namespace", "Prod!"}},
		{"namespace on a cluster-scoped kind", `{"kind":"Node","name":"n1","namespace":"default"}`, []string{"namespace", "cluster-scoped"}},
		{"unknown kind", `{"kind":"Widget","name":"web"}`, []string{"kind", "Widget"}},
		{"bad label", `{"kind":"Pod","name":"web","labels":{"bad key!":"x"},"spec":{"containers":[{"name":"main","image":"nginx:9"}]}}`, []string{"labels", "bad key!"}},
		{"label value not a string", `{"kind":"Pod","name":"web","labels":{"app":3},"spec":{"containers":[{"name":"main","image":"nginx:9"}]}}`, []string{"labels.app", "string"}},
	} {
		r := e.do("POST", "/v1/apply", e.root, []byte(c.body))
		if r.status != 400 || r.err.Code != "invalid" {
			t.Errorf("%s: %d %+v, want 400 invalid", c.what, r.status, r.err)
			continue
		}
		for _, m := range c.mention {
			if !strings.Contains(r.err.Error, m) {
				t.Errorf("%s: message %q does not mention %q", c.what, r.err.Error, m)
			}
		}
		if strings.HasPrefix(r.err.Error, "invalid") {
			t.Errorf("%s: message %q repeats the code", c.what, r.err.Error)
		}
	}
	// The Go client gets the same answer.
	bad := pod("default", "web", "nginx:9", nil)
	bad.Spec["containers"].([]any)[0].(map[string]any)["resources"] = map[string]any{"memory": "64MB"}
	_, err := e.admin.Apply(ctx, bad, 0)
	wantError(t, "client apply of a bad quantity", err, 400, "invalid", "spec.containers[0].resources.memory")

	after, err := e.admin.List(ctx, "pods", "", "")
	if err != nil {
		t.Fatal(err)
	}
	// (The store's global revision is no measure: the orchestrator records
	// runs in etcd in the background.)
	if len(after.Items) != 1 {
		t.Errorf("%d pods after refused applies, want 1", len(after.Items))
	}
	if rev := e.storeRev(ref); rev != 1 {
		t.Errorf("pod at revision %d after refused applies, want 1", rev)
	}
	if h := historyOf(t, e.admin, ref); len(h) != 1 {
		t.Errorf("history after refused applies: %q, want the one apply", h)
	}
	if got, _ := e.admin.Get(ctx, ref); image(got) != "nginx:1" {
		t.Errorf("pod image %q after refused applies, want nginx:1", image(got))
	}
	for _, r := range []api.Ref{{Kind: "Pod", Namespace: "prod!", Name: "web"}, {Kind: "Node", Name: "n1"}} {
		if rev := e.storeRev(r); rev != 0 {
			t.Errorf("%s written by a refused apply", r)
		}
	}
}

// TestConflicts: writes based on a stale revision are refused with 409.
func TestConflicts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	alice, _ := e.token("operator:alice", "edit")
	ctrl, _ := e.token("controller:x", "")
	e.register(ctrl, "x", "Pod:status.x")
	if _, err := e.admin.Apply(ctx, pod("default", "web", "nginx:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Apply(ctx, pod("default", "web", "nginx:2", nil), 1); err != nil {
		t.Fatalf("apply expecting the current revision: %v", err)
	}

	_, err := e.admin.Apply(ctx, pod("default", "web", "nginx:3", nil), 1)
	wantError(t, "apply expecting a stale revision", err, 409, "conflict", "revision 1", "revision 2", "operator:alice")
	_, err = ctrl.PutStatus(ctx, ref, map[string]any{"x": "y"}, 1)
	wantError(t, "status expecting a stale revision", err, 409, "conflict")
	_, err = e.admin.Delete(ctx, ref, 1)
	wantError(t, "delete expecting a stale revision", err, 409, "conflict")
	_, err = e.admin.Apply(ctx, pod("default", "new", "nginx:3", nil), 5)
	wantError(t, "create expecting a revision", err, 409, "conflict", "does not exist")
	if r := e.do("POST", "/v1/apply?expect=abc", e.root, []byte(`{"kind":"Pod","name":"web","spec":{"containers":[{"name":"main","image":"nginx:4"}]}}`)); r.status != 400 || r.err.Code != "invalid" || !strings.Contains(r.err.Error, "abc") {
		t.Errorf("apply with expect=abc: %d %+v, want 400 naming it", r.status, r.err)
	}

	got, err := e.admin.Get(ctx, ref)
	if err != nil || got.Meta.Revision != 2 || image(got) != "nginx:2" || got.Status != nil {
		t.Errorf("after refused writes: %+v %v, want rev 2 with nginx:2", got, err)
	}
	if rev := e.storeRev(api.Ref{Kind: "Pod", Namespace: "default", Name: "new"}); rev != 0 {
		t.Errorf("refused create wrote revision %d", rev)
	}
	if _, err := ctrl.PutStatus(ctx, ref, map[string]any{"x": "y"}, 2); err != nil {
		t.Errorf("status expecting the current revision: %v", err)
	}
	if _, err := e.admin.Delete(ctx, ref, 3); err != nil {
		t.Errorf("delete expecting the current revision: %v", err)
	}
	e.waitGone(ref)
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	big := strings.Repeat("x", server.MaxBodyBytes)
	body := []byte(`{"kind":"Pod","name":"big","spec":{"containers":[{"name":"main","image":"nginx:1","env":{"BIG":"` + big + `"}}]}}`)
	r := e.do("POST", "/v1/apply", e.root, body)
	if r.status != 413 || r.err.Code != "too_large" {
		t.Errorf("apply of %d bytes: %d %+v, want 413 too_large", len(body), r.status, r.err)
	}
	o := pod("default", "big", "nginx:1", nil)
	o.Spec["containers"].([]any)[0].(map[string]any)["env"] = map[string]any{"BIG": big}
	_, err := e.admin.Apply(ctx, o, 0)
	wantError(t, "client apply of a huge object", err, 413, "too_large")
	if rev := e.storeRev(api.Ref{Kind: "Pod", Namespace: "default", Name: "big"}); rev != 0 {
		t.Errorf("oversized apply wrote revision %d", rev)
	}

	// Status writes are bounded too.
	ctrl, _ := e.token("controller:x", "")
	if _, err := e.admin.Apply(ctx, pod("default", "ok", "nginx:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	_, err = ctrl.PutStatus(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: "ok"}, map[string]any{"big": big}, 0)
	wantError(t, "huge status write", err, 413, "too_large")
	if rev := e.storeRev(api.Ref{Kind: "Pod", Namespace: "default", Name: "ok"}); rev != 1 {
		t.Errorf("oversized status write moved the pod to revision %d", rev)
	}
}

// Regression: a write puts the object into etcd twice in one transaction
// (the object and its snapshot record), so every valid object up to
// server.MaxBodyBytes must fit in one etcd request; it used not to (etcd's
// default 1.5 MiB against a 4 MiB body limit: 500 "request is too large").
func TestApplyWithinBodyLimitIsStored(t *testing.T) {
	e := newEnv(t)
	for _, size := range []int{256 << 10, 1 << 20, 2 << 20, server.MaxBodyBytes} {
		name := fmt.Sprintf("size-%d", size)
		head := `{"kind":"Pod","name":"` + name + `","spec":{"containers":[{"name":"main","image":"nginx:1","env":{"BIG":"`
		tail := `"}}]}}`
		body := head + strings.Repeat("y", size-len(head)-len(tail)) + tail
		if len(body) != size {
			t.Fatalf("body is %d bytes, want %d", len(body), size)
		}
		r := e.do("POST", "/v1/apply", e.root, []byte(body))
		if r.status != 200 {
			t.Errorf("apply of a valid %d-byte object (limit %d): %d %s: %s", size, server.MaxBodyBytes, r.status, r.err.Code, r.err.Error)
		}
	}
}

// Regression: the store re-encodes objects with encoding/json's default HTML
// escaping, so each '<', '>' or '&' a request carries as one byte is stored
// as six (\u003c), once in the object and once more in its snapshot
// record. A valid object well under server.MaxBodyBytes (2 MiB) made mostly
// of such characters (a shell script in an env var: "a && b > c") becomes
// an etcd request over store.MaxRequestBytes (8 MiB) and the apply fails
// with "500 internal: etcdserver: request is too large".
func TestApplyOfEscapedCharactersWithinBodyLimitIsStored(t *testing.T) {
	e := newEnv(t)
	for _, size := range []int{256 << 10, 1 << 20, server.MaxBodyBytes} {
		name := fmt.Sprintf("script-%d", size)
		head := `{"kind":"Pod","name":"` + name + `","spec":{"containers":[{"name":"main","image":"nginx:1","env":{"SCRIPT":"`
		tail := `"}}]}}`
		body := head + strings.Repeat("&", size-len(head)-len(tail)) + tail
		r := e.do("POST", "/v1/apply", e.root, []byte(body))
		if r.status != 200 {
			t.Errorf("apply of a valid %d-byte object of '&'s (limit %d): %d %s: %s", size, server.MaxBodyBytes, r.status, r.err.Code, r.err.Error)
		}
	}
}

func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.do("GET", "/healthz", "", nil)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != "ok" {
		t.Errorf("healthz: %d %q", r.status, r.body)
	}
	for i := 0; i < 2; i++ {
		if _, _, err := e.admin.Whoami(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.do("GET", "/v1/whoami", "", nil)
	e.do("GET", "/v1/objects/pods/default/nope", e.root, nil)

	r = e.do("GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("metrics: %d %s", r.status, r.body)
	}
	count := func(labels ...string) float64 {
		for _, line := range strings.Split(string(r.body), "\n") {
			if !strings.HasPrefix(line, "skiff_api_requests_total{") {
				continue
			}
			ok := true
			for _, l := range labels {
				ok = ok && strings.Contains(line, l)
			}
			if ok {
				f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				if err != nil {
					t.Errorf("metrics line %q: %v", line, err)
				}
				return f
			}
		}
		return 0
	}
	if !strings.Contains(string(r.body), "# TYPE skiff_api_requests_total counter") {
		t.Errorf("metrics lack skiff_api_requests_total:\n%s", r.body)
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{`endpoint="whoami"`, `method="GET"`, `code="200"`}, 2},
		{[]string{`endpoint="whoami"`, `code="401"`}, 1},
		{[]string{`endpoint="objects"`, `code="404"`}, 1},
	} {
		if got := count(c.labels...); got != c.want {
			t.Errorf("skiff_api_requests_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if !strings.Contains(string(r.body), "skiff_api_request_duration_seconds") {
		t.Errorf("metrics lack the request duration histogram")
	}
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.admin.Apply(ctx, pod("apps", "old", "old:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	l, err := e.admin.List(ctx, "pods", "apps", "")
	if err != nil {
		t.Fatal(err)
	}
	// Made after the list, before the watch starts: still seen.
	if _, err := e.admin.Apply(ctx, pod("apps", "web", "web:1", nil), 0); err != nil {
		t.Fatal(err)
	}

	watcher, _ := e.token("operator:watcher", "view")
	events := make(chan client.Event, 16)
	done := make(chan error, 1)
	wctx, stop := context.WithCancel(ctx)
	go func() {
		done <- watcher.Watch(wctx, "pods", "apps", l.Revision, func(ev client.Event) error {
			events <- ev
			return nil
		})
	}()
	next := func(what string) client.Event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case err := <-done:
			t.Fatalf("%s: watch ended: %v", what, err)
		case <-ctx.Done():
			t.Fatalf("%s: no event before the test's deadline", what)
		}
		return client.Event{}
	}
	ev := next("apply before the watch")
	if ev.Type != "created" || ev.Object.Name != "web" || image(ev.Object) != "web:1" || ev.Revision <= l.Revision {
		t.Errorf("first event: %s %s %s at %d, want created web web:1 after %d", ev.Type, ev.Object.Name, image(ev.Object), ev.Revision, l.Revision)
	}

	// Made while watching.
	if _, err := e.admin.Apply(ctx, pod("other", "x", "x:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	res, err := e.admin.Apply(ctx, pod("apps", "web", "web:2", nil), 0)
	if err != nil {
		t.Fatal(err)
	}
	ev = next("apply while watching")
	if ev.Type != "configured" || ev.Object.Name != "web" || image(ev.Object) != "web:2" || ev.Object.Meta.Revision != res.Object.Meta.Revision {
		t.Errorf("second event: %s %s %s rev %d, want configured web web:2 rev %d", ev.Type, ev.Object.Name, image(ev.Object), ev.Object.Meta.Revision, res.Object.Meta.Revision)
	}
	if _, err := e.admin.Delete(ctx, api.Ref{Kind: "Pod", Namespace: "apps", Name: "old"}, 0); err != nil {
		t.Fatal(err)
	}
	ev = next("delete while watching")
	if ev.Type != "configured" || ev.Object.Name != "old" || ev.Object.Meta.Deleting == nil {
		t.Errorf("third event: %s %s deleting %v, want old configured as being deleted", ev.Type, ev.Object.Name, ev.Object.Meta.Deleting)
	}
	ev = next("removal after the down run")
	if ev.Type != "deleted" || ev.Object.Name != "old" {
		t.Errorf("fourth event: %s %s, want deleted old", ev.Type, ev.Object.Name)
	}
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("watch ended with %v, want context.Canceled", err)
		}
	case <-ctx.Done():
		t.Fatal("watch did not end when its context was cancelled")
	}
	select {
	case ev := <-events:
		t.Errorf("unexpected event %+v (namespace other is not watched)", ev)
	default:
	}

	err = e.client("garbage").Watch(ctx, "pods", "", 0, func(client.Event) error { return nil })
	wantError(t, "watch with a garbage token", err, 401, "unauthenticated")
	if r := e.do("GET", "/v1/watch/pods?after=-4", e.root, nil); r.status != 400 {
		t.Errorf("watch after=-4: %d", r.status)
	}
}

func TestTLS(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// Another cluster's CA.
	other, err := server.EnsureCA(ctx, e.kv.Client, "/other-cluster")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.CertPEM, e.ca.CertPEM) {
		t.Fatal("second CA is the same as the first")
	}
	c, err := client.New(client.Config{Servers: []string{e.url}, Token: e.root, CA: string(other.CertPEM)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Whoami(ctx)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) || !strings.Contains(err.Error(), "x509") {
		t.Errorf("client with another CA: %v, want an x509 unknown authority error", err)
	}

	// The right CA, but a name the certificate does not cover.
	port := e.url[strings.LastIndexByte(e.url, ':')+1:]
	c = e.client(e.root)
	c2, _ := client.New(client.Config{Servers: []string{"https://localhost:" + port}, Token: e.root, CA: string(e.ca.CertPEM)})
	_, _, err = c2.Whoami(ctx)
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Errorf("client using a name the certificate lacks: %v, want an x509 hostname error", err)
	}
	if _, _, err := c.Whoami(ctx); err != nil {
		t.Errorf("client with the cluster CA: %v", err)
	}

	// EnsureCA returns the same CA on a second call, and the server
	// certificate is kept while it is valid.
	again, err := server.EnsureCA(ctx, e.kv.Client, prefix)
	if err != nil || !bytes.Equal(again.CertPEM, e.ca.CertPEM) {
		t.Errorf("EnsureCA a second time gave another CA (%v)", err)
	}
	dir := t.TempDir()
	c1, err := e.ca.ServerCert(dir, []string{"127.0.0.1", "skiff.example"})
	if err != nil {
		t.Fatal(err)
	}
	cAgain, err := e.ca.ServerCert(dir, []string{"skiff.example"})
	if err != nil || !bytes.Equal(c1.Certificate[0], cAgain.Certificate[0]) {
		t.Errorf("ServerCert re-issued a certificate that covers the hosts (%v)", err)
	}
	cNew, err := e.ca.ServerCert(dir, []string{"127.0.0.1", "other.example"})
	if err != nil || bytes.Equal(c1.Certificate[0], cNew.Certificate[0]) {
		t.Errorf("ServerCert kept a certificate that does not cover a new host (%v)", err)
	}
	leaf, err := x509.ParseCertificate(cNew.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err != nil {
		t.Errorf("new server certificate does not verify for other.example: %v", err)
	}
}

// Regression: an object applied with nothing but kind and name (a Node with
// an empty spec) used to have an unreadable first revision, its snapshot's
// empty body dropped by omitempty: /revisions/1 and rollback answered 500
// "history damaged". See store's TestAtEmptyObject.
func TestEmptyNodeRevisionReadable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := api.Ref{Kind: "Node", Name: "n1"}
	if r := e.do("POST", "/v1/apply", e.root, []byte(`{"kind":"Node","name":"n1"}`)); r.status != 200 {
		t.Fatalf("apply node: %d %s", r.status, r.body)
	}
	if _, err := e.admin.Get(ctx, ref); err != nil {
		t.Fatalf("get node: %v", err)
	}
	if o, err := e.admin.At(ctx, ref, 1); err != nil || o.Name != "n1" {
		t.Errorf("revision 1 of node n1: %+v %v, want the node", o, err)
	}
	if _, err := e.admin.Apply(ctx, api.Object{Kind: "Node", Name: "n1", Spec: map[string]any{"unschedulable": true}}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Rollback(ctx, ref, 1); err != nil {
		t.Errorf("rollback of node n1 to revision 1: %v", err)
	}
}

// Regression: a node may apply its own Node object (authz.go: selfRegistration,
// "node:NAME  its own Node object"), but any labels or spec in it are
// refused with a message that contradicts itself: "node:n1 may not write
// labels.zone of node/n1: it is owned by node:n1". checkFields (authz.go)
// passes manager "node:n1" to ownership.Registry.CheckWrite, which compares
// it with ident(self), and for a node self is AgentController, so it
// compares "node:n1" with "controller:agent" (ownership.go, CheckWrite, the
// `managerController == ident(self)` case). Only a bare Node registers.
func TestNodeRegistersItself(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	node, _ := e.token("node:n1", "")
	o := api.Object{Kind: "Node", Name: "n1", Labels: map[string]string{"zone": "a"}}
	if res, err := node.Apply(ctx, o, 0); err != nil || res.Op != "created" {
		t.Errorf("node:n1 registering node/n1 with labels: %+v %v, want created", res, err)
	}
	o.Spec = map[string]any{"taints": []any{map[string]any{"key": "gpu", "effect": "NoSchedule"}}}
	if res, err := node.Apply(ctx, o, 0); err != nil || res.Op == "unchanged" {
		t.Errorf("node:n1 updating its own node/n1: %+v %v, want it written", res, err)
	}
}

// Regression: PUT .../status replaces the whole status, and a controller must
// leave the status fields of other controllers as they are, but it reads
// objects stripped to the fields it declared (stripFor), so it cannot send
// them back. Once controller:y has written status.zone, controller:x can no
// longer write status.progress, which it owns: "controller:x may not write
// status.zone of pod/web: it is owned by controller:y". putStatus
// (server.go) sets next.Status = req.Status; it should merge the request
// into the current status within the writer's fields (or keep fields the
// writer may not see).
func TestStatusWritesOfTwoControllers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	x, _ := e.token("controller:x", "")
	y, _ := e.token("controller:y", "")
	e.register(x, "x", "Pod:status.progress")
	e.register(y, "y", "Pod:status.zone")
	if _, err := e.admin.Apply(ctx, pod("default", "web", "nginx:1", nil), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := y.PutStatus(ctx, ref, map[string]any{"zone": "z1"}, 0); err != nil {
		t.Fatalf("controller:y writing status.zone: %v", err)
	}
	seen, err := x.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := seen.Status["zone"]; ok {
		t.Fatalf("controller:x sees status.zone, which it did not declare")
	}
	// x writes its own field, starting from what it can see.
	status := seen.Status
	if status == nil {
		status = map[string]any{}
	}
	status["progress"] = "Running"
	if _, err := x.PutStatus(ctx, ref, status, 0); err != nil {
		t.Errorf("controller:x writing status.progress, which it owns: %v", err)
	}
	got, err := e.admin.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status["zone"] != "z1" {
		t.Errorf("status.zone of controller:y is %v after controller:x wrote status.progress, want z1", got.Status["zone"])
	}
}

// A controller registration is in force once its apply returns, and gone
// once its delete returns: the server lists, and enforces, what is stored.
func TestControllerRegistrationAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ctrl, _ := e.token("controller:x", "")
	e.register(ctrl, "x", "Pod:status.progress") // listed at once (register checks)
	if _, err := e.admin.Delete(ctx, api.Ref{Kind: "Controller", Name: "x"}, 0); err != nil {
		t.Fatal(err)
	}
	l, err := e.admin.Controllers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range l {
		if c.Name == "x" {
			t.Errorf("controller x deleted but still listed")
		}
	}
}
