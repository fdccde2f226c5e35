package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Config says what lab to build. Zero values are the defaults stated.
type Config struct {
	// Nodes is how many nodes Start makes (n1..nN); AddNode adds more.
	// Default none.
	Nodes int
	// Servers is how many skiff servers the lab runs. 0 or 1: one, in the
	// root namespace on the bridge. 3 or 5 (at most MaxServers): an HA
	// control plane, each server in a namespace of its own (s1, s2, ...)
	// with its embedded etcd member, the members forming one cluster
	// over the bridge; see the package doc.
	Servers int
	// Binary is the skiff binary to run: server, agents and CLI.
	// Required.
	Binary string
	// Dir holds the lab's data and logs. It is made if missing and must
	// hold nothing but a logs directory (a previous lab's, replaced).
	// Close removes what the lab put there but keeps Dir/logs. Default: a
	// new temporary directory, removed whole by Close.
	Dir string
	// PodPrefix, when set, is passed to the server as --pod-prefix.
	PodPrefix string
	// NodeLease and FailoverMargin, when set, are passed to the server
	// (--node-lease, --failover-margin); agents learn the lease from it.
	NodeLease, FailoverMargin time.Duration
	// Registry runs Debian's docker-registry on the bridge for the
	// agents (Lab.Registry, Lab.PushImage).
	Registry bool
	// Log receives one line per thing made; default nowhere.
	Log io.Writer
}

// Lab is a running multi-node cluster of network namespaces; see the
// package doc for its addresses and lifecycle. Its methods may be called
// from several goroutines.
type Lab struct {
	// Prefix names everything the lab makes ("sk1a2b").
	Prefix string
	// Dir is the lab's directory; logs are in Dir/logs.
	Dir string
	// Bridge is the bridge's name; BridgeAddr its address (::1 of
	// Underlay), where the registry listens, and the server of a
	// one-server lab.
	Bridge     string
	Underlay   netip.Prefix
	BridgeAddr netip.Addr
	// URL is the first API server's, https://[BridgeAddr]:PORT in a
	// one-server lab; URLs lists them all.
	URL string
	// ConfigPath is the admin client config (Dir/config): use it with
	// SKIFF_CONFIG or --config.
	ConfigPath string
	// Registry is the image registry's HOST:PORT ("[fd..::1]:PORT"),
	// reached over plain HTTP; "" without Config.Registry.
	Registry string
	// Outside is the IPv4-only namespace standing in for the internet,
	// at OutsideIPv4; every node's default IPv4 gateway.
	Outside Namespace

	cfg     Config
	binary  string
	env     []string
	rec     *record
	servers []*Server // set by Start, fixed after

	adding sync.WaitGroup // AddNode calls under way; Close waits for them

	mu       sync.Mutex // guards the fields below
	nodes    []*Node    // running nodes, by number
	removed  []*Node    // their logs stay readable
	next     int        // number of the last node made
	registry *proc
	closed   bool
}

// Node is one node of the lab: a network namespace with its agent.
type Node struct {
	// Name is the node's name in the cluster (n1, n2, ...).
	Name string
	// Namespace is the node's network namespace (Namespace.Name is
	// "sk1a2b-n1", Path "/run/netns/sk1a2b-n1"). Its methods (Run, Exec,
	// Start, Listen, Dial, Do) run things on the node.
	Namespace
	// Underlay is the node's IPv6 address on the bridge, given to its
	// agent with --address; its agent API is at [Underlay]:AgentPort.
	Underlay netip.Addr
	// IPv4 is its address towards the outside.
	IPv4 netip.Addr
	// Dir is the agent's data directory; Log its log file.
	Dir string
	Log string

	veth  string
	agent *proc
}

