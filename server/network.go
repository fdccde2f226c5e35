package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/controllers/ipam"
	"skiff.dev/skiff/workflow"
)

// ClusterNetwork is the cluster's network plan, fixed when the cluster is
// first started and kept in etcd at PREFIX/cluster/network.
type ClusterNetwork struct {
	// PodPrefix is the IPv6 prefix every pod address comes from: each
	// node gets a /64 of it, each pod an address in its node's /64.
	PodPrefix string `json:"podPrefix"`
}

// EnsureNetwork loads the cluster's network plan, creating it on first
// start: with podPrefix if given (validated), else a random ULA /48. A
// podPrefix that differs from the stored one is an error: addresses
// already handed out would no longer fit.
func EnsureNetwork(ctx context.Context, kv *clientv3.Client, prefix, podPrefix string) (ClusterNetwork, error) {
	var want netip.Prefix
	if podPrefix != "" {
		p, err := ipam.ParseClusterPrefix(podPrefix)
		if err != nil {
			return ClusterNetwork{}, fmt.Errorf("--pod-prefix: %w", err)
		}
		want = p
	}
	n, found, err := readNetwork(ctx, kv, prefix)
	if err != nil {
		return ClusterNetwork{}, err
	}
	if !found {
		pick := want
		if !pick.IsValid() {
			pick = ipam.RandomULA()
		}
		b, _ := json.Marshal(ClusterNetwork{PodPrefix: pick.String()})
		// Only the first server to get here decides; the others (of a
		// cluster starting together) take its choice unless told one.
		key := prefix + networkKey
		if _, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
			return ClusterNetwork{}, fmt.Errorf("store cluster network: %w", err)
		}
		if n, _, err = readNetwork(ctx, kv, prefix); err != nil {
			return ClusterNetwork{}, err
		}
	}
	if want.IsValid() && n.PodPrefix != want.String() {
		return ClusterNetwork{}, fmt.Errorf("--pod-prefix %s: this cluster already uses pod prefix %s, which cannot change once pods have addresses from it (leave --pod-prefix out)", want, n.PodPrefix)
	}
	return n, nil
}

const networkKey = "/cluster/network"

