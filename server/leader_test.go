package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/server"
	"skiff.dev/skiff/store"
	"skiff.dev/skiff/workflow"
)

// cluster is several API servers (each with its orchestrator and its own
// etcd client) over one embedded etcd, as an HA control plane's servers
// are over one etcd cluster.
type cluster struct {
	t       *testing.T
	etcd    *clientv3.Client // the tests' own
	addr    string           // etcd's client URL
	ca      *server.CA
	root    string
	servers []*member
}

// member is one server of a cluster.
type member struct {
	name string
	url  string
	kv   *clientv3.Client
	orch *server.Orchestrator
	stop func() // ends the orchestrator (its Run returns)
	srv  *http.Server
	logs *syncBuffer
}

// newCluster starts an etcd member serving clients on a loopback port
// (store.StartEmbedded opens no socket, and each server here needs a
// client of its own, to be cut off alone).
func newCluster(t *testing.T) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	lo, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*lo}, []url.URL{*lo}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = nil, []url.URL{*lo}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(cfg.Dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-ctx.Done():
		t.Fatal("etcd not ready")
	}
	c := &cluster{t: t, addr: "http://" + e.Clients[0].Addr().String()}
	c.etcd = c.dial()
	if c.ca, err = server.EnsureCA(ctx, c.etcd, prefix); err != nil {
		t.Fatalf("ensure CA: %v", err)
	}
	if c.root, _, err = server.NewTokens(c.etcd, prefix).Create(ctx, identity.Identity{Kind: identity.Operator, Name: "root"}, server.RoleAdmin, "test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// dial returns a new etcd client, closed with the test.
func (c *cluster) dial() *clientv3.Client {
	kv, err := clientv3.New(clientv3.Config{Endpoints: []string{c.addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { kv.Close() })
	return kv
}

// start starts a server named name: its API on a loopback port, its
// orchestrator campaigning with a 2 s session TTL (etcd's least).
func (c *cluster) start(name string) *member {
	t := c.t
	t.Helper()
	kv := c.dial()
	st := store.New(kv, store.Options{Prefix: prefix})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, url: "https://" + ln.Addr().String(), kv: kv, logs: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server %s log:\n%s", name, m.logs.String())
		}
	})
	// Only admission of the built-ins: the tests' own controller does the
	// rest, through the API.
	orch, err := server.NewOrchestrator(st, kv, prefix, slog.New(slog.NewTextHandler(m.logs, nil)), []string{"admission"})
	if err != nil {
		t.Fatal(err)
	}
	orch.SetIdentity(name, m.url)
	orch.SetLeaderTTL(2 * time.Second)
	m.orch = orch
	cert, err := c.ca.ServerCert(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	api := server.New(st, server.NewTokens(kv, prefix), orch)
	api.SetTLS(c.ca, cert)
	m.srv = &http.Server{Handler: api, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go m.srv.ServeTLS(ln, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { orch.Run(ctx); close(done) }()
	var once sync.Once
	m.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(func() { m.srv.Close() })
	t.Cleanup(m.stop)
	c.servers = append(c.servers, m)
	return m
}

// kill ends a server as kill -9 would: nothing it does afterwards reaches
// etcd or its API's callers.
func (m *member) kill() {
	m.srv.Close()
	m.kv.Close()
	m.stop()
}

// client is an API client of one server.
func (c *cluster) client(m *member, token string) *client.Client {
	c.t.Helper()
	cl, err := client.New(client.Config{Servers: []string{m.url}, Token: token, CA: string(c.ca.CertPEM)})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// leaders returns the servers that lead now, as they see it.
func (c *cluster) leaders() []*member {
	var out []*member
	for _, m := range c.servers {
		if m.orch.IsLeader() {
			out = append(out, m)
		}
	}
	return out
}

// leader waits until exactly one of the servers that are up leads, as
// etcd and the servers see it, and returns it.
func (c *cluster) leader(up ...*member) *member {
	c.t.Helper()
	var got *member
	eventually(c.t, "one leader", func() (bool, string) {
		name, _, err := server.Leader(context.Background(), c.etcd, prefix)
		if err != nil {
			return false, err.Error()
		}
		var leading []string
		got = nil
		for _, m := range up {
			if m.orch.IsLeader() {
				leading = append(leading, m.name)
				got = m
			}
		}
		return len(leading) == 1 && leading[0] == name, fmt.Sprintf("etcd says %q, leading: %v", name, leading)
	})
	return got
}

// revoke ends the session of the server that leads, as etcd does when
// its lease expires, while that server goes on running.
func (c *cluster) revoke() {
	c.t.Helper()
	ctx := context.Background()
	resp, err := c.etcd.Get(ctx, prefix+"/leader/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		c.t.Fatalf("no election key: %v", err)
	}
	if _, err := c.etcd.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		c.t.Fatal(err)
	}
}

// counter is a controller with three steps, one (writes status.one),
// two (writes nothing) and three (writes status.three), that counts the
// times it runs each. Each write holds a value no other run of the step
// would write, so a step applied twice leaves two revisions.
type counter struct {
	mu    sync.Mutex
	calls map[string]int // pod/step → times run
	seq   atomic.Int64
}

func (k *counter) step(name string, writes bool) client.StepFunc {
	return func(ctx context.Context, it *workflow.WorkItem, log func(string, map[string]any)) (map[string]any, error) {
		k.mu.Lock()
		k.calls[it.Name+"/"+name]++
		k.mu.Unlock()
		select { // long enough that runs are in flight when a leader goes
		case <-time.After(30 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !writes {
			return nil, nil
		}
		return map[string]any{"status." + name: fmt.Sprintf("%s-%d", name, k.seq.Add(1))}, nil
	}
}

var counterSpec = map[string]any{
	"owns":  []any{"Pod:status.one", "Pod:status.three"},
	"reads": []any{"Pod:spec"},
	"steps": []any{
		map[string]any{"name": "one", "kind": "Pod", "after": []any{"admitted"}, "requires": []any{"admitted"}, "before": []any{"scheduled"}, "requiredBy": []any{"scheduled"}},
		map[string]any{"name": "two", "kind": "Pod", "after": []any{"one"}, "requires": []any{"one"}, "before": []any{"scheduled"}, "requiredBy": []any{"scheduled"}},
		map[string]any{"name": "three", "kind": "Pod", "after": []any{"scheduled"}, "requires": []any{"scheduled"}, "before": []any{"started"}, "requiredBy": []any{"started"}},
	},
}

// The leader is killed, then the next one deposed, in the middle of a
// stream of pod creations: afterwards every pod has exactly one run, done,
// in which every step is done, and every step's writes were applied once.
func TestLeaderFailoverResumesRuns(t *testing.T) {
	c := newCluster(t)
	a := c.start("a")
	if c.leader(a) != a {
		t.Fatal("the only server does not lead")
	}
	b, d := c.start("b"), c.start("c")
	if got := c.leader(a, b, d); got != a {
		t.Fatalf("server %s leads; a campaigned first", got.name)
	}

	// The controller and the creators talk to server c, which does not
	// lead (yet): it passes work requests on.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := c.client(d, c.root)
	ctrlTok, err := admin.CreateToken(ctx, "controller:counter", "")
	if err != nil {
		t.Fatal(err)
	}
	ctrl := c.client(d, ctrlTok)
	if _, err := ctrl.Apply(ctx, api.Object{Kind: "Controller", Name: "counter", Spec: counterSpec}, 0); err != nil {
		t.Fatal(err)
	}
	k := &counter{calls: map[string]int{}}
	served := make(chan struct{})
	go func() {
		defer close(served)
		ctrl.Serve(ctx, map[string]client.StepFunc{"one": k.step("one", true), "two": k.step("two", false), "three": k.step("three", true)})
	}()
	eventually(t, "controller counter registered on the leader", func() (bool, string) {
		for _, r := range a.orch.Compiled().Registrations {
			if r.Name == "counter" {
				return true, ""
			}
		}
		return false, "not yet"
	})

	const pods = 90
	create := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := admin.Apply(ctx, pod("default", fmt.Sprintf("p%02d", i), "busybox:1", nil), 0); err != nil {
				t.Fatalf("create pod %d: %v", i, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	create(0, 30)
	a.kill()
	next := c.leader(b, d)
	t.Logf("server a killed; server %s leads", next.name)
	create(30, 60)
	c.revoke()
	eventually(t, "server "+next.name+" deposed", func() (bool, string) {
		return !next.orch.IsLeader(), "still leads"
	})
	third := c.leader(b, d)
	t.Logf("server %s deposed; server %s leads", next.name, third.name)
	create(60, pods)

	// Every pod's run ends, done.
	for i := range pods {
		ref := api.Ref{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("p%02d", i)}
		var runs []workflow.RunRecord
		eventually(t, ref.String()+" run done", func() (bool, string) {
			runs, err = admin.Runs(ctx, ref)
			if err != nil {
				return false, err.Error()
			}
			return len(runs) > 0 && runs[0].State == workflow.RunDone, summary(runs)
		})
		// ... exactly one run (a run a leader took over keeps its ID), in
		// which each step is done once.
		if len(runs) != 1 {
			t.Errorf("%s has %d runs, want 1: %s", ref, len(runs), summary(runs))
			continue
		}
		for _, s := range runs[0].Steps {
			if s.State != workflow.Done {
				t.Errorf("%s: %s is %s (%s), want done", ref, s.Name, s.State, s.Reason)
			}
		}
		// ... and each step's writes were applied once: one revision each.
		hist, err := admin.History(ctx, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		causes := map[string]int{}
		for _, h := range hist {
			causes[h.Cause]++
		}
		if causes["step one"] != 1 || causes["step three"] != 1 {
			t.Errorf("%s: step one applied %d times, step three %d times; want once each", ref, causes["step one"], causes["step three"])
		}
	}
	k.mu.Lock()
	again := 0
	for _, n := range k.calls {
		again += n - 1
	}
	k.mu.Unlock()
	t.Logf("%d step executions repeated (attempts in flight when a leader went)", again)
	cancel()
	<-served
}

func summary(runs []workflow.RunRecord) string {
	s := ""
	for _, r := range runs {
		s += fmt.Sprintf("[%s gen %d %s:", r.ID, r.Generation, r.State)
		for _, st := range r.Steps {
			if !st.Target {
				s += fmt.Sprintf(" %s=%s/%d", st.Name, st.State, st.Attempts)
			}
		}
		s += "] "
	}
	return s
}

// A controller talking to a server that does not lead takes its work and
// reports the outcomes in a list (POST /v1/work/done) through it: the
// server passes both on to the leader, and the writes land.
func TestWorkListThroughFollower(t *testing.T) {
	c := newCluster(t)
	a := c.start("a")
	if c.leader(a) != a {
		t.Fatal("the only server does not lead")
	}
	b := c.start("b") // once a leads: b follows
	if got := c.leader(a, b); got != a {
		t.Fatalf("server %s leads; a campaigned first", got.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := c.client(b, c.root)
	ctrlTok, err := admin.CreateToken(ctx, "controller:counter", "")
	if err != nil {
		t.Fatal(err)
	}
	ctrl := c.client(b, ctrlTok)
	if _, err := ctrl.Apply(ctx, api.Object{Kind: "Controller", Name: "counter", Spec: counterSpec}, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "controller counter registered on the leader", func() (bool, string) {
		for _, r := range a.orch.Compiled().Registrations {
			if r.Name == "counter" {
				return true, ""
			}
		}
		return false, "not yet"
	})
	for _, name := range []string{"p1", "p2"} {
		if _, err := admin.Apply(ctx, pod("default", name, "busybox:1", nil), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Step one of each pod comes first; take both through b.
	var list []client.Completion
	for len(list) < 2 {
		items, err := ctrl.TakeWork(ctx, 5*time.Second, 16)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if it.Step != "one" {
				t.Fatalf("work item for step %s, want one", it.Step)
			}
			list = append(list, client.Completion{ID: it.ID, Result: workflow.Result{Writes: map[string]any{"status.one": "done by list"}}})
		}
	}
	errs, err := ctrl.CompleteWorkList(ctx, list)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if e != nil {
			t.Errorf("item %d: %v", i, e)
		}
	}
	for _, name := range []string{"p1", "p2"} {
		got, err := admin.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status["one"] != "done by list" {
			t.Errorf("pod %s status.one = %v, want the list's write", name, got.Status["one"])
		}
	}
}
