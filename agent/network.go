package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"skiff.dev/skiff/agent/netns"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/workflow"
)

// Network programs the node's pod networking; *netns.Host is the real one.
// Every call is idempotent.
type Network interface {
	SetupPod(p netns.Pod) error
	TeardownPod(hostVeth string) error
	EnableForwarding() error
	EnsureEgress(r netip.Prefix) error
	SyncRoutes(own netip.Prefix, peers []netns.Route) (netns.Changes, error)
	Sweep(owner string, keep func(hostVeth string) bool) error
}

// DefaultEgressRange is where pods' IPv4 addresses come from: the same
// range on every node, masqueraded on the way out, never stored in the
// control plane. Pod-to-pod traffic is IPv6.
var DefaultEgressRange = netns.DefaultEgressRange

// podIPv4 is a pod's egress address: the range's base plus 2 plus the
// pod's user namespace slot (.0 is the network, .1 is left alone).
func (a *Agent) podIPv4(p *podRecord) netip.Addr {
	r := a.o.EgressRange
	slot := (p.IDBase - idBase0) / idRangeSize
	b := r.Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n += 2 + slot
	addr := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	if !r.Contains(addr) {
		return netip.Addr{}
	}
	return addr
}

// setupPodNetwork gives a pod's network namespace its veth, addresses and
// routes. Cheap when all is in place already.
func (a *Agent) setupPodNetwork(p *podRecord, ns string) error {
	if a.net == nil || p.IP == "" {
		return nil
	}
	ip, err := netip.ParseAddr(p.IP)
	if err != nil || !ip.Is6() {
		return fmt.Errorf("pod address %q is not an IPv6 address", p.IP)
	}
	return a.net.SetupPod(netns.Pod{NetNS: ns, HostVeth: netns.VethName(p.Namespace, p.Name),
		IPv6: ip, IPv4: a.podIPv4(p), Owner: a.o.Name})
}

// netup is the pod step that makes its network: the namespace (owned by
// the pod's user namespace), veth, addresses and routes.
func (a *Agent) netup(it *workflow.WorkItem) error {
	spec, err := decodePodSpec(it)
	if err != nil {
		return err
	}
	if spec.Has("hostNetwork") {
		return nil
	}
	ip := podIP(it)
	if ip == "" {
		return errors.New("the pod has no address (status.ip is empty): the ipam step did not run")
	}
	p, err := a.record(it, func(p *podRecord) bool {
		changed := p.IP != ip
		p.IP = ip
		return changed
	})
	if err != nil {
		return err
	}
	// The start step records the namespace with the containers.
	_, err = a.podNetNS(p)
	return err
}

// podIP is the address the ipam step gave a work item's pod.
func podIP(it *workflow.WorkItem) string {
	st, _ := it.Object["status"].(map[string]any)
	return str(st["ip"])
}

// netdown is the pod step that removes what netup made, after the
// containers stopped. Nothing left is no error.
func (a *Agent) netdown(it *workflow.WorkItem) error {
	if a.net != nil {
		if err := a.net.TeardownPod(netns.VethName(it.Namespace, it.Name)); err != nil {
			return err
		}
	}
	return a.rt.RemovePodNetNS(netName(it.Namespace, it.Name))
}

// prepareNode programs what every pod's traffic needs, from what the
// agent knows locally: at start, before any pod comes back, with or
// without a server. Stale links of pods this node no longer has go.
func (a *Agent) prepareNode() {
	if a.net == nil {
		return
	}
	pods, _ := a.st.all()
	mine := map[string]bool{}
	for _, p := range pods {
		mine[netns.VethName(p.Namespace, p.Name)] = true
	}
	if err := a.net.Sweep(a.o.Name, func(veth string) bool { return mine[veth] }); err != nil {
		a.log.Warn("sweep pod links", "err", err)
	}
	if err := a.net.EnableForwarding(); err != nil {
		a.log.Warn("forwarding", "err", err)
	}
	if err := a.net.EnsureEgress(a.o.EgressRange); err != nil {
		a.log.Warn("egress", "err", err)
	}
	// The routes last known, so pods reach other nodes after a reboot
	// with no server to ask.
	var rt routeTable
	if s := a.st.getMeta("routes"); s != "" && json.Unmarshal([]byte(s), &rt) == nil {
		if _, err := a.applyRoutes(rt); err != nil {
			a.log.Warn("routes", "err", err)
		}
	}
}

// routeTable is what SyncRoutes was last given.
type routeTable struct {
	Own   netip.Prefix  `json:"own"`
	Peers []netns.Route `json:"peers"`
}

