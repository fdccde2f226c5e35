package netns

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
)

// RouteProtocol is the routing protocol number (rtm_protocol) on every route
// skiff adds to a node: the per-pod /128 and /32 routes, the unreachable
// route for the node's own prefix and the routes to other nodes' prefixes.
// It is how skiff finds its routes again (`ip -6 route show proto 0x5c`) and
// sweeps them; 0x5c (92) is not taken in /etc/iproute2/rt_protos nor in the
// kernel's rtnetlink.h.
const RouteProtocol = 0x5c

// VethPrefix starts the name of every host-side veth skiff makes; links
// named so belong to skiff and are swept when no pod keeps them.
const VethPrefix = "skv"

// PodInterface is the name of the pod side of the veth in the pod's netns.
const PodInterface = "eth0"

// The addresses every host veth has, the pod's gateways.
var (
	HostGatewayIPv6 = netip.MustParseAddr("fe80::1")
	HostGatewayIPv4 = netip.MustParseAddr("169.254.1.1")
)

// DefaultEgressRange is the IPv4 range pods' egress addresses are taken from
// when NodeConfig.EgressRange is zero.
var DefaultEgressRange = netip.MustParsePrefix("10.127.0.0/16")

// VethName is the host-side veth name of the pod namespace/name: "skv" and
// the first 10 hex digits of sha256("namespace/name"), 13 characters (Linux
// allows 15).
func VethName(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return VethPrefix + hex.EncodeToString(sum[:5])
}

// Pod is what SetupPod needs to connect a pod.
type Pod struct {
	NetNS    string     // path of the pod's network namespace (a bind-mounted nsfs file)
	HostVeth string     // host side veth name, from VethName
	IPv6     netip.Addr // the pod's address; required
	IPv4     netip.Addr // the pod's egress address; the zero Addr means no IPv4
	// Owner is the node the pod is on, kept as the host veth's alias
	// ("skiff node=NAME") so that Sweep leaves the veths of other agents
	// sharing this network namespace (a test host) alone.
	Owner string
}

// OwnerAlias is the alias of a host veth owned by node.
func OwnerAlias(node string) string { return "skiff node=" + node }

func (p Pod) validate() error {
	switch {
	case p.NetNS == "":
		return fmt.Errorf("pod veth %s: no netns path", p.HostVeth)
	case !strings.HasPrefix(p.HostVeth, VethPrefix) || len(p.HostVeth) > 15:
		return fmt.Errorf("pod netns %s: host veth name %q must start with %q and have at most 15 characters (use VethName)", p.NetNS, p.HostVeth, VethPrefix)
	case !p.IPv6.Is6() || p.IPv6.Is4In6() || p.IPv6.IsLinkLocalUnicast() || p.IPv6.Zone() != "":
		return fmt.Errorf("pod netns %s: IPv6 address %q is not a global IPv6 address", p.NetNS, p.IPv6)
	case p.IPv4.IsValid() && !p.IPv4.Is4():
		return fmt.Errorf("pod netns %s: IPv4 address %q is not IPv4", p.NetNS, p.IPv4)
	}
	return nil
}

// Route is a route to another node's pod prefix, for SyncRoutes.
type Route struct {
	Node   string       // the node's name, for errors
	Prefix netip.Prefix // the node's pod prefix (its /64)
	Via    netip.Addr   // the node's underlay address, on-link from here
}

// Changes is what SyncRoutes did, for logging.
type Changes struct {
	Added   []HostRoute
	Removed []HostRoute
}

// Empty tells whether nothing changed.
func (c Changes) Empty() bool { return len(c.Added) == 0 && len(c.Removed) == 0 }

func (c Changes) String() string {
	var b strings.Builder
	for _, r := range c.Added {
		fmt.Fprintf(&b, "+ %s\n", r)
	}
	for _, r := range c.Removed {
		fmt.Fprintf(&b, "- %s\n", r)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// HostRoute is a route in the node's main routing table.
type HostRoute struct {
	Type   string       // "" for unicast, else "unreachable", "blackhole", ...
	Dst    netip.Prefix // destination
	Via    netip.Addr   // gateway; zero when none
	Dev    string       // output device; "" when none
	Scope  string       // "link" for IPv4 link-scope routes, else ""
	Metric int          // as the kernel reports it (IPv6 routes default to 1024)
}

// String renders the route as `ip route` prints it (less "pref medium").
func (r HostRoute) String() string {
	var b strings.Builder
	if r.Type != "" {
		b.WriteString(r.Type + " ")
	}
	if r.Dst.IsSingleIP() {
		b.WriteString(r.Dst.Addr().String())
	} else if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Via.IsValid() {
		b.WriteString(" via " + r.Via.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev " + r.Dev)
	}
	fmt.Fprintf(&b, " proto %d", RouteProtocol)
	if r.Scope != "" {
		b.WriteString(" scope " + r.Scope)
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	return b.String()
}

// NodeConfig is the node-level setup of EnsureNode.
type NodeConfig struct {
	// EgressRange is the IPv4 range of pods' egress addresses, masqueraded
	// when they leave it. Zero means DefaultEgressRange.
	EgressRange netip.Prefix
}

// Link is a host-side veth.
type Link struct {
	Name  string
	Index int
	Up    bool // administratively up
}

// State is what skiff has on a node, from State.
type State struct {
	IPv6Forwarding bool        // net.ipv6.conf.all.forwarding
	IPv4Forwarding bool        // net.ipv4.ip_forward
	Links          []Link      // skv* links, by name
	Routes         []HostRoute // routes with RouteProtocol, IPv6 first, by destination
	// EgressRange is the range the masquerade rule in table ip skiff
	// applies to; zero when there is no such rule.
	EgressRange netip.Prefix
	// NFT is table ip skiff as `nft list table ip skiff` prints it; ""
	// when the table does not exist.
	NFT string
}

// String renders the state for people (`skiff why node/...`).
func (s State) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "forwarding: ipv6 %s, ipv4 %s\n", onOff(s.IPv6Forwarding), onOff(s.IPv4Forwarding))
	fmt.Fprintf(&b, "veths (%d):\n", len(s.Links))
	for _, l := range s.Links {
		state := "down"
		if l.Up {
			state = "up"
		}
		fmt.Fprintf(&b, "  %s %s\n", l.Name, state)
	}
	fmt.Fprintf(&b, "routes (proto %d):\n", RouteProtocol)
	for _, r := range s.Routes {
		fmt.Fprintf(&b, "  %s\n", r)
	}
	if s.NFT == "" {
		b.WriteString("nftables: no table ip skiff\n")
	} else {
		b.WriteString(s.NFT)
	}
	return b.String()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
