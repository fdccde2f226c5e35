package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// pingGroupRange lets every group open ICMP datagram sockets, so ping works
// unprivileged in containers. The range is read in the writer's user
// namespace: written from the host, it covers every host gid, so every gid
// a pod's user namespace maps.
const pingGroupRange = "0 2147483647"

// SetupPod connects a pod's network namespace to the host: a veth pair
// (p.HostVeth on the host, eth0 in the pod), the pod's addresses and
// default routes via the host veth, and host routes to the pod's addresses.
//
// It is idempotent: when everything is in place it only reads (a handful of
// netlink requests); when anything differs (the veth is missing or its pod
// side is not in p.NetNS, say after the pod netns was made anew, or an
// address changed) it deletes the veth and makes it again.
func (h *Host) SetupPod(p Pod) error {
	if err := p.validate(); err != nil {
		return err
	}
	podNS, err := netns.GetFromPath(p.NetNS)
	if err != nil {
		return fmt.Errorf("pod netns %s: %w", p.NetNS, err)
	}
	defer podNS.Close()
	pod, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("pod netns %s: netlink: %w", p.NetNS, err)
	}
	defer pod.Close()

	ok, err := h.podReady(pod, p)
	if err != nil {
		return fmt.Errorf("pod netns %s, veth %s: %w", p.NetNS, p.HostVeth, err)
	}
	if ok {
		return nil
	}
	if err := h.createPod(podNS, pod, p); err != nil {
		return fmt.Errorf("pod netns %s, veth %s: %w", p.NetNS, p.HostVeth, err)
	}
	return nil
}

// podReady tells whether the pod is fully set up; it brings the pod's
// loopback up on the way. The host routes are the last thing createPod
// adds, so their presence vouches for the steps that are not read back
// (the ping_group_range sysctl).
func (h *Host) podReady(pod *netlink.Handle, p Pod) (bool, error) {
	hostLink, err := linkByName(h.nl, p.HostVeth)
	if err != nil {
		return false, fmt.Errorf("read host veth: %w", err)
	}
	links, err := retryDump(pod.LinkList)
	if err != nil {
		return false, fmt.Errorf("list pod links: %w", err)
	}
	var eth0 netlink.Link
	for _, l := range links {
		switch l.Attrs().Name {
		case "lo":
			if !isUp(l) {
				if err := pod.LinkSetUp(l); err != nil {
					return false, fmt.Errorf("loopback up: %w", err)
				}
			}
		case PodInterface:
			eth0 = l
		}
	}
	if hostLink == nil || eth0 == nil || hostLink.Type() != "veth" || eth0.Type() != "veth" ||
		!isUp(hostLink) || !isUp(eth0) ||
		hostLink.Attrs().ParentIndex != eth0.Attrs().Index || eth0.Attrs().ParentIndex != hostLink.Attrs().Index {
		return false, nil
	}
	if hostLink.Attrs().OperState != netlink.OperUp || eth0.Attrs().OperState != netlink.OperUp {
		// Set up a moment ago; see waitOperUp.
		if err := waitOperUp(h.nl, pod, hostLink.Attrs().Index, eth0.Attrs().Index); err != nil {
			return false, err
		}
	}

	// Pod side: exactly the pod's addresses (besides link-local ones) and
	// the default routes.
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return pod.AddrList(eth0, netlink.FAMILY_ALL) })
	if err != nil {
		return false, fmt.Errorf("list pod addresses: %w", err)
	}
	want := map[netip.Prefix]bool{netip.PrefixFrom(p.IPv6, 128): false}
	if p.IPv4.IsValid() {
		want[netip.PrefixFrom(p.IPv4, 32)] = false
	}
	for _, a := range addrs {
		pf := toPrefix(a.IPNet)
		if pf.Addr().IsLinkLocalUnicast() {
			continue
		}
		if _, ok := want[pf]; !ok {
			return false, nil
		}
		want[pf] = true
	}
	for _, found := range want {
		if !found {
			return false, nil
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return pod.RouteList(eth0, netlink.FAMILY_ALL) })
	if err != nil {
		return false, fmt.Errorf("list pod routes: %w", err)
	}
	var v6Default, v4Link, v4Default bool
	for _, r := range routes {
		dst, gw := routeDst(r), toAddr(r.Gw)
		switch {
		case dst.Bits() == 0 && dst.Addr().Is6() && gw == HostGatewayIPv6:
			v6Default = true
		case dst == netip.PrefixFrom(HostGatewayIPv4, 32) && !gw.IsValid():
			v4Link = true
		case dst.Bits() == 0 && dst.Addr().Is4() && gw == HostGatewayIPv4:
			v4Default = true
		}
	}
	if !v6Default || p.IPv4.IsValid() && !(v4Link && v4Default) {
		return false, nil
	}

	// Host side: the gateway addresses and the routes to the pod.
	addrs, err = retryDump(func() ([]netlink.Addr, error) { return h.nl.AddrList(hostLink, netlink.FAMILY_ALL) })
	if err != nil {
		return false, fmt.Errorf("list host veth addresses: %w", err)
	}
	var gw6, gw4 bool
	for _, a := range addrs {
		switch toPrefix(a.IPNet) {
		case netip.PrefixFrom(HostGatewayIPv6, 64):
			gw6 = true
		case netip.PrefixFrom(HostGatewayIPv4, 32):
			gw4 = true
		}
	}
	if !gw6 || !gw4 {
		return false, nil
	}
	for _, a := range []netip.Addr{p.IPv6, p.IPv4} {
		if !a.IsValid() {
			continue
		}
		if !h.hasPodRoute(a, hostLink.Attrs().Index) {
			return false, nil
		}
	}
	return true, nil
}