// Start builds a lab: bridge, outside namespace, registry (if asked),
// server and cfg.Nodes nodes whose agents have been started (they
// register with the server moments later: see WaitNodes). It first
// removes stale labs (CleanupStale). On failure everything made so far is
// removed and the error carries the tails of the logs.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root (it makes network namespaces, veths and a bridge)")
	}
	if cfg.Binary == "" {
		return nil, errors.New("lab: Config.Binary (the skiff binary) is required")
	}
	bin, err := filepath.Abs(cfg.Binary)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("lab: skiff binary: %w", err)
	}
	if cfg.Nodes < 0 || cfg.Nodes > MaxNodes {
		return nil, fmt.Errorf("lab: %d nodes: want 0 to %d", cfg.Nodes, MaxNodes)
	}
	if cfg.Servers < 0 || cfg.Servers > MaxServers {
		return nil, fmt.Errorf("lab: %d servers: want 1 to %d (3 or 5 for an HA control plane)", cfg.Servers, MaxServers)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Registry {
		if _, err := exec.LookPath("docker-registry"); err != nil {
			return nil, errors.New("lab: Config.Registry needs docker-registry (Debian's docker-registry; scripts/install-deps.sh installs it)")
		}
	}
	if err := CleanupStale(); err != nil {
		fmt.Fprintf(cfg.Log, "lab: cleaning up stale labs: %v\n", err)
	}
	l := &Lab{cfg: cfg, binary: bin}
	if err := l.claim(); err != nil {
		return nil, err
	}
	if err := l.build(ctx); err != nil {
		if tails := l.Logs(30); tails != "" {
			err = fmt.Errorf("%w\n%s", err, tails)
		}
		l.Close()
		return nil, err
	}
	return l, nil
}

// claim picks an unused prefix and records the lab under it.
func (l *Lab) claim() error {
	for range 32 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		prefix := "sk" + hex.EncodeToString(b[:])
		if _, err := os.Stat(netnsPath(prefix + "-out")); err == nil {
			continue
		}
		if _, err := net.InterfaceByName(prefix + "br"); err == nil {
			continue
		}
		rec, err := claimRecord(prefix)
		if errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("lab: record in %s: %w", RecordDir, err)
		}
		l.Prefix, l.rec = prefix, rec
		return nil
	}
	return errors.New("lab: no free prefix")
}

func (l *Lab) logf(format string, args ...any) {
	fmt.Fprintf(l.cfg.Log, "lab %s: %s\n", l.Prefix, fmt.Sprintf(format, args...))
}

func (l *Lab) build(ctx context.Context) error {
	if err := l.makeDir(); err != nil {
		return err
	}
	l.ConfigPath = filepath.Join(l.Dir, "config")
	l.env = labEnv(l.ConfigPath)

	// The underlay: the bridge, and the outside on it.
	var err error
	if l.Underlay, err = randomUnderlay(); err != nil {
		return err
	}
	l.BridgeAddr = hostAddr(l.Underlay, 1)
	l.Bridge = l.Prefix + "br"
	if err := l.rec.addLink(l.Bridge); err != nil {
		return err
	}
	if err := makeBridge(l.Bridge, l.BridgeAddr); err != nil {
		return err
	}
	l.logf("bridge %s, %s/64", l.Bridge, l.BridgeAddr)
	l.Outside = Namespace{Name: l.Prefix + "-out", Path: netnsPath(l.Prefix + "-out")}
	err = l.makeHost(l.Outside.Name, l.Prefix+"vo", hostSetup{
		sysctls: [][2]string{{"net/ipv6/conf/all/disable_ipv6", "1"}, {"net/ipv6/conf/default/disable_ipv6", "1"}},
		addrs:   []netip.Prefix{netip.PrefixFrom(OutsideIPv4, ipv4Net.Bits())},
	})
	if err != nil {
		return err
	}
	l.logf("outside: namespace %s, %s/24", l.Outside.Name, OutsideIPv4)

	if l.cfg.Registry {
		if err := l.startRegistry(ctx); err != nil {
			return err
		}
		l.logf("registry %s", l.Registry)
	}
	if err := l.startServers(ctx); err != nil {
		return err
	}
	for _, srv := range l.servers {
		where := "root namespace"
		if srv.Namespace.Name != "" {
			where = "namespace " + srv.Namespace.Name
		}
		l.logf("server %s %s, %s", srv.Name, srv.URL, where)
	}
	l.logf("client config %s", l.ConfigPath)
	for range l.cfg.Nodes {
		if _, err := l.AddNode(ctx); err != nil {
			return err
		}
	}
	return nil
}

