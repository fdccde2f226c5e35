package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

// TestCluster forms a cluster of three servers whose embedded etcd members
// talk peer TLS on loopback, writes through one server and reads through
// another, removes a stopped server's member and joins a new server with
// a bundle from skiff server add, as docs/ha.md tells an operator to; then
// it stops two of the three and asks the last what it sees.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four servers with their etcd members")
	}
	dir := t.TempDir()
	initial := fmt.Sprintf("a=https://127.0.0.1:%d,b=https://127.0.0.1:%d,c=https://127.0.0.1:%d", freePort(t), freePort(t), freePort(t))
	if _, err := WritePeerBundles(initial, filepath.Join(dir, "bundles")); err != nil {
		t.Fatal(err)
	}
	servers := map[string]*testServer{}
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b", "c"} {
		o := Options{DataDir: filepath.Join(dir, name), Name: name, InitialCluster: initial,
			PeerBundle: filepath.Join(dir, "bundles", name+".bundle")}
		servers[name] = startServer(t, &wg, o) // all at once: each waits for a quorum
	}
	for _, s := range servers {
		s.waitReady(t)
	}

	// The one server that bootstrapped the cluster holds the admin token.
	var cfg client.Config
	for _, name := range []string{"a", "b", "c"} {
		if c, err := client.LoadConfig(filepath.Join(dir, name, "config")); err == nil {
			cfg = c
		}
	}
	if cfg.Token == "" {
		t.Fatal("no server wrote a client config with the admin token")
	}
	through := func(name string) *client.Client {
		c := cfg
		c.Servers = []string{servers[name].info.URL}
		cl, err := client.New(c)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Written through a, read through b: the same object at the same
	// revision, with its history.
	pod := api.Object{Kind: "Pod", Namespace: "default", Name: "web",
		Spec: map[string]any{"containers": []any{map[string]any{"name": "main", "image": "nginx:1"}}}}
	if _, err := through("a").Apply(ctx, pod, 0); err != nil {
		t.Fatalf("apply through a: %v", err)
	}
	pod.Spec["containers"].([]any)[0].(map[string]any)["image"] = "nginx:2"
	w, err := through("a").Apply(ctx, pod, 0)
	if err != nil {
		t.Fatalf("second apply through a: %v", err)
	}
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	got, err := through("b").Get(ctx, ref)
	if err != nil {
		t.Fatalf("get through b: %v", err)
	}
	if got.Meta.Revision != w.Object.Meta.Revision || !strings.Contains(fmt.Sprint(got.Spec), "nginx:2") {
		t.Fatalf("b reads revision %d %v, a wrote revision %d with nginx:2", got.Meta.Revision, got.Spec, w.Object.Meta.Revision)
	}
	if h, err := through("b").History(ctx, ref, nil); err != nil || len(h) < 2 {
		t.Fatalf("history through b: %v, %d revisions, want 2 or more", err, len(h))
	}

	// The peer port takes peer certificates only: not the API's, though
	// the cluster CA issued both.
	pki := filepath.Join(dir, "a", "pki")
	peerA := strings.Split(strings.Split(initial, ",")[0], "=")[1]
	if err := peerGet(pki, "peer", peerA); err != nil {
		t.Errorf("peer certificate on the peer port: %v", err)
	}
	if err := peerGet(pki, "server", peerA); err == nil {
		t.Error("the API's certificate opened the peer port")
	}

	if err := waitServers(ctx, through("a"), "a", "b", "c"); err != nil {
		t.Fatalf("skiff servers through a: %v", err)
	}

	// Refusals: the server answering, a running server.
	if err := through("a").RemoveServer(ctx, "a", false); !client.IsCode(err, "conflict") {
		t.Errorf("a removing itself without --force: %v, want a conflict", err)
	}
	if err := through("a").RemoveServer(ctx, "b", false); !client.IsCode(err, "conflict") {
		t.Errorf("removing running b without --force: %v, want a conflict", err)
	}

	// c dies; its member is removed; d joins in its place.
	servers["c"].stop()
	if err := through("a").RemoveServer(ctx, "c", false); err != nil {
		t.Fatalf("remove stopped c: %v", err)
	}
	bundle, err := through("b").AddServer(ctx, "d", fmt.Sprintf("https://127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatalf("add d: %v", err)
	}
	join := filepath.Join(dir, "d.join")
	if err := os.WriteFile(join, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	servers["d"] = startServer(t, &wg, Options{DataDir: filepath.Join(dir, "d"), Name: "d", Join: join})
	servers["d"].waitReady(t)
	if got, err := through("d").Get(ctx, ref); err != nil || got.Meta.Revision != w.Object.Meta.Revision {
		t.Fatalf("get through d: %v, revision %d, want %d", err, got.Meta.Revision, w.Object.Meta.Revision)
	}
	if _, err := through("d").Apply(ctx, pod, 0); err != nil {
		t.Fatalf("apply through d: %v", err)
	}
	if err := waitServers(ctx, through("d"), "a", "b", "d"); err != nil {
		t.Fatalf("skiff servers through d: %v", err)
	}

	// Two of three gone: no quorum. The one left still says what it sees.
	servers["b"].stop()
	servers["d"].stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := through("a").Servers(ctx)
		var a client.ServerStatus
		for _, s := range st.Servers {
			if s.Name == "a" {
				a = s
			}
		}
		if err == nil && a.Health == "no leader" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff servers through a without a quorum: %v; a is %q, want no leader", err, a.Health)
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, s := range servers {
		s.stop()
	}
	wg.Wait()
}

// peerGet asks an etcd peer port for its version with the certificate
// pki/NAME.crt.
func peerGet(pki, name, peerURL string) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, name+".crt"), filepath.Join(pki, name+".key"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	resp, err := hc.Get(peerURL + "/version")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// TestExternalEtcd runs two servers on an etcd of their own (an external
// cluster of one member here): skiff servers lists both, one leads the
// controllers, a third server with a name taken is refused, and members
// are left to etcd's tools.
func TestExternalEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd and two servers")
	}
	dir := t.TempDir()
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	<-etcd.Server.ReadyNotify()

	var wg sync.WaitGroup
	servers := map[string]*testServer{}
	for _, name := range []string{"x", "y"} {
		servers[name] = startServer(t, &wg, Options{DataDir: filepath.Join(dir, name), Name: name, EtcdEndpoints: []string{cu.String()}})
		servers[name].waitReady(t)
	}
	var c client.Config
	for _, name := range []string{"x", "y"} {
		if got, err := client.LoadConfig(filepath.Join(dir, name, "config")); err == nil {
			c = got
		}
	}
	c.Servers = []string{servers["y"].info.URL}
	cl, err := client.New(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := cl.Servers(ctx)
		if err == nil && st.Etcd != "external" {
			t.Fatalf("etcd is %q, want external", st.Etcd)
		}
		if err == nil && len(st.Servers) == 2 && st.Servers[0].Name == "x" && st.Servers[1].Name == "y" &&
			st.Servers[0].Health == "healthy" && st.Servers[1].Health == "healthy" && st.ControllerLeader != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff servers: %v, %+v; want x and y healthy, one leading the controllers", err, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := cl.RemoveServer(ctx, "x", false); !client.IsCode(err, "invalid") {
		t.Errorf("remove on an external etcd: %v, want it refused as invalid", err)
	}
	dup := startServer(t, &wg, Options{DataDir: filepath.Join(dir, "x2"), Name: "x", EtcdEndpoints: []string{cu.String()}})
	select {
	case err := <-dup.done:
		if err == nil || !strings.Contains(err.Error(), "another server named x") {
			t.Errorf("a second server named x: %v, want it refused", err)
		}
		close(dup.done)
	case <-dup.ready:
		t.Error("a second server named x started")
	case <-time.After(60 * time.Second):
		t.Error("a second server named x neither started nor stopped in 60s")
	}
	for _, s := range servers {
		s.stop()
	}
	wg.Wait()
}

