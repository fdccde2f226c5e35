// Package netns is the node agent's pod networking: it connects pods'
// network namespaces to the node with veths and plain routes, routes to
// other nodes' pod prefixes, and masquerades pods' IPv4 egress. It talks
// to the kernel with netlink and nftables only (no `ip`, no `nft`).
//
// Pods talk to each other over IPv6, by routing alone: no bridge, no
// overlay, no NAT. IPv4 exists only so pods can reach IPv4-only services
// outside; it is masqueraded to the node's address on the way out.
//
// Not here: making the pod's network namespace (agent/runtime does, owned by
// the pod's user namespace), choosing addresses or learning other nodes'
// prefixes (the agent's callers do), firewalling pods.
//
// # On a node
//
// Each node has a pod prefix (a /64) and each pod an address in it. A pod
// netns has eth0, one end of a veth pair; the host end is skvXXXXXXXXXX
// (VethName: sha256 of "namespace/name").
//
//	pod netns                               host netns
//	  eth0  2001:db8:1::5/128 nodad  ◄─veth─►  skv82b3ade9d0  fe80::1/64 nodad
//	        10.127.0.5/32                                     169.254.1.1/32
//	  default via fe80::1 dev eth0            2001:db8:1::5 dev skv82b3ade9d0 proto 92
//	  169.254.1.1 dev eth0 scope link         10.127.0.5 dev skv82b3ade9d0 proto 92 scope link
//	  default via 169.254.1.1 dev eth0        unreachable 2001:db8:1::/64 proto 92
//	  net.ipv4.ping_group_range=0 2147483647  2001:db8:2::/64 via fd00::2 proto 92  (node n2)
//	                                          net.ipv6.conf.all.forwarding=1
//	                                          net.ipv4.ip_forward=1
//	                                          table ip skiff: masquerade 10.127.0.0/16 → elsewhere
//
// Every host veth carries the same gateway addresses, fe80::1 and
// 169.254.1.1, so a pod's routes never depend on the node. The host reaches
// a pod by its /128 (and /32) route through the pod's veth; the pod answers
// neighbour solicitations for its own address. Packets from a pod to
// another pod on the node are forwarded between two veths; to a pod on
// another node they follow that node's prefix route via its underlay
// address. The unreachable route for the node's own prefix turns an
// address no pod has into an immediate "network is unreachable" instead of
// a packet sent out of the default route. ping works unprivileged in pods
// (ICMP datagram sockets) because of the ping_group_range sysctl.
//
// Every route skiff adds has protocol RouteProtocol (0x5c, 92): SyncRoutes
// and Sweep find theirs by it and leave all others alone. Per-pod routes
// (SetupPod's: one address, no gateway, out of an skv veth) and node routes
// (SyncRoutes': unreachable or via a gateway) are told apart by shape.
//
// To look at a node:
//
//	ip -6 route show proto 0x5c        # pod and node routes
//	ip -4 route show proto 0x5c        # pods' egress addresses
//	ip -br link show type veth         # skv… host veths
//	nft list table ip skiff            # the egress masquerade
//	nsenter --net=/path/to/pod/netns ip addr   # a pod's side
//
// State returns the same (for tests and `skiff why node/...`).
//
// # Lifecycle
//
//	agent start:   Open("") → EnsureNode → Sweep(keep pods it knows)
//	               → SetupPod for each of them (cheap when still right)
//	               → SyncRoutes whenever the node list changes
//	pod start:     SetupPod (idempotent; remakes the veth if anything is off)
//	pod stop:      TeardownPod (idempotent)
//	node removal:  RemoveNode (forwarding stays on)
//
// # Kernel behaviour worth knowing
//
//   - A veth that was just set up drops what it sends until the kernel's
//     linkwatch work has seen its carrier (and IPv6 has added its multicast
//     route). SetupPod waits for both ends to be operationally up, so the
//     pod's first packets are not lost.
//   - A router sends no neighbour solicitation for forwarded packets out of
//     an interface whose link-local address is still tentative (DAD, about
//     2s after the link comes up). Hence fe80::1 without DAD on host veths;
//     an underlay link that just came up forwards nothing to its neighbours
//     for those seconds.
//   - With net.ipv6.conf.all.forwarding=1 the node ignores router
//     advertisements on interfaces with accept_ra=1 (the default): a node
//     that takes its IPv6 default route from RAs needs accept_ra=2 on its
//     uplink.
//   - Deleting a veth waits for RCU grace periods (about 20ms, more when
//     namespaces are being destroyed at the same time); a pod netns
//     destroyed by the kernel takes its veth pair with it, asynchronously.
package netns