// hasPodRoute tells whether the route the kernel uses to reach a is the
// skiff host route to a through the veth with index dev.
func (h *Host) hasPodRoute(a netip.Addr, dev int) bool {
	rs, err := h.nl.RouteGetWithOptions(a.AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		// No usable route (unreachable, prohibit, none at all): not set
		// up. Any other trouble shows again when setting up.
		return false
	}
	for _, r := range rs {
		if routeDst(r) == netip.PrefixFrom(a, a.BitLen()) && r.LinkIndex == dev && r.Protocol == RouteProtocol {
			return true
		}
	}
	return false
}

// createPod makes the pod's veth afresh. On failure it removes what it made,
// so the next SetupPod starts clean.
func (h *Host) createPod(podNS netns.NsHandle, pod *netlink.Handle, p Pod) (err error) {
	// eth0 in the pod netns is skiff's; an old one (whose peer may be any
	// old host veth) goes, and so does an old host veth.
	if err := deleteLink(pod, PodInterface); err != nil {
		return fmt.Errorf("delete old pod eth0: %w", err)
	}
	if err := deleteLink(h.nl, p.HostVeth); err != nil {
		return fmt.Errorf("delete old host veth: %w", err)
	}

	// Created with its peer right in the pod netns: no eth0 ever exists in
	// the host netns, where that name may be taken.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostVeth},
		PeerName:      PodInterface,
		PeerNamespace: netlink.NsFd(podNS),
	}
	if err := h.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth with eth0 in pod netns: %w", err)
	}
	defer func() {
		if err != nil {
			h.nl.LinkDel(veth)
		}
	}()
	eth0, err := pod.LinkByName(PodInterface)
	if err != nil {
		return fmt.Errorf("find eth0 in pod netns: %w", err)
	}

	// Pod side. Routes need the link up.
	if err := pod.AddrAdd(eth0, &netlink.Addr{IPNet: hostNet(p.IPv6), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("pod eth0: add %s: %w", p.IPv6, err)
	}
	if p.IPv4.IsValid() {
		if err := pod.AddrAdd(eth0, &netlink.Addr{IPNet: hostNet(p.IPv4)}); err != nil {
			return fmt.Errorf("pod eth0: add %s: %w", p.IPv4, err)
		}
	}
	if err := pod.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("pod eth0: up: %w", err)
	}
	idx := eth0.Attrs().Index
	podRoutes := []*netlink.Route{{LinkIndex: idx, Dst: ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)), Gw: HostGatewayIPv6.AsSlice()}}
	if p.IPv4.IsValid() {
		podRoutes = append(podRoutes,
			&netlink.Route{LinkIndex: idx, Dst: hostNet(HostGatewayIPv4), Scope: netlink.SCOPE_LINK},
			&netlink.Route{LinkIndex: idx, Dst: ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: HostGatewayIPv4.AsSlice()})
	}
	for _, r := range podRoutes {
		if err := pod.RouteAdd(r); err != nil {
			return fmt.Errorf("pod eth0: add route %s: %w", r, err)
		}
	}
	if err := inNetNS(podNS, func() error {
		_, err := sysctl("net/ipv4/ping_group_range", pingGroupRange)
		return err
	}); err != nil {
		return fmt.Errorf("pod sysctl net.ipv4.ping_group_range: %w", err)
	}

	// Host side: the pod's gateways, then the routes to the pod, last.
	for _, a := range []*netlink.Addr{
		{IPNet: ipNet(netip.PrefixFrom(HostGatewayIPv6, 64)), Flags: unix.IFA_F_NODAD},
		{IPNet: hostNet(HostGatewayIPv4)},
	} {
		if err := h.nl.AddrAdd(veth, a); err != nil {
			return fmt.Errorf("host veth: add %s: %w", a.IPNet, err)
		}
	}
	if p.Owner != "" {
		if err := h.nl.LinkSetAlias(veth, OwnerAlias(p.Owner)); err != nil {
			return fmt.Errorf("host veth: alias: %w", err)
		}
	}
	if err := h.nl.LinkSetUp(veth); err != nil {
		return fmt.Errorf("host veth: up: %w", err)
	}
	for _, a := range []netip.Addr{p.IPv6, p.IPv4} {
		if !a.IsValid() {
			continue
		}
		r := &netlink.Route{LinkIndex: veth.Index, Dst: hostNet(a), Protocol: RouteProtocol}
		if a.Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		// Replace: a route to the same address through an old veth is
		// stale.
		if err := h.nl.RouteReplace(r); err != nil {
			return fmt.Errorf("host: add route to %s: %w", a, err)
		}
	}
	return waitOperUp(h.nl, pod, veth.Index, idx)
}