// makeDir makes the lab's directory and records what will be removed.
func (l *Lab) makeDir() error {
	owns := l.cfg.Dir == ""
	dir := l.cfg.Dir
	if owns {
		d, err := os.MkdirTemp("", "skiff-lab-"+l.Prefix+"-")
		if err != nil {
			return err
		}
		dir = d
	} else {
		d, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		dir = d
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Name() != "logs" {
				return fmt.Errorf("lab: %s is not empty (%s): give an empty or new directory", dir, e.Name())
			}
		}
	}
	l.Dir = dir
	made := []string{"server", "servers", "pki", "nodes", "registry", "config"}
	for i, m := range made {
		made[i] = filepath.Join(dir, m)
	}
	if err := l.rec.update(func(r *record) { r.Dir, r.OwnsDir, r.Made = dir, owns, made }); err != nil {
		return err
	}
	for _, d := range []string{"logs", "nodes"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// labEnv is the environment of the lab's processes and CLI: the lab's
// client config, and no proxy (nodes have no internet to proxy to, and a
// proxy would take the registry's traffic).
func labEnv(config string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "SKIFF_CONFIG", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "SKIFF_CONFIG="+config)
}

// makeHost makes a namespace and plugs it into the bridge.
func (l *Lab) makeHost(ns, veth string, s hostSetup) error {
	if err := l.rec.addNamespace(ns); err != nil {
		return err
	}
	path, err := createNetNS(ns)
	if err != nil {
		return err
	}
	if err := l.rec.addLink(veth); err != nil {
		return err
	}
	return plugHost(path, veth, l.Bridge, s)
}

func (l *Lab) logPath(name string) string { return filepath.Join(l.Dir, "logs", name+".log") }

// AddNode makes the next node (n1, n2, ...; numbers are not reused):
// its namespace and veth, a node token, and its agent, started and
// joining. It returns before the node has registered: see WaitNodes.
func (l *Lab) AddNode(ctx context.Context) (*Node, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab: closed")
	}
	l.next++
	i := l.next
	l.adding.Add(1)
	l.mu.Unlock()
	defer l.adding.Done()
	if i > MaxNodes {
		return nil, fmt.Errorf("lab: node %d: at most %d nodes per lab", i, MaxNodes)
	}
	n := &Node{
		Name:      fmt.Sprintf("n%d", i),
		Namespace: Namespace{Name: fmt.Sprintf("%s-n%d", l.Prefix, i), Path: netnsPath(fmt.Sprintf("%s-n%d", l.Prefix, i))},
		Underlay:  hostAddr(l.Underlay, 10+i),
		IPv4:      nodeIPv4(i),
		Dir:       filepath.Join(l.Dir, "nodes", fmt.Sprintf("n%d", i)),
		veth:      fmt.Sprintf("%sv%d", l.Prefix, i),
	}
	n.Log = l.logPath(n.Name)
	if err := l.startNode(ctx, n); err != nil {
		err = fmt.Errorf("lab: node %s: %w", n.Name, err)
		if t := tail(n.Log, 30); t != "" {
			err = fmt.Errorf("%w\n--- %s ---\n%s", err, n.Log, t)
		}
		l.teardownNode(n)
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nodes = append(l.nodes, n) // if Close is waiting for us, it stops it
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	l.logf("node %s: namespace %s, underlay %s, %s, agent API :%d", n.Name, n.Namespace.Name, n.Underlay, n.IPv4, AgentPort)
	return n, nil
}