// readNetwork reads the cluster's network plan; found is false when there
// is none yet.
func readNetwork(ctx context.Context, kv *clientv3.Client, prefix string) (n ClusterNetwork, found bool, err error) {
	resp, err := kv.Get(ctx, prefix+networkKey)
	if err != nil {
		return n, false, fmt.Errorf("read cluster network: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return n, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &n); err != nil {
		return n, false, fmt.Errorf("cluster network record damaged: %v", err)
	}
	if _, err := netip.ParsePrefix(n.PodPrefix); err != nil {
		return n, false, fmt.Errorf("cluster network record damaged: %v", err)
	}
	return n, true, nil
}

// addressBook keeps addresses handed out by steps whose writes may not be
// in the store yet, so two steps running at once never pick the same one.
// Entries expire once the write has surely landed (or failed).
type addressBook struct {
	mu    sync.Mutex
	held  map[string]heldAddress // address or prefix → holder
	check time.Time
}

type heldAddress struct {
	holder string
	at     time.Time
}

const holdFor = time.Minute

// hold reserves addr for holder unless someone else holds it.
func (b *addressBook) hold(addr, holder string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.held == nil {
		b.held = map[string]heldAddress{}
	}
	if now.Sub(b.check) > holdFor {
		for k, h := range b.held {
			if now.Sub(h.at) > holdFor {
				delete(b.held, k)
			}
		}
		b.check = now
	}
	if h, ok := b.held[addr]; ok && h.holder != holder && now.Sub(h.at) <= holdFor {
		return false
	}
	b.held[addr] = heldAddress{holder: holder, at: now}
	return true
}

// podPrefix returns the cluster's pod prefix.
func (o *Orchestrator) podPrefix(ctx context.Context) (netip.Prefix, error) {
	o.netMu.Lock()
	defer o.netMu.Unlock()
	if o.network.IsValid() {
		return o.network, nil
	}
	n, found, err := readNetwork(ctx, o.kv, o.prefix)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !found {
		return netip.Prefix{}, fmt.Errorf("the cluster has no network plan yet (%s%s)", o.prefix, networkKey)
	}
	p := netip.MustParsePrefix(n.PodPrefix) // readNetwork checked it
	o.network = p
	return p, nil
}

// ipam runs the steps of the ipam controller.
func (o *Orchestrator) ipam(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	switch item.Step {
	case "subnet":
		return o.allocateSubnet(ctx, item, log)
	case "address":
		return o.addressPod(ctx, item, log)
	}
	return workflow.Result{Err: fmt.Sprintf("the ipam controller has no step %q", item.Step)}
}

// allocateSubnet is the IPAM step of nodes: give the node a /64 of the
// cluster's pod prefix with a random subnet id, unless it has one.
func (o *Orchestrator) allocateSubnet(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	cluster, err := o.podPrefix(ctx)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	// Its own subnet, if it has one that fits (as the run sees the node:
	// the work item's), the subnets other nodes hold from the watch-fed
	// cache (a list of every node per node made joining thousands of
	// nodes quadratic).
	status, _ := item.Object["status"].(map[string]any)
	if p, err := netip.ParsePrefix(str(status["podPrefix"])); err == nil &&
		cluster.Contains(p.Addr()) && p.Bits() == ipam.NodeBits && o.addrs.hold(p.String(), "node/"+item.Name) {
		return workflow.Result{} // keeps its subnet
	}
	if err := o.places.wait(ctx); err != nil {
		return workflow.Result{Err: err.Error()}
	}
	p, err := pickFree(func(taken map[netip.Prefix]bool) (netip.Prefix, error) { return ipam.NodeSubnet(cluster, taken) },
		func(p netip.Prefix) bool {
			holder, held := o.places.subnetHolder(p.String())
			return held && holder != item.Name
		}, &o.addrs, "node/"+item.Name)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	log("subnet", map[string]any{"podPrefix": p.String()})
	return workflow.Result{Writes: map[string]any{"status.podPrefix": p.String()}}
}

// pickFree draws candidates until one is neither held in the store by
// someone else (heldElsewhere, from the watch-fed cache) nor handed out
// lately to another holder (the address book), and holds it for holder.
func pickFree[T interface {
	comparable
	String() string
}](draw func(taken map[T]bool) (T, error), heldElsewhere func(T) bool, book *addressBook, holder string) (T, error) {
	taken := map[T]bool{}
	for {
		c, err := draw(taken)
		if err != nil {
			return c, err
		}
		if !heldElsewhere(c) && book.hold(c.String(), holder) {
			return c, nil
		}
		taken[c] = true
	}
}

// addressPod is the IPAM step of pods: give the pod an address in its
// node's /64, keeping the one it has if it still fits (an in-place
// restart keeps its address; a pod moved to another node gets a new one).
// A pod on the node's network has the node's address.
//
// It reads no etcd. The pod is the work item's: the run's view of it,
// which holds the run's own schedule write (status.node) and is at least
// as new as the change that started the run. The node's pod subnet is
// the placement cache's: a node keeps its subnet once it has one (the
// subnet step keeps a valid one), and the scheduler placed the pod on a
// node the cache showed ready, so with its subnet. A node the cache has
// no subnet for (a pod placed by other means, a node not seen yet) is read
// from the store, as is a host-network pod's node, for its address.
func (o *Orchestrator) addressPod(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	status, _ := item.Object["status"].(map[string]any)
	spec, _ := item.Object["spec"].(map[string]any)
	nodeName, cur := str(status["node"]), str(status["ip"])
	if nodeName == "" {
		return workflow.Result{Err: "the pod has no node (status.node is empty)"}
	}
	if err := o.places.wait(ctx); err != nil {
		return workflow.Result{Err: err.Error()}
	}
	prefix, hostNet := o.places.nodeSubnet(nodeName), requests(spec, "hostNetwork")
	if prefix == "" || hostNet {
		node, err := o.store.Get(ctx, api.Ref{Kind: "Node", Name: nodeName})
		if err != nil {
			return workflow.Result{Err: fmt.Sprintf("node %s: %v", nodeName, err)}
		}
		if hostNet {
			addr := str(node.Status["address"])
			if addr == cur {
				return workflow.Result{}
			}
			log("host network", map[string]any{"ip": addr})
			return workflow.Result{Writes: map[string]any{"status.ip": addr}}
		}
		prefix = str(node.Status["podPrefix"])
	}
	subnet, err := netip.ParsePrefix(prefix)
	if err != nil {
		return workflow.Result{Err: fmt.Sprintf("node %s has no pod subnet yet: its readiness run has not reached addressed (skiff why node/%s)", nodeName, nodeName)}
	}
	self := "pod/" + item.Namespace + "/" + item.Name
	if a, err := netip.ParseAddr(cur); err == nil && subnet.Contains(a) && o.addrs.hold(a.String(), self) {
		return workflow.Result{} // keeps its address
	}
	// The addresses pods hold, from the watch-fed cache (listing every
	// pod here made ipam the cluster's bottleneck), and those handed out
	// lately, from the address book.
	a, err := pickFree(func(taken map[netip.Addr]bool) (netip.Addr, error) { return ipam.PodAddress(subnet, taken) },
		func(a netip.Addr) bool {
			ns, name, held := o.places.ipHolder(a.String())
			return held && (ns != item.Namespace || name != item.Name)
		}, &o.addrs, self)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	log("address", map[string]any{"ip": a.String(), "node": nodeName})
	return workflow.Result{Writes: map[string]any{"status.ip": a.String()}}
}

// requests reports whether a pod spec, as stored, requests privilege p.
func requests(spec map[string]any, p string) bool {
	privs, _ := spec["privileges"].([]any)
	for _, x := range privs {
		if x == p {
			return true
		}
	}
	return false
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
