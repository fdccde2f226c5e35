// Package ha tests skiff's highly available control plane end to end: a
// lab of three servers, each in its own network namespace with its
// embedded etcd member, and two nodes, with servers killed and cut off
// while clients write.
package ha

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/lab"
	"skiff.dev/skiff/test/testcluster"
	"skiff.dev/skiff/test/testimage"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test skips
	}
	testcluster.Main(m)
}

// startHA starts a lab of three servers and two nodes with a registry,
// waits until both nodes are ready, and returns it with an admin client
// of all three servers.
func startHA(t *testing.T) (*lab.Lab, *client.Client) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the HA tests make network namespaces, veths and a bridge and run servers and agents: they need root (CI runs as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := lab.StartTest(ctx, t, lab.Config{Servers: 3, Nodes: 2, Binary: testcluster.Binary, Dir: t.TempDir(), Registry: true, Log: testcluster.LogWriter{T: t}})
	c := labClient(t, l, l.URLs()...)
	if err := l.WaitNodes(ctx); err != nil {
		t.Fatalf("%v\n%s", err, l.Logs(30))
	}
	return l, c
}

// labClient is an admin client of the given servers.
func labClient(t *testing.T, l *lab.Lab, urls ...string) *client.Client {
	t.Helper()
	cfg, err := client.LoadConfig(l.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Servers = urls
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pushBusybox pushes the test busybox image to the lab's registry and
// returns its reference.
func pushBusybox(t *testing.T, l *lab.Lab) string {
	return testimage.PushBusybox(t, l, "busybox:ha")
}

// pod is a pod running busybox's sleep, with env GEN set to gen: a new
// gen is a new generation, and a new run.
func pod(name, image string, gen int, labels map[string]string) api.Object {
	return api.Object{Kind: "Pod", Namespace: "default", Name: name, Labels: labels, Spec: map[string]any{
		"containers": []any{map[string]any{
			"name": "main", "image": image, "command": []any{"sleep", "3600"},
			"env":       map[string]any{"GEN": fmt.Sprint(gen)},
			"resources": map[string]any{"memory": "16Mi"},
		}},
	}}
}

// waitFor polls cond every 100 ms until it returns nil or the deadline
// passes, and fails the test with cond's last error then.
func waitFor(t *testing.T, ctx context.Context, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not after %s: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
