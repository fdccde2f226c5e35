package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/lab"
)

// TestPodNetwork runs the whole story on a three-node cluster of
// network namespaces: pods on three nodes reach each other over IPv6 by
// plain routing (ping, and wget against httpd), reach the outside over
// IPv4, keep their address across an in-place restart, and leave nothing
// behind on any node once deleted.
func TestPodNetwork(t *testing.T) {
	l, c := startLab(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	image := pushBusybox(t, l)

	// What each node has before any pod: the state to come back to.
	before := map[string]nodeNet{}
	for _, n := range l.Nodes() {
		before[n.Name] = readNodeNet(t, n)
	}

	// One web pod per node: each asks for a third of a node's memory, so
	// the scheduler (most free memory first) spreads them.
	grantPing(t, l)
	mem := nodeMemory(t, c, ctx) / 3
	names := []string{"web1", "web2", "web3"}
	for _, name := range names {
		apply(t, l, webPod(name, image, mem, "one"))
		waitPod(t, c, ctx, name, "scheduled", func(p api.Object) bool { return str(p.Status["node"]) != "" })
	}
	pods := map[string]api.Object{}
	nodes := map[string]bool{}
	for _, name := range names {
		p := waitPod(t, c, ctx, name, "running", running)
		pods[name] = p
		nodes[str(p.Status["node"])] = true
		ip, err := netip.ParseAddr(str(p.Status["ip"]))
		if err != nil || !ip.Is6() {
			t.Fatalf("pod %s has status.ip %q, want an IPv6 address", name, p.Status["ip"])
		}
	}
	if len(nodes) != 3 {
		t.Fatalf("the three pods run on nodes %v, want three different ones", keys(nodes))
	}
	for _, name := range names {
		p := pods[name]
		n, _ := c.Get(ctx, api.Ref{Kind: "Node", Name: str(p.Status["node"])})
		prefix := netip.MustParsePrefix(str(n.Status["podPrefix"]))
		if !prefix.Contains(netip.MustParseAddr(str(p.Status["ip"]))) {
			t.Errorf("pod %s's address %s is not in its node %s's prefix %s", name, p.Status["ip"], n.Name, prefix)
		}
	}

	// Every pod pings and fetches a page from every other, over IPv6,
	// across nodes.
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			ip := str(pods[to].Status["ip"])
			if out, err := l.Skiff("exec", from, "--", "ping", "-6", "-c", "1", "-W", "5", ip); err != nil {
				t.Errorf("%s pinging %s (%s, on %s): %v\n%s", from, to, ip, pods[to].Status["node"], err, out)
			}
			out, err := l.Skiff("exec", from, "--", "timeout", "5", "wget", "-q", "-O", "-", "http://["+ip+"]:8080/")
			if want := "this is " + to + " (one)"; err != nil || strings.TrimSpace(out) != want {
				t.Errorf("%s fetching %s's page at [%s]:8080: %q, %v; want %q", from, to, ip, out, err, want)
			}
		}
	}

	// A pod reaches the outside over IPv4, masqueraded: the outside sees
	// the node's own address, not the pod's.
	ln, err := l.Outside.Listen("tcp4", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "you are %s", host)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	for _, name := range names {
		node := l.NodeByName(str(pods[name].Status["node"]))
		out, err := l.Skiff("exec", name, "--", "timeout", "5", "wget", "-q", "-O", "-", "http://"+lab.OutsideIPv4.String()+":8080/")
		if want := "you are " + node.IPv4.String(); err != nil || strings.TrimSpace(out) != want {
			t.Errorf("%s fetching from the outside: %q, %v; want %q", name, out, err, want)
		}
	}

	// An in-place restart (a new env value) keeps the address.
	apply(t, l, webPod("web1", image, mem, "two"))
	p := waitPod(t, c, ctx, "web1", "restarted with generation 2", func(p api.Object) bool {
		return p.Meta.Generation == 2 && running(p) && restarts(p) == 1
	})
	if p.Status["ip"] != pods["web1"].Status["ip"] || p.Status["node"] != pods["web1"].Status["node"] {
		t.Errorf("after an in-place restart web1 has %v on %v, want %v on %v", p.Status["ip"], p.Status["node"],
			pods["web1"].Status["ip"], pods["web1"].Status["node"])
	}
	if out, err := l.Skiff("exec", "web2", "--", "timeout", "5", "wget", "-q", "-O", "-", "http://["+str(p.Status["ip"])+"]:8080/"); err != nil || strings.TrimSpace(out) != "this is web1 (two)" {
		t.Errorf("web2 fetching web1 after its restart: %q, %v", out, err)
	}

	// Delete them all: every node is back to what it had before.
	for _, name := range names {
		if out, err := l.Skiff("delete", "pod/"+name); err != nil {
			t.Fatalf("delete %s: %v\n%s", name, err, out)
		}
	}
	for _, name := range names {
		waitGone(t, c, ctx, name)
	}
	for _, n := range l.Nodes() {
		after := readNodeNet(t, n)
		if d := after.diff(before[n.Name]); d != "" {
			t.Errorf("node %s after deleting its pods is not as before them:\n%s", n.Name, d)
		}
		if left := listDir(n.Dir + "/runtime/pods"); len(left) > 0 {
			t.Errorf("node %s still has pod namespaces: %v", n.Name, left)
		}
	}
}

