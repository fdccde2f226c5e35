package netns

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SyncRoutes makes the node routes among the host's skiff routes exactly:
// an unreachable route for own, the node's pod prefix (so addresses in it
// that no pod has are refused here rather than sent out the default route;
// a zero own means none), and, for each peer, its prefix via its underlay
// address; the kernel picks the device the address is on-link on. It
// deletes the node routes not listed and leaves the per-pod routes alone.
//
// A peer whose route cannot be added (its via address is not on-link, say)
// makes an error naming it; the others are programmed all the same. The
// changes are returned in any case.
func (h *Host) SyncRoutes(own netip.Prefix, peers []Route) (Changes, error) {
	var ch Changes
	type want struct {
		route *netlink.Route
		desc  string // for errors: "node n2: route 2001:db8:2::/64 via fd00::2"
	}
	wants := map[netip.Prefix]want{}
	var errs []error
	if own.IsValid() {
		own = own.Masked()
		wants[own] = want{
			route: &netlink.Route{Dst: ipNet(own), Type: unix.RTN_UNREACHABLE, Protocol: RouteProtocol},
			desc:  "own prefix " + own.String(),
		}
	}
	for _, p := range peers {
		desc := fmt.Sprintf("node %s: route %s via %s", p.Node, p.Prefix, p.Via)
		pf := p.Prefix.Masked()
		switch {
		case !pf.IsValid() || !p.Via.IsValid():
			errs = append(errs, fmt.Errorf("%s: need a prefix and a via address", desc))
			continue
		case pf.Addr().Is4() != p.Via.Is4():
			errs = append(errs, fmt.Errorf("%s: prefix and via address are of different IP versions", desc))
			continue
		}
		if other, dup := wants[pf]; dup {
			errs = append(errs, fmt.Errorf("%s: prefix taken by %s", desc, other.desc))
			continue
		}
		wants[pf] = want{
			route: &netlink.Route{Dst: ipNet(pf), Gw: p.Via.Unmap().AsSlice(), Protocol: RouteProtocol},
			desc:  desc,
		}
	}

	names, err := h.linkNames()
	if err != nil {
		return ch, err
	}
	routes, err := h.skiffRoutes()
	if err != nil {
		return ch, err
	}
	// The node routes there are: either right (kept), or stale, to be
	// replaced by the wanted route of the same prefix or deleted.
	kept := map[netip.Prefix]bool{}
	stale := map[netip.Prefix][]netlink.Route{}
	for _, r := range routes {
		if isPodRoute(r, names) {
			continue
		}
		dst := routeDst(r)
		if w, ok := wants[dst]; ok && !kept[dst] && sameRoute(r, w.route) {
			kept[dst] = true
			continue
		}
		stale[dst] = append(stale[dst], r)
	}

	prefixes := make([]netip.Prefix, 0, len(wants))
	for pf := range wants {
		prefixes = append(prefixes, pf)
	}
	slices.SortFunc(prefixes, comparePrefix)
	for _, pf := range prefixes {
		if kept[pf] {
			continue
		}
		w := wants[pf]
		var err error
		if old := stale[pf]; len(old) > 0 {
			// Replace rather than delete and add: no moment without a
			// route to the peer. The same metric makes it replace that
			// route.
			w.route.Priority = old[0].Priority
			if err = h.nl.RouteReplace(w.route); err == nil {
				ch.Removed = append(ch.Removed, h.hostRoute(old[0], names))
				stale[pf] = old[1:]
			}
		} else {
			err = h.nl.RouteAdd(w.route)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w.desc, err))
			continue
		}
		added := h.hostRoute(*w.route, names)
		if added.Via.IsValid() {
			// The device is the kernel's pick.
			if rs, err := h.nl.RouteGetWithOptions(w.route.Dst.IP, &netlink.RouteGetOptions{FIBMatch: true}); err == nil && len(rs) == 1 {
				added = h.hostRoute(rs[0], names)
			}
		}
		ch.Added = append(ch.Added, added)
	}
	for _, pf := range slices.SortedFunc(maps.Keys(stale), comparePrefix) {
		for _, r := range stale[pf] {
			if err := h.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", h.hostRoute(r, names), err))
				continue
			}
			ch.Removed = append(ch.Removed, h.hostRoute(r, names))
		}
	}
	if len(errs) > 0 {
		return ch, fmt.Errorf("%s: sync routes: %w", h, errors.Join(errs...))
	}
	return ch, nil
}

