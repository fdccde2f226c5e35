// Package e2e runs skiff end to end on a real multi-node cluster made of
// network namespaces on this machine (package lab): one server, agents
// each in a namespace of their own acting as a host with its own underlay
// address on a shared bridge, and an "outside" namespace standing in for
// the internet. The tests need root; they skip without it.
package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/lab"
	"skiff.dev/skiff/test/testcluster"
	"skiff.dev/skiff/test/testimage"
)

type (
	clientT     = *client.Client
	clientEvent = client.Event
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test skips
	}
	testcluster.Main(m)
}

// startLab starts a lab of n nodes with a registry, and waits until every
// node's readiness workflow programmed its network.
func startLab(t *testing.T, n int, configure ...func(*lab.Config)) (*lab.Lab, *client.Client) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the e2e tests make network namespaces, veths and a bridge and run agents: they need root (CI runs as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := lab.Config{Nodes: n, Binary: testcluster.Binary, Dir: t.TempDir(), Registry: true, Log: testcluster.LogWriter{T: t}}
	for _, f := range configure {
		f(&cfg)
	}
	l := lab.StartTest(ctx, t, cfg)
	ccfg, err := client.LoadConfig(l.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	for {
		list, err := c.List(ctx, "Node", "", "")
		ready := 0
		var states []string
		if err == nil {
			for _, node := range list.Items {
				if node.Status["network"] == "ready" && str(node.Status["agentURL"]) != "" {
					ready++
				}
				states = append(states, fmt.Sprintf("%s: network %v, agentURL %v", node.Name, node.Status["network"], node.Status["agentURL"]))
			}
		}
		if ready == n {
			return l, c
		}
		if ctx.Err() != nil {
			t.Fatalf("nodes not ready after 2 minutes: %s (%v)\n%s", strings.Join(states, "; "), err, l.Logs(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pushBusybox pushes the test busybox image to the lab's registry and
// returns its reference.
func pushBusybox(t *testing.T, l *lab.Lab) string {
	return testimage.PushBusybox(t, l, "busybox:e2e")
}

func apply(t *testing.T, l *lab.Lab, manifest string) {
	t.Helper()
	if out, err := l.SkiffIn(manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s\n%s", err, out, manifest)
	}
}

func waitPod(t *testing.T, c *client.Client, ctx context.Context, name, what string, cond func(api.Object) bool) api.Object {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		p, err := c.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err == nil && cond(p) {
			return p
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			runs, _ := c.Runs(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
			var why []string
			for _, r := range runs {
				for _, s := range r.Steps {
					if s.Reason != "" {
						why = append(why, fmt.Sprintf("gen %d %s %s: %s", r.Generation, s.Name, s.State, s.Reason))
					}
				}
			}
			t.Fatalf("pod %s not %s after 90 s: status %v (%v)\nruns: %s", name, what, p.Status, err, strings.Join(why, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitGone(t *testing.T, c *client.Client, ctx context.Context, name string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, err := c.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err != nil && strings.Contains(err.Error(), "not found") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still there 90 s after its deletion (%v)", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func running(p api.Object) bool { return p.Status["phase"] == "Running" }

// restarts is the restart count of a pod's first container.
func restarts(p api.Object) int {
	cs, _ := p.Status["containers"].([]any)
	if len(cs) == 0 {
		return -1
	}
	c, _ := cs[0].(map[string]any)
	n, _ := c["restarts"].(float64)
	return int(n)
}

// nodeMemory is the smallest memory capacity of the nodes.
func nodeMemory(t *testing.T, c *client.Client, ctx context.Context) int64 {
	list, err := c.List(ctx, "Node", "", "")
	if err != nil {
		t.Fatal(err)
	}
	var least int64
	for _, n := range list.Items {
		capacity, _ := n.Status["capacity"].(map[string]any)
		m, _ := capacity["memoryBytes"].(float64)
		if least == 0 || int64(m) < least {
			least = int64(m)
		}
	}
	return least
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func listDir(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