// waitServers waits until skiff servers lists exactly names, all healthy,
// one of them the raft leader and one the controllers' leader (elections
// take a few seconds after a start or a leader's death), and says what it
// saw last if that does not happen within 30 seconds.
func waitServers(ctx context.Context, c *client.Client, names ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.Servers(ctx)
		if err == nil {
			err = expectServers(st, names...)
		}
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// expectServers checks that exactly names are listed, all healthy, one of
// them the raft leader and one the controllers' leader.
func expectServers(st client.Servers, names ...string) error {
	var got []string
	leaders := 0
	for _, s := range st.Servers {
		got = append(got, s.Name)
		if s.Health != "healthy" {
			return fmt.Errorf("%s is %s (%s)", s.Name, s.Health, s.Error)
		}
		if s.RaftIndex == 0 || s.APIURL == "" || len(s.PeerURLs) == 0 {
			return fmt.Errorf("%s: raft index %d, API URL %q, peer URLs %v: want all", s.Name, s.RaftIndex, s.APIURL, s.PeerURLs)
		}
		if s.EtcdLeader {
			leaders++
		}
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		return fmt.Errorf("servers %v, want %v", got, names)
	}
	if leaders != 1 {
		return fmt.Errorf("%d raft leaders listed, want 1", leaders)
	}
	if !slices.Contains(names, st.ControllerLeader) {
		return fmt.Errorf("the controllers' leader is %q, not one of %v", st.ControllerLeader, names)
	}
	return nil
}

// testServer is a server running Run in this process.
type testServer struct {
	cancel context.CancelFunc
	ready  chan Info
	done   chan error
	info   Info
	logs   *syncBuffer
}

func startServer(t *testing.T, wg *sync.WaitGroup, o Options) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{cancel: cancel, ready: make(chan Info, 1), done: make(chan error, 1), logs: &syncBuffer{}}
	o.Listen = "127.0.0.1:0"
	o.Builtins = []string{"admission"}
	o.Log = slog.New(slog.NewTextHandler(s.logs, nil))
	o.Ready = func(i Info) { s.ready <- i }
	wg.Add(1)
	go func() { defer wg.Done(); s.done <- Run(ctx, o) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("server %s log:\n%s", o.Name, s.logs.String())
		}
	})
	return s
}

func (s *testServer) waitReady(t *testing.T) {
	t.Helper()
	select {
	case s.info = <-s.ready:
	case err := <-s.done:
		t.Fatalf("server stopped before it served: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("server not ready after 90s")
	}
}

// stop stops the server and waits until it has.
func (s *testServer) stop() {
	s.cancel()
	if err, ok := <-s.done; ok {
		close(s.done)
		_ = err
	}
}

// freePort is a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

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