// routesFrom works out the routes to other nodes' pods from the Node
// objects: each other node's /64 via its underlay address. Problems (a
// node with an IPv4-only underlay, or none yet) are returned with the
// routes that could be made.
func (a *Agent) routesFrom(nodes []api.Object) (routeTable, []string) {
	var rt routeTable
	var problems []string
	local := localAddrs()
	var self *api.Object
	for i := range nodes {
		if nodes[i].Name == a.o.Name {
			self = &nodes[i]
		}
	}
	if self != nil {
		rt.Own, _ = netip.ParsePrefix(str(self.Status["podPrefix"]))
	}
	ownAddr, _ := netip.ParseAddr(a.o.Address)
	samehost := false
	for i := range nodes {
		n := &nodes[i]
		if n.Name == a.o.Name || n.Meta.Deleting != nil {
			continue
		}
		prefix, err := netip.ParsePrefix(str(n.Status["podPrefix"]))
		if err != nil {
			continue // not addressed yet: nothing to route to
		}
		addr, err := netip.ParseAddr(str(n.Status["address"]))
		switch {
		case err != nil:
			continue // registered a moment ago: its first heartbeat brings it
		case local[addr]:
			// Another agent on this same host: its pods' host routes
			// are in this very table already.
			samehost = true
			continue
		case !addr.Is6() || addr.Is4In6():
			problems = append(problems, fmt.Sprintf("node %s has an IPv4-only underlay (%s): pod routing between nodes needs IPv6 underlay addresses (start its agent with --address set to an IPv6 address)", n.Name, addr))
			continue
		}
		if ownAddr.IsValid() && !ownAddr.Is6() {
			problems = append(problems, fmt.Sprintf("this node's underlay address %s is IPv4: pod routing between nodes needs an IPv6 underlay (start the agent with --address set to an IPv6 address)", ownAddr))
		}
		rt.Peers = append(rt.Peers, netns.Route{Node: n.Name, Prefix: prefix, Via: addr})
	}
	// A node's /64 never changes while it exists: a list or watch event
	// from before it had one (they arrive in order, the routes step's own
	// list may be newer) keeps the one known.
	if rt.Own.IsValid() {
		a.ownPrefix = rt.Own
	} else {
		rt.Own = a.ownPrefix
	}
	if samehost {
		// Several agents share this routing table (a test host): none
		// claims its /64 as unreachable, as the others' pods live there.
		rt.Own = netip.Prefix{}
	}
	sort.Slice(rt.Peers, func(i, j int) bool { return rt.Peers[i].Node < rt.Peers[j].Node })
	return rt, dedupe(problems)
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// applyRoutes programs a route table and remembers it for cold boots.
func (a *Agent) applyRoutes(rt routeTable) (netns.Changes, error) {
	ch, err := a.net.SyncRoutes(rt.Own, rt.Peers)
	if b, jerr := json.Marshal(rt); jerr == nil {
		a.st.setMeta("routes", string(b))
	}
	return ch, err
}

// syncRoutes programs routes from the Node objects and says what was
// wrong, if anything.
func (a *Agent) syncRoutes(nodes []api.Object) error {
	// The watch and the routes step may both sync: one at a time.
	a.routesMu.Lock()
	defer a.routesMu.Unlock()
	rt, problems := a.routesFrom(nodes)
	ch, err := a.applyRoutes(rt)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if !ch.Empty() {
		a.log.Info("routes", "changes", ch.String())
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// routeLoop keeps routes to every other node's pods current as nodes
// come, go and change address: a list, then a watch, again on failure.
func (a *Agent) routeLoop(ctx context.Context) {
	if a.net == nil || a.c == nil {
		return
	}
	var lastErr string
	sync := func(nodes map[string]api.Object) {
		list := make([]api.Object, 0, len(nodes))
		for _, n := range nodes {
			list = append(list, n)
		}
		err := a.syncRoutes(list)
		if s := fmt.Sprint(err); err != nil && s != lastErr {
			a.log.Warn("routes", "err", err)
		}
		lastErr = fmt.Sprint(err)
	}
	for ctx.Err() == nil {
		l, err := a.c.List(ctx, "Node", "", "")
		if err != nil {
			sleepCtx(ctx, 2*time.Second)
			continue
		}
		nodes := map[string]api.Object{}
		for _, n := range l.Items {
			nodes[n.Name] = n
		}
		sync(nodes)
		err = a.c.Watch(ctx, "Node", "", l.Revision, func(ev client.Event) error {
			old, had := nodes[ev.Object.Name]
			if ev.Type == "deleted" {
				delete(nodes, ev.Object.Name)
			} else {
				nodes[ev.Object.Name] = ev.Object
			}
			// Heartbeats change nothing that routes depend on.
			if !had || ev.Type == "deleted" || routeKey(old) != routeKey(ev.Object) {
				sync(nodes)
			}
			return nil
		})
		if ctx.Err() == nil {
			a.log.Debug("watch nodes", "err", err)
			sleepCtx(ctx, time.Second)
		}
	}
}

func routeKey(n api.Object) string {
	return fmt.Sprint(n.Status["podPrefix"], "|", n.Status["address"], "|", n.Meta.Deleting != nil)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// nodeStep runs a step of this node's own readiness workflow.
func (a *Agent) nodeStep(ctx context.Context, it *workflow.WorkItem) (map[string]any, error) {
	if a.net == nil {
		// No pod networking on this node (a test agent): nothing to wait for.
		if it.Step == "routes" {
			return map[string]any{"status.network": "ready"}, nil
		}
		return nil, nil
	}
	switch it.Step {
	case "forwarding":
		return nil, a.net.EnableForwarding()
	case "egress":
		return nil, a.net.EnsureEgress(a.o.EgressRange)
	case "routes":
		l, err := a.c.List(ctx, "Node", "", "")
		if err != nil {
			return nil, err
		}
		if err := a.syncRoutes(l.Items); err != nil {
			return nil, err
		}
		return map[string]any{"status.network": "ready"}, nil
	}
	return nil, fmt.Errorf("the agent has no node step %q", it.Step)
}

// localAddrs are the addresses of this host's interfaces.
func localAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}

// UnderlayAddress picks this host's underlay address when none is given:
// the source address of its default IPv6 route, else of its IPv4 one.
func UnderlayAddress() string {
	for _, probe := range []string{"[2001:db8::1]:9", "192.0.2.1:9"} {
		// A UDP "connection" sends nothing; it asks the kernel which
		// source address a packet there would leave with.
		c, err := net.Dial("udp", probe)
		if err != nil {
			continue
		}
		addr := c.LocalAddr().(*net.UDPAddr).IP
		c.Close()
		if ip, ok := netip.AddrFromSlice(addr); ok && !ip.IsLoopback() {
			return ip.Unmap().String()
		}
	}
	return ""
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