// Sweep deletes the skv* links of owner (or of no owner) that keep does
// not keep, and skiff's per-pod routes (/128 and /32, no gateway) whose
// device is not a kept skv* link. The agent calls it at start with the
// veths of the pods it still has. Veths another node owns (agents sharing
// one network namespace) are left alone, and so are their routes.
func (h *Host) Sweep(owner string, keep func(hostVeth string) bool) error {
	links, err := retryDump(h.nl.LinkList)
	if err != nil {
		return fmt.Errorf("%s: sweep: list links: %w", h, err)
	}
	var errs []error
	kept := map[int]string{}
	for _, l := range links {
		name := l.Attrs().Name
		if !strings.HasPrefix(name, VethPrefix) {
			continue
		}
		alias := l.Attrs().Alias
		if keep(name) || strings.HasPrefix(alias, OwnerAlias("")) && alias != OwnerAlias(owner) {
			kept[l.Attrs().Index] = name
			continue
		}
		if err := h.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", name, err))
		}
	}
	routes, err := h.skiffRoutes()
	if err != nil {
		return fmt.Errorf("%s: sweep: %w", h, err)
	}
	for _, r := range routes {
		if !isPodRouteShape(r) || kept[r.LinkIndex] != "" {
			continue
		}
		if err := h.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", routeDst(r), err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: sweep: %w", h, errors.Join(errs...))
	}
	return nil
}

// skiffRoutes lists the main table's routes with RouteProtocol, both IP
// versions.
func (h *Host) skiffRoutes() ([]netlink.Route, error) {
	rs, err := retryDump(func() ([]netlink.Route, error) {
		return h.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return rs, nil
}

// linkNames maps the host's link indexes to names.
func (h *Host) linkNames() (map[int]string, error) {
	links, err := retryDump(h.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("%s: list links: %w", h, err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return names, nil
}

// isPodRouteShape tells whether a skiff route looks like a per-pod route:
// unicast to one address, straight out of a device.
func isPodRouteShape(r netlink.Route) bool {
	return r.Type == unix.RTN_UNICAST && r.Gw == nil && len(r.MultiPath) == 0 && r.Dst != nil && routeDst(r).IsSingleIP()
}

// isPodRoute tells a per-pod route (SetupPod's) from a node route
// (SyncRoutes'): it is pod-route-shaped and goes out of a skv* veth.
func isPodRoute(r netlink.Route, names map[int]string) bool {
	return isPodRouteShape(r) && strings.HasPrefix(names[r.LinkIndex], VethPrefix)
}

// sameRoute tells whether the route r in the kernel is what want asks for.
func sameRoute(r netlink.Route, want *netlink.Route) bool {
	return r.Type == max(want.Type, unix.RTN_UNICAST) && len(r.MultiPath) == 0 && toAddr(r.Gw) == toAddr(want.Gw)
}

func (h *Host) hostRoute(r netlink.Route, names map[int]string) HostRoute {
	hr := HostRoute{
		Type:   routeType(r.Type),
		Dst:    routeDst(r),
		Via:    toAddr(r.Gw),
		Dev:    names[r.LinkIndex],
		Metric: r.Priority,
	}
	if r.Scope == netlink.SCOPE_LINK && hr.Dst.Addr().Is4() {
		hr.Scope = "link"
	}
	return hr
}

func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST, unix.RTN_UNSPEC:
		return ""
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_LOCAL:
		return "local"
	}
	return fmt.Sprintf("type%d", t)
}

// comparePrefix orders IPv6 before IPv4, then by address and length.
func comparePrefix(a, b netip.Prefix) int {
	if a.Addr().Is4() != b.Addr().Is4() {
		if a.Addr().Is6() {
			return -1
		}
		return 1
	}
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