func (l *Lab) startNode(ctx context.Context, n *Node) error {
	err := l.makeHost(n.Namespace.Name, n.veth, hostSetup{
		sysctls: [][2]string{{"net/ipv6/conf/all/accept_dad", "0"}, {"net/ipv6/conf/default/accept_dad", "0"}},
		addrs: []netip.Prefix{
			netip.PrefixFrom(n.Underlay, l.Underlay.Bits()),
			netip.PrefixFrom(n.IPv4, ipv4Net.Bits()),
		},
		gateway4: OutsideIPv4,
	})
	if err != nil {
		return err
	}
	if err := l.rec.update(func(r *record) { r.NodeDirs = append(r.NodeDirs, n.Dir) }); err != nil {
		return err
	}
	join, err := l.joinFlags(ctx, n.Name)
	if err != nil {
		return err
	}
	argv := []string{l.binary, "agent",
		"--server", join["--server"], "--token", join["--token"], "--ca-hash", join["--ca-hash"],
		"--data", n.Dir, "--name", n.Name, "--address", n.Underlay.String(),
		"--listen", fmt.Sprintf(":%d", AgentPort)}
	if l.Registry != "" {
		argv = append(argv, "--insecure-registry", l.Registry)
	}
	p, err := startProc(n.Name, n.Path, n.Log, argv, l.env)
	if err != nil {
		return err
	}
	n.agent = p
	return l.rec.addProc(p)
}

// joinFlags creates a node token with the CLI and returns the flags of
// the join command it prints (`skiff agent --server URL --token T
// --ca-hash H --name NAME`).
func (l *Lab) joinFlags(ctx context.Context, node string) (map[string]string, error) {
	cmd := l.Command("token", "create", "--node", node)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := runCtx(ctx, cmd); err != nil {
		return nil, fmt.Errorf("skiff token create --node %s: %v: %s", node, err, strings.TrimSpace(errb.String()))
	}
	f := strings.Fields(out.String())
	flags := map[string]string{}
	for i := 0; i+1 < len(f); i++ {
		if strings.HasPrefix(f[i], "--") && !strings.HasPrefix(f[i+1], "--") {
			flags[f[i]] = f[i+1]
			i++
		}
	}
	for _, k := range []string{"--server", "--token", "--ca-hash"} {
		if flags[k] == "" {
			return nil, fmt.Errorf("skiff token create --node %s printed %q: no %s", node, out.String(), k)
		}
	}
	return flags, nil
}

// runCtx runs cmd, killing it if ctx ends first.
func runCtx(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}

// RemoveNode takes a node off the lab as if its machine were gone: stops
// its agent, removes its containers, mounts, namespace, veth and data
// directory. Its Node object stays in the API: the caller decides whether
// to `skiff node forget` it. Its log stays.
func (l *Lab) RemoveNode(name string) error {
	l.mu.Lock()
	var n *Node
	for i, m := range l.nodes {
		if m.Name == name {
			n = m
			l.nodes = append(l.nodes[:i:i], l.nodes[i+1:]...)
			l.removed = append(l.removed, n)
			break
		}
	}
	l.mu.Unlock()
	if n == nil {
		return fmt.Errorf("lab: no node %s", name)
	}
	if err := l.teardownNode(n); err != nil {
		return fmt.Errorf("lab: remove node %s: %w", name, err)
	}
	return nil
}

// teardownNode undoes what startNode made and drops it from the record.
func (l *Lab) teardownNode(n *Node) error {
	if n.agent != nil {
		n.agent.stop(5 * time.Second)
	}
	sub := &record{Dir: n.Dir, OwnsDir: true, Namespaces: []string{n.Namespace.Name}, Links: []string{n.veth}, NodeDirs: []string{n.Dir}}
	if n.agent != nil {
		sub.Procs = []procRec{{n.Name, n.agent.pid(), n.agent.start}}
	}
	err := sub.teardown()
	if err == nil {
		l.rec.update(func(r *record) {
			r.Namespaces = without(r.Namespaces, n.Namespace.Name)
			r.Links = without(r.Links, n.veth)
			r.NodeDirs = without(r.NodeDirs, n.Dir)
		})
	}
	return err
}

