package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"skiff.dev/skiff/test/testcluster"
	"skiff.dev/skiff/test/testimage"
)

// TestMain builds the skiff binary, as root only: the tests need root
// and skip without it.
func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	cleanup, err := testcluster.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a lab makes network namespaces, veths and a bridge: needs root (CI runs as root)")
	}
}

// logWriter sends the lab's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func TestLab(t *testing.T) {
	requireRoot(t)
	begin := time.Now()
	_, regErr := exec.LookPath("docker-registry")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Start(ctx, Config{Nodes: 3, Binary: testcluster.Binary, Dir: dir, Registry: regErr == nil, Log: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	t.Logf("lab %s started in %s", l.Prefix, time.Since(begin).Round(time.Millisecond))
	fatalf := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nlogs:\n%s", append(args, l.Logs(20))...)
	}

	// The three agents join and register, with their underlay addresses.
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := l.WaitNodes(wctx, "n1", "n2", "n3"); err != nil {
		fatalf("%v", err)
	}
	t.Logf("3 nodes ready after %s", time.Since(begin).Round(time.Millisecond))
	out, err := l.Skiff("get", "nodes")
	if err != nil {
		fatalf("%v", err)
	}
	for i := 1; i <= 3; i++ {
		n := l.Node(i)
		if !hasRow(out, n.Name, n.Underlay.String()) {
			t.Errorf("skiff get nodes has no row for %s with address %s:\n%s", n.Name, n.Underlay, out)
		}
	}

	// From n1, the other nodes answer on their underlay addresses.
	n1 := l.Node(1)
	for _, n := range []*Node{l.Node(2), l.Node(3)} {
		ln, err := n.Listen("tcp6", net.JoinHostPort(n.Underlay.String(), "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", n.Name, err)
		}
		go func() {
			c, err := ln.Accept()
			if err == nil {
				fmt.Fprintf(c, "this is %s", n.Name)
				c.Close()
			}
		}()
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := n1.Dial(dctx, "tcp6", ln.Addr().String())
		dcancel()
		if err != nil {
			t.Fatalf("n1 dialing %s at %s: %v", n.Name, ln.Addr(), err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		ln.Close()
		if string(b) != "this is "+n.Name {
			t.Errorf("n1 from %s at %s: read %q (%v)", n.Name, ln.Addr(), b, err)
		}
	}

	// The outside serves a page over IPv4 to n1, through n1's default route.
	ln, err := l.Outside.Listen("tcp4", ":8080")
	if err != nil {
		t.Fatalf("listen in the outside: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	page, err := getFrom(ctx, n1, "http://"+net.JoinHostPort(OutsideIPv4.String(), "8080")+"/")
	if want := "hello " + n1.IPv4.String() + ":"; err != nil || !strings.HasPrefix(page, want) {
		t.Errorf("n1 fetching the outside's page: %q, %v; want %q...", page, err, want)
	}

	// Commands run inside a node see its routes.
	if _, err := exec.LookPath("ip"); err == nil {
		r6, err := n1.Run("ip", "-6", "route")
		if err != nil || !strings.Contains(r6, l.Underlay.String()+" dev eth0") {
			t.Errorf("ip -6 route in n1 = %q (%v), want a route to %s on eth0", r6, err, l.Underlay)
		}
		r4, err := n1.Run("ip", "-4", "route")
		if err != nil || !strings.Contains(r4, "default via 192.0.2.1 dev eth0") {
			t.Errorf("ip -4 route in n1 = %q (%v), want the default via 192.0.2.1", r4, err)
		}
	}

	// The registry takes an image and nodes can reach it.
	if l.Registry != "" {
		if _, err := os.Stat(testimage.BusyboxPath); err == nil {
			img, err := testimage.Busybox()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.PushImage("skiff/busybox:1", img); err != nil {
				t.Fatal(err)
			}
		}
		cat, err := getFrom(ctx, l.Node(3), "http://"+l.Registry+"/v2/_catalog")
		if err != nil || !strings.Contains(cat, "repositories") {
			t.Errorf("n3 fetching the registry's catalog: %q, %v", cat, err)
		}
	} else {
		t.Log("no docker-registry: the registry is not tested")
	}

	// A node joining later registers too.
	n4, err := l.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n4.Name != "n4" || n4.Underlay != hostAddr(l.Underlay, 14) || n4.IPv4.String() != "192.0.2.14" {
		t.Errorf("4th node: %s %s %s", n4.Name, n4.Underlay, n4.IPv4)
	}
	wctx4, wcancel4 := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel4()
	if err := l.WaitNodes(wctx4, "n4"); err != nil {
		fatalf("%v", err)
	}

	// Removing a node removes its namespace, veth and agent.
	n2 := l.Node(2)
	agent := n2.agent.pid()
	if err := l.RemoveNode("n2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n2.Path); err == nil {
		t.Errorf("%s left after RemoveNode", n2.Path)
	}
	if _, err := netlink.LinkByName(n2.veth); err == nil {
		t.Errorf("veth %s left after RemoveNode", n2.veth)
	}
	if syscall.Kill(agent, 0) == nil {
		t.Errorf("n2's agent (pid %d) alive after RemoveNode", agent)
	}
	if l.Node(2) != nil || l.NetNSPath("n2") != "" {
		t.Errorf("n2 still listed after RemoveNode")
	}

	// Close leaves nothing behind but the logs.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	for _, left := range leftovers(l.Prefix, dir) {
		t.Errorf("left after Close: %s", left)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "logs" {
		t.Errorf("%s after Close holds %v, want logs alone", dir, ents)
	}
	t.Logf("whole lab test: %s", time.Since(begin).Round(time.Millisecond))
}

// hasRow tells whether a table has a row with all the words.
func hasRow(table string, words ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		ok := len(f) > 0 && f[0] == words[0]
		for _, w := range words[1:] {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return true
		}
	}
	return false
}

// getFrom fetches a URL with connections made inside ns.
func getFrom(ctx context.Context, ns *Node, url string) (string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy:       nil,
		DialContext: ns.Dial,
	}}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), err
}

