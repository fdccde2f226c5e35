package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/lab"
	"skiff.dev/skiff/server"
	"skiff.dev/skiff/workflow"
)

// The partition test's lease: one second, so that an hour at the default
// lease (90 leases) passes in 90 seconds. The margin leaves a fenced
// container 1.5 s to stop.
const (
	testLease  = time.Second
	testMargin = 3 * time.Second
)

// TestPartitionFailover cuts one node off for as many leases as an hour
// has at the default lease. Its failover:fast pod is fenced by its agent
// and comes back on another node, with never two copies running (every
// node's runc is sampled throughout); its failover:manual pod stays and
// keeps serving on the node. Healed, with no operator action, the node is
// ready again, its stale fast copy is gone, and there is exactly one copy
// of each pod.
func TestPartitionFailover(t *testing.T) {
	l, c := startLab(t, 3, func(cfg *lab.Config) { cfg.NodeLease, cfg.FailoverMargin = testLease, testMargin })
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	image := pushBusybox(t, l)
	n1 := l.Node(1)

	// Both pods land on n1: the other nodes are cordoned meanwhile.
	for _, n := range []string{"n2", "n3"} {
		skiff(t, l, "node", "cordon", n)
	}
	apply(t, l, failoverPod("fast", image, api.FailoverFast))
	apply(t, l, failoverPod("pet", image, api.FailoverManual))
	for _, name := range []string{"fast", "pet"} {
		if p := waitPod(t, c, ctx, name, "running", running); str(p.Status["node"]) != n1.Name {
			t.Fatalf("pod %s on %v, want %s", name, p.Status["node"], n1.Name)
		}
	}
	for _, n := range []string{"n2", "n3"} {
		skiff(t, l, "node", "uncordon", n)
	}
	pet := waitPod(t, c, ctx, "pet", "running", running)
	petIP := str(pet.Status["ip"])
	if got := fetch(ctx, n1, petIP); got != "this is pet" {
		t.Fatalf("pet from its node before the partition: %q", got)
	}
	petCopy := copiesOf(t, l, "pet")[n1.Name]

	s := startSampler(t, l, "fast", "pet")
	if err := l.Partition(n1.Name); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	healed := false
	defer func() {
		if !healed {
			l.Heal(n1.Name)
		}
	}()

	moved := waitPod(t, c, ctx, "fast", "running on another node", func(p api.Object) bool {
		return running(p) && str(p.Status["node"]) != n1.Name
	})
	t.Logf("fast pod running on %s %.1fs after the partition", moved.Status["node"], time.Since(cut).Seconds())
	if out := skiff(t, l, "get", "nodes"); !strings.Contains(lineOf(out, n1.Name), "unreachable") {
		t.Errorf("skiff get nodes during the partition does not show %s unreachable:\n%s", n1.Name, out)
	}
	ev, _ := moved.Status["evicted"].(map[string]any)
	if str(ev["node"]) != n1.Name {
		t.Errorf("fast pod's status.evicted = %v, want node %s", ev, n1.Name)
	}
	// The run that moved it says why, and its start step began after the
	// last moment n1's copy was seen running.
	runs, err := c.Runs(ctx, moved.Ref())
	if err != nil || len(runs) == 0 {
		t.Fatalf("runs of the fast pod: %v", err)
	}
	var moveRun workflow.RunRecord
	for _, r := range runs {
		if strings.HasPrefix(r.Cause, "evicted: node "+n1.Name+" unreachable") {
			moveRun = r
			break
		}
	}
	if moveRun.ID == "" {
		t.Fatalf("no run of the fast pod caused by the eviction: %+v", runs)
	}
	lastOld := s.lastSeen("fast", n1.Name)
	for _, st := range moveRun.Steps {
		if st.Name == "start" && (st.Started == nil || !st.Started.After(lastOld)) {
			t.Errorf("the new copy's start step began at %v, before n1's copy was last seen running (%v)", st.Started, lastOld)
		}
	}

	// The manual pod stays, and serves, all along.
	if p, _ := c.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: "pet"}); str(p.Status["node"]) != n1.Name {
		t.Errorf("failover:manual pod moved to %v during the partition", p.Status["node"])
	}
	if got := fetch(ctx, n1, petIP); got != "this is pet" {
		t.Errorf("pet from its node during the partition: %q", got)
	}

	// An hour at the default lease.
	down := time.Hour / time.Duration(server.DefaultNodeLease/testLease)
	time.Sleep(time.Until(cut.Add(down)))
	if got := fetch(ctx, n1, petIP); got != "this is pet" {
		t.Errorf("pet from its node after %v cut off: %q", down, got)
	}
	if err := l.Heal(n1.Name); err != nil {
		t.Fatal(err)
	}
	healed = true
	t.Logf("healed after %v", time.Since(cut).Round(time.Second))

	// No operator action: the node is ready, the stale copy goes.
	deadline := time.Now().Add(time.Minute)
	for {
		fast, pets := copiesOf(t, l, "fast"), copiesOf(t, l, "pet")
		out, _ := l.Skiff("get", "nodes")
		line := lineOf(out, n1.Name)
		if len(fast) == 1 && fast[n1.Name] == "" && len(pets) == 1 && pets[n1.Name] != "" && strings.Contains(line, " ready ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after healing: fast copies %v, pet copies %v, node line %q", fast, pets, line)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// It stays so, and the pet never restarted.
	time.Sleep(3 * testLease)
	if fast, pets := copiesOf(t, l, "fast"), copiesOf(t, l, "pet"); len(fast) != 1 || len(pets) != 1 || pets[n1.Name] != petCopy {
		t.Errorf("after healing: fast copies %v, pet copies %v (pet was %s on %s)", fast, pets, petCopy, n1.Name)
	}
	if p, _ := c.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: "fast"}); !running(p) || str(p.Status["node"]) == n1.Name {
		t.Errorf("fast pod after healing: %v on %v", p.Status["phase"], p.Status["node"])
	}
	s.stop()
	for _, pod := range []string{"fast", "pet"} {
		if max, at := s.maxCopies(pod); max > 1 {
			t.Errorf("%d copies of %s ran at once at %s", max, pod, at)
		}
	}
	t.Logf("%d samples of every node's containers", s.count())
}

