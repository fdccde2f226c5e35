package sim_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/agent/sim"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/daemon"
)

// TestSimulatedCluster: 20 simulated nodes joined to a real server (TLS,
// embedded etcd, the built-in controllers) become ready, 100 pods created
// at once are placed on them and reported Running through the API, and
// deleted pods go through their nodes' stop steps and are removed.
func TestSimulatedCluster(t *testing.T) {
	const nodes, pods = 20, 100
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, cfg := startServer(t, ctx)

	tok, err := admin.CreateToken(ctx, "simulator:sim", "")
	if err != nil {
		t.Fatal(err)
	}
	simCfg := cfg
	simCfg.Token = tok
	s, err := sim.New(sim.Options{Config: simCfg, Prefix: "sim", Nodes: nodes, Heartbeat: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() { simDone <- s.Run(simCtx) }()
	defer func() { stopSim(); <-simDone }()

	// Ready: every node's readiness run has written status.network.
	for {
		l, err := admin.List(ctx, "Node", "", "")
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for _, n := range l.Items {
			if n.Status["network"] == "ready" && identity.Simulates("sim", n.Name) && n.Labels[sim.Label] == "sim" {
				ready++
			}
		}
		if ready == nodes {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d simulated nodes ready", ready, nodes)
		}
		time.Sleep(100 * time.Millisecond)
	}

	l, err := admin.List(ctx, "Pod", "", "")
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]string{} // pod → node, once Running
	var mu sync.Mutex
	allRunning := make(chan struct{})
	go admin.Watch(ctx, "Pod", "", l.Revision, func(ev client.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.Object.Status["phase"] == "Running" {
			cs, _ := ev.Object.Status["containers"].([]any)
			c, _ := cs[0].(map[string]any)
			if c["state"] != "running" {
				t.Errorf("pod %s Running with container %v", ev.Object.Name, c)
			}
			if _, seen := running[ev.Object.Name]; !seen {
				running[ev.Object.Name], _ = ev.Object.Status["node"].(string)
				if len(running) == pods {
					close(allRunning)
				}
			}
		}
		return nil
	})
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := api.Object{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("p%03d", i), Spec: map[string]any{
				"containers": []any{map[string]any{"name": "app", "image": "busybox:1",
					"resources": map[string]any{"cpu": "100m", "memory": "128Mi"}}}}}
			if _, err := admin.Apply(ctx, p, 0); err != nil {
				t.Errorf("create %s: %v", p.Name, err)
			}
		}()
	}
	wg.Wait()
	select {
	case <-allRunning:
	case <-ctx.Done():
		mu.Lock()
		t.Fatalf("%d of %d pods Running", len(running), pods)
	}
	mu.Lock()
	used := map[string]bool{}
	for p, n := range running {
		if !identity.Simulates("sim", n) {
			t.Errorf("pod %s Running on %q, not a simulated node", p, n)
		}
		used[n] = true
	}
	mu.Unlock()
	t.Logf("%d pods Running on %d nodes", pods, len(used))

	// Deleting goes through the nodes' stop and netdown steps.
	for i := range 10 {
		if _, err := admin.Delete(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("p%03d", i)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	for {
		l, err := admin.List(ctx, "Pod", "", "")
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Items) == pods-10 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d pods left after deleting 10 of %d", len(l.Items), pods)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := s.Stats()
	if st.Registered != nodes || st.Done["start"] < pods || st.Done["stop"] != 10 || st.Done["routes"] < nodes || st.Failed != 0 {
		t.Errorf("simulator stats %+v: want %d nodes registered, ≥ %d starts, 10 stops, ≥ %d routes, no failures", st, nodes, pods, nodes)
	}
}

// TestWrongToken: a simulator refuses to run with a token that is not
// simulator:PREFIX for its prefix.
func TestWrongToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, cfg := startServer(t, ctx)
	tok, err := admin.CreateToken(ctx, "simulator:other", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token = tok
	s, err := sim.New(sim.Options{Config: cfg, Prefix: "sim", Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(ctx); err == nil || err.Error() != "sim: the token is for simulator:other, not simulator:sim (skiff token create --simulator sim makes one)" {
		t.Errorf("Run with another simulator's token: %v", err)
	}
	if _, err := sim.New(sim.Options{Config: cfg, Prefix: "Sim", Nodes: 1}); err == nil {
		t.Error("New accepted prefix Sim, which makes no valid node name")
	}
}

// startServer runs a real API server in this process until the test ends
// and returns an admin client and its config.
func startServer(t *testing.T, ctx context.Context) (*client.Client, client.Config) {
	t.Helper()
	srvCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	ready := make(chan daemon.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(srvCtx, daemon.Options{DataDir: filepath.Join(t.TempDir(), "server"), Listen: "127.0.0.1:0",
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: func(i daemon.Info) { ready <- i }})
	}()
	t.Cleanup(func() { stop(); <-done })
	var info daemon.Info
	select {
	case info = <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("server: %v", err)
	}
	cfg, err := client.LoadConfig(info.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return admin, cfg
}
