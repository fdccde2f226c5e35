package server

import (
	"context"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/controllers/scheduler"
	"skiff.dev/skiff/store"
)

// assumeTTL is how long a placement the store has not confirmed yet holds
// its node. The step's write follows within milliseconds; a placement
// whose write was refused or superseded is forgotten after this.
const assumeTTL = 2 * time.Minute

// placeCache is the scheduler's view of the cluster, kept in memory from
// the orchestrator's Node and Pod watches so that a placement reads no
// etcd: each node's labels, taints, cordon, readiness and capacity, and
// what the pods placed on it hold.
//
// A pod's hold on a node:
//
//	none ──schedule step picks n──▶ assumed on n ──store shows n──▶ held on n
//	                                     │                              │
//	                   assumeTTL passes, │            status.node moves │
//	                   store shows no n  ▼                              ▼
//	                          as the store says               held where it says
//
// An assumed hold counts at once, so a burst of placements spreads before
// the store has confirmed any of them. A pod holds its request as of its
// last placement: a pod whose request grew is held at the larger amount
// only once the schedule step found room for it (a step that failed leaves
// it running as it was).
type placeCache struct {
	now func() time.Time

	mu    sync.Mutex                     // guards all below
	nodes []scheduler.Node               // in any order
	index map[string]int                 // node name → position in nodes
	usage map[string]scheduler.Resources // node name → held by pods, whether or not the node exists
	pods  map[podKey]*podHold
	ips   map[string]podKey // status.ip → the pod holding it, for ipam
	// subnets maps each node's status.podPrefix to the node, for ipam.
	subnets  map[string]string
	subnetOf map[string]string         // node → its status.podPrefix
	groups   map[string]map[string]int // group → node → pods of the group held there
	// spreads sums groups by node label values, for the label keys pods
	// spread over: group → key → value → pods. Built on first use, kept
	// up as pods come and go, dropped when nodes come, go or relabel.
	spreads map[string]map[string]map[string]int
	heard   map[string]time.Time // node → its lease's last renewal
	// onNode indexes pods by the node the store shows them on
	// (podHold.stored), and nodeGen counts the changes of each node's set
	// of pods or of any pod in it, so that the node lifecycle can tell a
	// node it already dealt with from one that changed.
	onNode  map[string]map[podKey]struct{}
	nodeGen map[string]uint64 // from seq: never the same twice for a node
	seq     uint64
	assumed []assumption    // oldest first; some long confirmed
	listed  map[string]bool // kinds loaded once
	synced  chan struct{}   // closed once Node and Pod are loaded

	// next is the position in nodes the next placement's search starts
	// at: where the last one stopped, so that in a large cluster, where a
	// search stops once it found enough nodes that fit, each node gets its
	// turn (scheduler.Cluster.Start).
	next int
}

type podKey struct{ ns, name string }

// podHold is what the cache knows of one pod.
type podHold struct {
	group     string              // groupOf its namespace and labels
	req       scheduler.Resources // what its spec asks now
	stored    string              // status.node as last seen in the store
	node      string              // where it holds, or ""
	held      scheduler.Resources // what it holds there
	assumedAt time.Time           // non-zero while node is a placement the store has not shown yet
	ip        string              // status.ip as last seen in the store
}

type assumption struct {
	pod podKey
	at  time.Time
}

func newPlaceCache() *placeCache {
	return &placeCache{now: time.Now, index: map[string]int{}, usage: map[string]scheduler.Resources{},
		pods: map[podKey]*podHold{}, ips: map[string]podKey{}, subnets: map[string]string{}, subnetOf: map[string]string{}, heard: map[string]time.Time{}, groups: map[string]map[string]int{}, spreads: map[string]map[string]map[string]int{},
		listed: map[string]bool{}, onNode: map[string]map[podKey]struct{}{}, nodeGen: map[string]uint64{},
		synced: make(chan struct{})}
}