// TestNodesJoinAndLeave: a node joining later gets routes to and from
// every node within 2 s of registering; a forgotten node's routes go.
func TestNodesJoinAndLeave(t *testing.T) {
	l, c := startLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Watch for the new node's Node object, to time from its creation.
	created := make(chan time.Time, 1)
	list, err := c.List(ctx, "Node", "", "")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go c.Watch(wctx, "Node", "", list.Revision, func(ev clientEvent) error {
		if ev.Type == "created" && ev.Object.Name == "n3" {
			created <- time.Now()
		}
		return nil
	})
	n3, err := l.AddNode(ctx)
	if err != nil {
		t.Fatalf("add a node: %v\n%s", err, l.Logs(20))
	}
	var joined time.Time
	select {
	case joined = <-created:
	case <-ctx.Done():
		t.Fatalf("n3 never registered\n%s", l.Logs(30))
	}
	// Routes both ways: n1 and n2 route to n3's /64 via n3; n3 to theirs.
	var prefixes map[string]netip.Prefix
	deadline := time.Now().Add(30 * time.Second)
	var missing []string
	var done time.Time
	for time.Now().Before(deadline) {
		prefixes = podPrefixes(t, c, ctx)
		missing = missingRoutes(t, l, prefixes)
		if len(missing) == 0 && len(prefixes) == 3 {
			done = time.Now()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if done.IsZero() {
		t.Fatalf("after 30 s routes are still missing:\n%s\n%s", strings.Join(missing, "\n"), l.Logs(30))
	}
	took := done.Sub(joined)
	t.Logf("n3 registered; routes to and from it on every node %s later", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("routes to and from a new node took %s, want at most 2 s", took)
	}

	// Forget n3: the others drop their route to it.
	if err := l.RemoveNode(n3.Name); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Skiff("node", "forget", n3.Name); err != nil {
		t.Fatalf("node forget: %v\n%s", err, out)
	}
	gone := prefixes[n3.Name]
	deadline = time.Now().Add(10 * time.Second)
	for {
		var still []string
		for _, n := range l.Nodes() {
			if routeOut := ipRoutes(t, n); strings.Contains(routeOut, gone.String()) {
				still = append(still, n.Name+": "+routeOut)
			}
		}
		if len(still) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after n3 was forgotten, its prefix %s is still routed:\n%s", gone, strings.Join(still, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// missingRoutes lists, per node, the routes to other nodes' prefixes it
// lacks.
func missingRoutes(t *testing.T, l *lab.Lab, prefixes map[string]netip.Prefix) []string {
	var missing []string
	for _, n := range l.Nodes() {
		routes := ipRoutes(t, n)
		for other, p := range prefixes {
			via := l.NodeByName(other)
			if other == n.Name || via == nil {
				continue
			}
			want := p.String() + " via " + via.Underlay.String()
			if !strings.Contains(routes, want) {
				missing = append(missing, n.Name+" lacks "+want)
			}
		}
	}
	sort.Strings(missing)
	return missing
}

// ipRoutes is `ip -6 route show proto 0x5c` inside a node.
func ipRoutes(t *testing.T, n *lab.Node) string {
	out, err := n.Run("ip", "-6", "route", "show", "proto", "0x5c")
	if err != nil {
		t.Fatalf("ip -6 route in %s: %v\n%s", n.Name, err, out)
	}
	return out
}

func podPrefixes(t *testing.T, c clientT, ctx context.Context) map[string]netip.Prefix {
	list, err := c.List(ctx, "Node", "", "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]netip.Prefix{}
	for _, n := range list.Items {
		if p, err := netip.ParsePrefix(str(n.Status["podPrefix"])); err == nil {
			out[n.Name] = p
		}
	}
	return out
}

// nodeNet is what pod networking leaves on a node: skiff's links, routes
// and nftables ruleset, and the network namespaces the node's processes
// can name.
type nodeNet struct {
	links, routes, nft string
}

func readNodeNet(t *testing.T, n *lab.Node) nodeNet {
	t.Helper()
	run := func(args ...string) string {
		out, err := n.Run(args[0], args[1:]...)
		if err != nil {
			t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), n.Name, err, out)
		}
		return out
	}
	var links []string
	for _, line := range strings.Split(run("ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			links = append(links, strings.TrimSuffix(f[1], ":"))
		}
	}
	sort.Strings(links)
	routes := run("ip", "-6", "route", "show", "proto", "0x5c") + run("ip", "-4", "route", "show", "proto", "0x5c")
	// Only pod routes come and go with pods: a node's routes to other
	// nodes stay.
	var podRoutes []string
	for _, line := range strings.Split(routes, "\n") {
		if strings.Contains(line, " dev skv") || strings.HasPrefix(line, "10.127.") {
			podRoutes = append(podRoutes, line)
		}
	}
	nft := ""
	if _, err := exec.LookPath("nft"); err == nil {
		nft = run("nft", "list", "ruleset")
	}
	return nodeNet{links: strings.Join(links, " "), routes: strings.Join(podRoutes, "\n"), nft: nft}
}

func (a nodeNet) diff(b nodeNet) string {
	var d []string
	if a.links != b.links {
		d = append(d, fmt.Sprintf("links: %s\n   was: %s", a.links, b.links))
	}
	if a.routes != b.routes {
		d = append(d, fmt.Sprintf("pod routes:\n%s\n   were:\n%s", a.routes, b.routes))
	}
	if a.nft != b.nft {
		d = append(d, fmt.Sprintf("nft ruleset:\n%s\n   was:\n%s", a.nft, b.nft))
	}
	return strings.Join(d, "\n")
}

// grantPing grants the web pods NET_RAW: Debian's busybox 1.35 ping needs
// a raw socket (it has no ICMP datagram socket fallback).
func grantPing(t *testing.T, l *lab.Lab) {
	apply(t, l, "kind: Grant\nname: ping\nspec:\n  namespaces: [default]\n  privileges: [\"capability:NET_RAW\"]\n")
}

func webPod(name, image string, mem int64, greeting string) string {
	return fmt.Sprintf(`kind: Pod
name: %s
spec:
  containers:
    - name: web
      image: %q
      env: {GREETING: %s}
      command: [sh, -c, 'echo "this is %s ($GREETING)" > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']
      resources: {memory: %dMi}
  privileges: ["capability:NET_RAW"]
`, name, image, greeting, name, mem>>20)
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestAgentRestartLeavesNothing: a pod deleted while its node's agent is
// down is stopped, and its network removed, when the agent comes back;
// the node is then as it was before the pod.
func TestAgentRestartLeavesNothing(t *testing.T) {
	l, c := startLab(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	image := pushBusybox(t, l)
	n1 := l.Node(1)
	before := readNodeNet(t, n1)

	grantPing(t, l)
	apply(t, l, webPod("lone", image, 64<<20, "one"))
	p := waitPod(t, c, ctx, "lone", "running", running)
	if str(p.Status["node"]) != n1.Name {
		t.Fatalf("pod on %v, want %s", p.Status["node"], n1.Name)
	}
	if after := readNodeNet(t, n1); after.diff(before) == "" {
		t.Fatalf("a running pod changed nothing on the node (no veth, no route?)")
	}

	if err := l.StopAgent(n1.Name, true); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Skiff("delete", "pod/lone", "--wait", "0"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	// While the agent is away, the pod waits on its node to stop it.
	time.Sleep(time.Second)
	if _, err := c.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: "lone"}); err != nil {
		t.Fatalf("the pod went without its node stopping it: %v", err)
	}
	if err := l.StartAgent(n1.Name); err != nil {
		t.Fatal(err)
	}
	waitGone(t, c, ctx, "lone")
	if d := readNodeNet(t, n1).diff(before); d != "" {
		t.Errorf("after the agent came back and removed the pod, the node is not as before it:\n%s", d)
	}
	if left := listDir(n1.Dir + "/runtime/pods"); len(left) > 0 {
		t.Errorf("pod namespaces left: %v", left)
	}
}