// waitOperUp waits until the veth's two ends are operationally up. A link
// set up is not ready at once: until the kernel's linkwatch work has seen
// its carrier, the link drops every packet it sends (its queueing
// discipline is still noop), and IPv6 has not added its multicast route, so
// neighbour discovery to it fails. Linkwatch runs at once for a veth whose
// index differs from its peer's, but up to a second late when they are the
// same (as for the first veth between two new namespaces, both index 2);
// the pod's first packets would be lost and its first connection take a
// SYN retransmit (1s) longer.
func waitOperUp(host, pod *netlink.Handle, hostIndex, podIndex int) error {
	deadline := time.Now().Add(3 * time.Second)
	pause := 20 * time.Microsecond
	for _, end := range []struct {
		nl    *netlink.Handle
		index int
		name  string
	}{{host, hostIndex, "host veth"}, {pod, podIndex, "pod eth0"}} {
		for {
			l, err := end.nl.LinkByIndex(end.index)
			if err != nil {
				return fmt.Errorf("wait for %s to be up: %w", end.name, err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is %s, not up, 3s after being set up", end.name, l.Attrs().OperState)
			}
			time.Sleep(pause)
			pause = min(2*pause, 10*time.Millisecond)
		}
	}
	return nil
}

// TeardownPod deletes a pod's host veth; its pod side and the host routes
// to the pod go with it. A missing veth is no error.
func (h *Host) TeardownPod(hostVeth string) error {
	if err := deleteLink(h.nl, hostVeth); err != nil {
		return fmt.Errorf("teardown veth %s: %w", hostVeth, err)
	}
	return nil
}

// deleteLink deletes the link name if it exists.
func deleteLink(nl *netlink.Handle, name string) error {
	l, err := linkByName(nl, name)
	if err != nil || l == nil {
		return err
	}
	if err := nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// routeDst is a route's destination; the kernel leaves it out of default
// routes.
func routeDst(r netlink.Route) netip.Prefix {
	if r.Dst != nil {
		return toPrefix(r.Dst)
	}
	if r.Family == unix.AF_INET {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}