// wait returns once nodes and pods have been loaded, so that no pod is
// placed, or moved, on a partial view.
func (c *placeCache) wait(ctx context.Context) error {
	select {
	case <-c.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// event applies a Node or Pod store event.
func (c *placeCache) event(ev store.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := &ev.Object
	switch {
	case o.Kind == "Node" && ev.Type == store.Deleted:
		c.removeNodeLocked(o.Name)
	case o.Kind == "Node":
		c.setNodeLocked(o)
	case o.Kind == "Pod" && ev.Type == store.Deleted:
		c.removePodLocked(podKey{o.Namespace, o.Name})
	case o.Kind == "Pod":
		c.setPodLocked(o, c.now())
	}
}

// list replaces what the cache knows of a kind with a fresh list of it.
func (c *placeCache) list(kind string, objs []api.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch kind {
	case "Node":
		c.nodes, c.index = c.nodes[:0], map[string]int{}
		for i := range objs {
			c.setNodeLocked(&objs[i])
		}
	case "Pod":
		now := c.now()
		seen := make(map[podKey]bool, len(objs))
		for i := range objs {
			c.setPodLocked(&objs[i], now)
			seen[podKey{objs[i].Namespace, objs[i].Name}] = true
		}
		for k := range c.pods {
			if !seen[k] {
				c.removePodLocked(k)
			}
		}
	}
	c.listed[kind] = true
	if c.listed["Node"] && c.listed["Pod"] {
		select {
		case <-c.synced:
		default:
			close(c.synced)
		}
	}
}

// place runs the scheduler for one pod and, when it picks a node other
// than the one the pod is on, holds that node for it at once.
func (c *placeCache) place(ns, name, group string, req scheduler.Request) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.expireLocked(now)
	k := podKey{ns, name}
	h := c.pods[k]
	if h == nil { // not seen in the store yet
		h = &podHold{group: group}
		c.pods[k] = h
	}
	if req.Current == "" {
		c.releaseLocked(h) // placed anew: an earlier placement no longer counts
	} else if h.node == req.Current {
		req.Held = h.held
	}
	view := scheduler.Cluster{Nodes: c.nodes, Index: c.index, ByName: true, Group: c.groups[h.group], Now: now, Start: c.next}
	if key := req.Placement.Spread; key != "" {
		view.Domains = c.domainsLocked(h.group, key)
	}
	r, err := scheduler.Search(req, view)
	c.next = r.Next
	if err != nil {
		return "", err
	}
	node := r.Node
	c.releaseLocked(h)
	c.holdLocked(h, node, scheduler.Resources{CPUMilli: req.CPUMilli, MemoryBytes: req.MemoryBytes, Pods: 1})
	if h.stored != node {
		h.assumedAt = now
		c.assumed = append(c.assumed, assumption{k, now})
	}
	return node, nil
}

// setPodLocked takes in a pod as the store shows it.
func (c *placeCache) setPodLocked(o *api.Object, now time.Time) {
	k := podKey{o.Namespace, o.Name}
	h := c.pods[k]
	if h == nil {
		h = &podHold{}
		c.pods[k] = h
	}
	if ip, _ := o.Status["ip"].(string); ip != h.ip {
		if h.ip != "" && c.ips[h.ip] == k {
			delete(c.ips, h.ip)
		}
		if h.ip = ip; ip != "" {
			c.ips[ip] = k
		}
	}
	group := groupOf(o.Namespace, o.Labels)
	spec, _ := o.Spec["containers"].([]any)
	h.req = podDemand(spec)
	stored, _ := o.Status["node"].(string)
	c.setStoredLocked(k, h, stored)
	inFlight := !h.assumedAt.IsZero() && h.stored == "" && now.Sub(h.assumedAt) < assumeTTL
	switch {
	case inFlight || h.node != "" && h.node == h.stored:
		// Our placement, not written yet, or the node it holds.
		if h.node == h.stored {
			h.assumedAt = time.Time{}
		}
		if group != h.group {
			node, held := h.node, h.held
			c.releaseLocked(h)
			h.group = group
			c.holdLocked(h, node, held)
		}
	default:
		// New to the cache, unplaced, or placed elsewhere than we thought:
		// the store wins, and the pod holds what it asks.
		c.releaseLocked(h)
		h.group, h.assumedAt = group, time.Time{}
		if h.stored != "" {
			c.holdLocked(h, h.stored, h.req)
		}
	}
}

// setStoredLocked records the node the store shows a pod on; a change of
// the pod counts as a change of its node's (and its old node's) pods.
func (c *placeCache) setStoredLocked(k podKey, h *podHold, node string) {
	if h.stored != node && h.stored != "" {
		c.seq++
		c.nodeGen[h.stored] = c.seq
		if set := c.onNode[h.stored]; set != nil {
			delete(set, k)
			if len(set) == 0 {
				delete(c.onNode, h.stored)
				delete(c.nodeGen, h.stored)
			}
		}
	}
	if node != "" {
		set := c.onNode[node]
		if set == nil {
			set = map[podKey]struct{}{}
			c.onNode[node] = set
		}
		set[k] = struct{}{}
		c.seq++
		c.nodeGen[node] = c.seq
	}
	h.stored = node
}

func (c *placeCache) removePodLocked(k podKey) {
	if h := c.pods[k]; h != nil {
		c.setStoredLocked(k, h, "")
		c.releaseLocked(h)
		if h.ip != "" && c.ips[h.ip] == k {
			delete(c.ips, h.ip)
		}
		delete(c.pods, k)
	}
}

// expireLocked forgets placements the store has not shown within
// assumeTTL: the pod holds again what the store says.
func (c *placeCache) expireLocked(now time.Time) {
	n := 0
	for n < len(c.assumed) && now.Sub(c.assumed[n].at) >= assumeTTL {
		a := c.assumed[n]
		n++
		h := c.pods[a.pod]
		if h == nil || !h.assumedAt.Equal(a.at) {
			continue // confirmed, replaced or gone
		}
		h.assumedAt = time.Time{}
		if h.node != h.stored {
			c.releaseLocked(h)
			if h.stored != "" {
				c.holdLocked(h, h.stored, h.req)
			}
		}
	}
	if n > 0 {
		c.assumed = append(c.assumed[:0], c.assumed[n:]...)
	}
}

// holdLocked makes h hold amount on node; h must hold nothing.
func (c *placeCache) holdLocked(h *podHold, node string, amount scheduler.Resources) {
	if node == "" {
		return
	}
	h.node, h.held = node, amount
	c.addLocked(node, h.group, amount, 1)
}

// releaseLocked frees what h holds.
func (c *placeCache) releaseLocked(h *podHold) {
	if h.node == "" {
		return
	}
	c.addLocked(h.node, h.group, h.held, -1)
	h.node, h.held = "", scheduler.Resources{}
}

func (c *placeCache) addLocked(node, group string, r scheduler.Resources, sign int64) {
	u := c.usage[node]
	u.CPUMilli += sign * r.CPUMilli
	u.MemoryBytes += sign * r.MemoryBytes
	u.Pods += sign * r.Pods
	if u == (scheduler.Resources{}) {
		delete(c.usage, node)
	} else {
		c.usage[node] = u
	}
	if i, ok := c.index[node]; ok {
		c.nodes[i].Used = u
	}
	if i, ok := c.index[node]; ok {
		for key, d := range c.spreads[group] {
			if v, ok := c.nodes[i].Labels[key]; ok {
				if d[v] += int(sign); d[v] <= 0 {
					delete(d, v)
				}
			}
		}
	}
	g := c.groups[group]
	if g == nil {
		g = map[string]int{}
		c.groups[group] = g
	}
	g[node] += int(sign)
	if g[node] <= 0 {
		delete(g, node)
		if len(g) == 0 {
			delete(c.groups, group)
			delete(c.spreads, group)
		}
	}
}

// domainsLocked returns a group's pods by the value of node label key.
func (c *placeCache) domainsLocked(group, key string) map[string]int {
	if len(c.groups[group]) == 0 {
		return map[string]int{}
	}
	byKey := c.spreads[group]
	if byKey == nil {
		byKey = map[string]map[string]int{}
		c.spreads[group] = byKey
	}
	d := byKey[key]
	if d == nil {
		d = scheduler.Domains(c.nodes, c.index, c.groups[group], key)
		byKey[key] = d
	}
	return d
}

// setNodeLocked takes in a node as the store shows it.
func (c *placeCache) setNodeLocked(o *api.Object) {
	if p, _ := o.Status["podPrefix"].(string); p != c.subnetOf[o.Name] {
		c.dropSubnetLocked(o.Name)
		if p != "" {
			c.subnets[p], c.subnetOf[o.Name] = o.Name, p
		}
	}
	n := scheduler.Node{Name: o.Name, Labels: o.Labels, Used: c.usage[o.Name]}
	if spec, err := api.DecodeSpecAs[api.NodeSpec](o); err == nil {
		n.Unschedulable, n.Taints = spec.Unschedulable, spec.Taints
	}
	capacity, _ := o.Status["capacity"].(map[string]any)
	n.Capacity = scheduler.Resources{CPUMilli: number(capacity["cpuMilli"]),
		MemoryBytes: number(capacity["memoryBytes"]), Pods: number(capacity["pods"])}
	n.Heartbeat = c.heard[o.Name]
	n.Unreachable = o.Status["reachability"] == unreachable
	n.Network, _ = o.Status["network"].(string)
	if n.Network == "ready" {
		// The literal, shared by every ready node: Place compares it for
		// every node of every placement, and equal pointers compare
		// without reading each node's decoded copy from memory.
		n.Network = "ready"
	}
	if i, ok := c.index[o.Name]; ok {
		if !maps.Equal(c.nodes[i].Labels, n.Labels) {
			clear(c.spreads)
		}
		c.nodes[i] = n
		return
	}
	clear(c.spreads)
	// Nodes stay sorted by name (scheduler.Cluster.ByName); they come
	// mostly in order, at the end.
	i, _ := slices.BinarySearchFunc(c.nodes, n.Name, func(x scheduler.Node, name string) int { return strings.Compare(x.Name, name) })
	c.nodes = slices.Insert(c.nodes, i, n)
	c.reindexLocked(i)
}

// placedOn returns the pods the store shows on node, and the node's
// generation: it changes whenever those pods, or any of them, change.
func (c *placeCache) placedOn(node string) ([]podKey, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set := c.onNode[node]
	out := make([]podKey, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	return out, c.nodeGen[node]
}

// allocated returns what the pods placed on node hold there.
func (c *placeCache) allocated(node string) scheduler.Resources {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usage[node]
}

// orphanNodes returns the nodes pods are placed on that the store no
// longer has.
func (c *placeCache) orphanNodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n, u := range c.usage {
		if _, ok := c.index[n]; !ok && u.Pods > 0 {
			out = append(out, n)
		}
	}
	return out
}

// renewed takes in a renewal of a node's lease.
func (c *placeCache) renewed(node string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heard[node] = at
	if i, ok := c.index[node]; ok {
		c.nodes[i].Heartbeat = at
	}
}

func (c *placeCache) dropSubnetLocked(node string) {
	if old := c.subnetOf[node]; old != "" && c.subnets[old] == node {
		delete(c.subnets, old)
	}
	delete(c.subnetOf, node)
}

func (c *placeCache) removeNodeLocked(name string) {
	c.dropSubnetLocked(name)
	i, ok := c.index[name]
	if !ok {
		return
	}
	c.nodes = slices.Delete(c.nodes, i, i+1)
	delete(c.index, name)
	c.reindexLocked(i)
	clear(c.spreads)
}

// reindexLocked brings the index up to date from position i on.
func (c *placeCache) reindexLocked(i int) {
	for ; i < len(c.nodes); i++ {
		c.index[c.nodes[i].Name] = i
	}
}

// groupOf names a pod's group for spreading: the pods of one namespace
// with exactly the same labels, such as a PinnedDeployment's replicas.
func groupOf(ns string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(ns)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	return b.String()
}

// podDemand sums the resources of a pod's containers, as stored.
func podDemand(containers []any) scheduler.Resources {
	r := scheduler.Resources{Pods: 1}
	for _, c := range containers {
		cm, _ := c.(map[string]any)
		res, _ := cm["resources"].(map[string]any)
		if s, ok := res["cpu"].(string); ok {
			r.CPUMilli += api.CPU(s).Milli()
		}
		if s, ok := res["memory"].(string); ok {
			r.MemoryBytes += api.Memory(s).Bytes()
		}
	}
	return r
}

// number reads a JSON number of a status.
func number(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case int:
		return int64(x)
	case int64:
		return x
	}
	return 0
}

// ipHolder tells which pod the store shows holding an address, if any.
func (c *placeCache) ipHolder(ip string) (ns, name string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.ips[ip]
	return k.ns, k.name, ok
}

// nodeSubnet returns the pod subnet the store shows node holding, "" if
// none or the node is not known.
func (c *placeCache) nodeSubnet(node string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subnetOf[node]
}

// subnetHolder tells which node the store shows holding a pod subnet.
func (c *placeCache) subnetHolder(prefix string) (node string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	node, ok = c.subnets[prefix]
	return node, ok
}