// leftovers lists what a lab with this prefix and directory left: pinned
// namespaces, links, mounts, processes and its record.
func leftovers(prefix, dir string) []string {
	var out []string
	ents, _ := os.ReadDir(netnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, "namespace "+e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		out = append(out, "cannot list links: "+err.Error())
	}
	for _, lk := range links {
		if strings.HasPrefix(lk.Attrs().Name, prefix) {
			out = append(out, "link "+lk.Attrs().Name)
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.Contains(sc.Text(), prefix) || strings.Contains(sc.Text(), dir+"/") {
				out = append(out, "mount "+sc.Text())
			}
		}
		f.Close()
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if (strings.Contains(cmd, dir+"/") || strings.Contains(cmd, prefix)) && alive(pid, 0) {
			out = append(out, fmt.Sprintf("process %d: %s", pid, cmd))
		}
	}
	if _, err := os.Stat(filepath.Join(RecordDir, prefix)); err == nil {
		out = append(out, "record "+filepath.Join(RecordDir, prefix))
	}
	return out
}

// TestCleanupStale makes part of a lab with the lab's own functions (a
// bridge, a node namespace plugged into it, a process inside, a mount
// under a node's data directory), says its owner is a dead process, and
// checks CleanupStale removes all of it, and leaves a live owner's lab.
func TestCleanupStale(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	l := &Lab{cfg: Config{Dir: dir, Log: logWriter{t}}}
	if err := l.claim(); err != nil {
		t.Fatal(err)
	}
	if err := l.makeDir(); err != nil {
		t.Fatal(err)
	}
	underlay, err := randomUnderlay()
	if err != nil {
		t.Fatal(err)
	}
	l.Underlay, l.BridgeAddr, l.Bridge = underlay, hostAddr(underlay, 1), l.Prefix+"br"
	if err := l.rec.addLink(l.Bridge); err != nil {
		t.Fatal(err)
	}
	if err := makeBridge(l.Bridge, l.BridgeAddr); err != nil {
		t.Fatal(err)
	}
	node := Namespace{Name: l.Prefix + "-n1", Path: netnsPath(l.Prefix + "-n1")}
	err = l.makeHost(node.Name, l.Prefix+"v1", hostSetup{addrs: []netip.Prefix{netip.PrefixFrom(hostAddr(underlay, 11), 64)}})
	if err != nil {
		t.Fatal(err)
	}
	nodeDir := filepath.Join(dir, "nodes", "n1")
	mnt := filepath.Join(nodeDir, "runtime", "pods", "p", "x")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	l.rec.update(func(r *record) { r.NodeDirs = append(r.NodeDirs, nodeDir) })
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	// A process in the node, as a shim would be: not the lab's child
	// process group, no Pdeathsig.
	sleeper := exec.Command("sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := node.Start(sleeper); err != nil {
		t.Fatal(err)
	}
	go sleeper.Wait()
	defer sleeper.Process.Kill()

	// The owner: a process that has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	owner := fmt.Sprintf("%d 1\n", dead.Process.Pid)
	if err := os.WriteFile(filepath.Join(RecordDir, l.Prefix, "owner"), []byte(owner), 0o644); err != nil {
		t.Fatal(err)
	}

	// A lab whose owner lives (this process).
	live := &Lab{}
	if err := live.claim(); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(filepath.Join(RecordDir, live.Prefix))

	if left := leftovers(l.Prefix, dir); len(left) < 4 {
		t.Fatalf("the stale lab is not all there: %q", left)
	}
	if err := CleanupStale(); err != nil {
		t.Fatal(err)
	}
	for _, left := range leftovers(l.Prefix, dir) {
		t.Errorf("left after CleanupStale: %s", left)
	}
	if alive(sleeper.Process.Pid, 0) {
		t.Errorf("the process in the node (pid %d) lives", sleeper.Process.Pid)
	}
	if _, err := os.Stat(nodeDir); err == nil {
		t.Errorf("%s left after CleanupStale", nodeDir)
	}
	if _, err := os.Stat(filepath.Join(RecordDir, live.Prefix, "owner")); err != nil {
		t.Errorf("CleanupStale removed the lab of a live owner: %v", err)
	}
}