func failoverPod(name, image, failover string) string {
	return fmt.Sprintf(`kind: Pod
name: %s
spec:
  failover: %s
  containers:
    - name: web
      image: %q
      command: [sh, -c, 'echo "this is %s" > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']
      resources: {memory: 32Mi}
`, name, failover, image, name)
}

func skiff(t *testing.T, l *lab.Lab, args ...string) string {
	t.Helper()
	out, err := l.Skiff(args...)
	if err != nil {
		t.Fatalf("skiff %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// lineOf returns the table line of a name.
func lineOf(table, name string) string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return line
		}
	}
	return ""
}

// fetch gets a pod's page from inside a node's network namespace.
func fetch(ctx context.Context, n *lab.Node, ip string) string {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return n.Dial(ctx, network, addr) },
	}}
	resp, err := hc.Get("http://" + net.JoinHostPort(ip, "8080") + "/")
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// copiesOf returns, by node, the ID and creation time of the pod's running
// container there, as that node's runc shows it.
func copiesOf(t *testing.T, l *lab.Lab, pod string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range l.Nodes() {
		for _, c := range runcList(n) {
			if c.runs(pod) {
				out[n.Name] = c.ID + "@" + c.Created
			}
		}
	}
	return out
}

// runs reports whether c is a running container of the pod (namespace
// default).
func (c runcContainer) runs(pod string) bool {
	return c.Status == "running" && strings.HasPrefix(c.ID, "default_"+pod+"_")
}

type runcContainer struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Created string `json:"created"`
}

func runcList(n *lab.Node) []runcContainer {
	b, err := exec.Command("runc", "--root", filepath.Join(n.Dir, "runtime", "runc"), "list", "-f", "json").Output()
	if err != nil {
		return nil
	}
	var list []runcContainer
	json.Unmarshal(b, &list)
	return list
}

// sampler records, every 100 ms, which nodes run a copy of each pod.
type sampler struct {
	mu      sync.Mutex
	samples []sample
	done    chan struct{}
	wg      sync.WaitGroup
}

type sample struct {
	at     time.Time
	copies map[string][]string // pod → nodes running it
}

func startSampler(t *testing.T, l *lab.Lab, pods ...string) *sampler {
	s := &sampler{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			smp := sample{copies: map[string][]string{}}
			for _, n := range l.Nodes() {
				for _, c := range runcList(n) {
					for _, p := range pods {
						if c.runs(p) {
							smp.copies[p] = append(smp.copies[p], n.Name)
						}
					}
				}
			}
			smp.at = time.Now() // after the lists: a copy seen was running until at least then
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
			select {
			case <-s.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *sampler) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
}

func (s *sampler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.samples)
}

// maxCopies returns the most copies of pod seen at once, and when.
func (s *sampler) maxCopies(pod string) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	most, at := 0, ""
	for _, smp := range s.samples {
		if n := len(smp.copies[pod]); n > most {
			most, at = n, fmt.Sprintf("%s on %v", smp.at.Format(time.RFC3339Nano), smp.copies[pod])
		}
	}
	return most, at
}

// lastSeen returns when pod was last seen running on node.
func (s *sampler) lastSeen(pod, node string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, smp := range s.samples {
		for _, n := range smp.copies[pod] {
			if n == node {
				last = smp.at
			}
		}
	}
	return last
}