func without(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// Close stops the lab and removes everything it made: agents (SIGTERM,
// then SIGKILL after 5 s), registry, server, containers, mounts,
// namespaces, links, directories (see Config.Dir) and its record. Calling
// it again does nothing.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.adding.Wait()
	l.mu.Lock()
	nodes := append([]*Node(nil), l.nodes...)
	registry := l.registry
	l.mu.Unlock()
	if l.rec == nil {
		return nil
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.agent.stop(5 * time.Second) }()
	}
	wg.Wait()
	if registry != nil {
		registry.stop(5 * time.Second)
	}
	for _, s := range l.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p := s.running(); p != nil {
				p.stop(5 * time.Second)
			}
		}()
	}
	wg.Wait()
	if err := l.rec.teardown(); err != nil {
		return fmt.Errorf("lab %s: close: %w", l.Prefix, err)
	}
	l.logf("removed")
	return nil
}

// Command returns the skiff CLI as a command to run against the lab
// (SKIFF_CONFIG is the lab's config); set its stdin and outputs.
func (l *Lab) Command(args ...string) *exec.Cmd {
	cmd := exec.Command(l.binary, args...)
	cmd.Env = l.env
	return cmd
}

// Skiff runs the skiff CLI against the lab and returns its standard
// output; a failure's error carries its standard error.
func (l *Lab) Skiff(args ...string) (string, error) {
	return l.SkiffIn("", args...)
}

// SkiffIn is Skiff with stdin as standard input ("apply", "-f", "-").
func (l *Lab) SkiffIn(stdin string, args ...string) (string, error) {
	cmd := l.Command(args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("skiff %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Env is the environment the lab's CLI runs with (SKIFF_CONFIG set).
func (l *Lab) Env() []string { return append([]string(nil), l.env...) }

// Nodes returns the running nodes in the order they were made.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Node(nil), l.nodes...)
}

// Node returns running node number i (Node(1) is n1), or nil.
func (l *Lab) Node(i int) *Node {
	return l.NodeByName(fmt.Sprintf("n%d", i))
}

// NodeByName returns the running node of that name, or nil.
func (l *Lab) NodeByName(name string) *Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// NetNSPath returns the path of a running node's network namespace
// (/run/netns/PREFIX-nI), or "".
func (l *Lab) NetNSPath(node string) string {
	if n := l.NodeByName(node); n != nil {
		return n.Path
	}
	return ""
}

// Logs returns the last lines of every process's log (servers, registry,
// each node's agent, removed nodes' too), for test failure messages.
func (l *Lab) Logs(lines int) string {
	l.mu.Lock()
	var paths []string
	for _, s := range l.servers {
		paths = append(paths, s.Log)
	}
	if l.registry != nil {
		paths = append(paths, l.registry.log)
	}
	for _, n := range append(append([]*Node(nil), l.nodes...), l.removed...) {
		paths = append(paths, n.Log)
	}
	l.mu.Unlock()
	var b strings.Builder
	for _, p := range paths {
		if t := tail(p, lines); t != "" {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", p, t)
		}
	}
	return b.String()
}

// WaitNodes waits until `skiff get nodes` shows each named node (every
// running node if none is named) ready.
func (l *Lab) WaitNodes(ctx context.Context, names ...string) error {
	if len(names) == 0 {
		for _, n := range l.Nodes() {
			names = append(names, n.Name)
		}
	}
	for {
		ready, err := l.readyNodes()
		missing := []string{}
		for _, n := range names {
			if !ready[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("not ready: %s", strings.Join(missing, ", "))
			}
			return fmt.Errorf("lab: waiting for nodes: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readyNodes lists the nodes `skiff get nodes -o json` shows ready.
func (l *Lab) readyNodes() (map[string]bool, error) {
	out, err := l.Skiff("get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	type node struct {
		Name   string `json:"name"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	var list []node
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		var wrapped struct {
			Items []node `json:"items"`
		}
		if err2 := json.Unmarshal([]byte(out), &wrapped); err2 != nil {
			return nil, fmt.Errorf("skiff get nodes -o json: %v: %q", err, out)
		}
		list = wrapped.Items
	}
	ready := map[string]bool{}
	for _, n := range list {
		if n.Status.State == "ready" {
			ready[n.Name] = true
		}
	}
	return ready, nil
}