// TestFaults: a partitioned node is cut off from the others and the
// server, and back when healed; an agent killed and started again comes
// back with its data directory alone.
func TestFaults(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Start(ctx, Config{Nodes: 2, Binary: testcluster.Binary, Dir: t.TempDir(), Log: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.WaitNodes(ctx, "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	n1, n2 := l.Node(1), l.Node(2)
	reach := func() error {
		ln, err := n2.Listen("tcp6", net.JoinHostPort(n2.Underlay.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		defer dcancel()
		c, err := n1.Dial(dctx, "tcp6", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := reach(); err != nil {
		t.Fatalf("n1 → n2 before the partition: %v", err)
	}
	if err := l.Partition("n2"); err != nil {
		t.Fatal(err)
	}
	if err := reach(); err == nil {
		t.Errorf("n1 reached n2 through a partition")
	}
	if err := l.Heal("n2"); err != nil {
		t.Fatal(err)
	}
	// Neighbour discovery starts over once the link is up: a few tries.
	for i := 0; ; i++ {
		err := reach()
		if err == nil {
			break
		}
		if i == 9 {
			t.Errorf("n1 → n2 after healing, 10 tries: %v", err)
			break
		}
	}

	if err := l.StopAgent("n1", true); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent("n1"); err != nil {
		t.Fatal(err)
	}
	// Back as the same node, from its kept settings: its API comes up again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		c, err := n1.Dial(dctx, "tcp6", net.JoinHostPort(n1.Underlay.String(), strconv.Itoa(AgentPort)))
		dcancel()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1's agent did not serve again after a restart: %v\n%s", err, l.Logs(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
