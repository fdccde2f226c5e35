package netns

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// State reads what skiff has on the host: the skv* links, the routes with
// RouteProtocol, table ip skiff and the forwarding switches.
func (h *Host) State() (State, error) {
	var s State
	links, err := retryDump(h.nl.LinkList)
	if err != nil {
		return s, fmt.Errorf("%s: list links: %w", h, err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		if strings.HasPrefix(a.Name, VethPrefix) {
			s.Links = append(s.Links, Link{Name: a.Name, Index: a.Index, Up: isUp(l)})
		}
	}
	slices.SortFunc(s.Links, func(a, b Link) int { return strings.Compare(a.Name, b.Name) })

	routes, err := h.skiffRoutes()
	if err != nil {
		return s, fmt.Errorf("%s: %w", h, err)
	}
	for _, r := range routes {
		s.Routes = append(s.Routes, h.hostRoute(r, names))
	}
	slices.SortFunc(s.Routes, func(a, b HostRoute) int {
		if c := comparePrefix(a.Dst, b.Dst); c != 0 {
			return c
		}
		return strings.Compare(a.String(), b.String())
	})

	for _, f := range []struct {
		name string
		on   *bool
	}{{ipv6Forwarding, &s.IPv6Forwarding}, {ipv4Forwarding, &s.IPv4Forwarding}} {
		v, err := h.sysctl(f.name, "")
		if err != nil {
			return s, fmt.Errorf("%s: read %s: %w", h, f.name, err)
		}
		*f.on = v == "1"
	}

	c, err := h.nft()
	if err != nil {
		return s, fmt.Errorf("%s: nftables: %w", h, err)
	}
	table, err := c.ListTableOfFamily(nftTable, nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("%s: nftables: list table ip %s: %w", h, nftTable, err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return s, fmt.Errorf("%s: nftables: list chains: %w", h, err)
	}
	var tc []tableChain
	for _, ch := range chains {
		if ch.Table.Name != nftTable {
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return s, fmt.Errorf("%s: nftables: list chain %s: %w", h, ch.Name, err)
		}
		tc = append(tc, tableChain{ch, rules})
		if !s.EgressRange.IsValid() {
			for _, r := range rules {
				if pf, ok := masqueradeRange(r.Exprs); ok {
					s.EgressRange = pf
					break
				}
			}
		}
	}
	s.NFT = renderTable(table, tc)
	return s, nil
}
