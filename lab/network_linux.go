package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The lab's IPv4 network: the outside namespace is the "internet" and
// every node's default IPv4 gateway.
var (
	// OutsideIPv4 is the outside namespace's only address.
	OutsideIPv4 = netip.MustParseAddr("192.0.2.1")
	ipv4Net     = netip.MustParsePrefix("192.0.2.0/24")
)

// AgentPort is the port of each node's agent API, on its underlay address.
const AgentPort = 7444

// MaxNodes bounds the node numbers of one lab: node i has 192.0.2.(10+i).
const MaxNodes = 244

// randomUnderlay returns a random unique local /64: fdXX:XXXX:XXXX:1::/64.
func randomUnderlay() (netip.Prefix, error) {
	var b [16]byte
	b[0] = 0xfd
	if _, err := rand.Read(b[1:6]); err != nil {
		return netip.Prefix{}, err
	}
	b[7] = 1
	return netip.PrefixFrom(netip.AddrFrom16(b), 64), nil
}

// hostAddr is address "::N" of the /64 p, N written in decimal digits
// (node 1's ::11 reads like its 192.0.2.11).
func hostAddr(p netip.Prefix, n int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s%d", p.Addr(), n))
}

// nodeIPv4 is node i's IPv4 address.
func nodeIPv4(i int) netip.Addr {
	a := ipv4Net.Addr().As4()
	a[3] = byte(10 + i)
	return netip.AddrFrom4(a)
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// makeBridge creates the lab's bridge in the root namespace with the
// underlay's ::1, no DAD, no multicast snooping (neighbour discovery is
// flooded, as on a dumb switch), and brings it up.
func makeBridge(name string, addr netip.Addr) error {
	snoop := false
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs(), MulticastSnooping: &snoop}
	br.Name = name
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	// Its own link-local address need not wait for DAD either.
	writeSysctl("net/ipv6/conf/"+name+"/accept_dad", "0")
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(addr, 64), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("bridge %s: address %s: %w", name, addr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %s: up: %w", name, err)
	}
	return nil
}

// hostSetup is how a namespace is configured as a host on the bridge.
type hostSetup struct {
	sysctls  [][2]string    // in the namespace, before its eth0 exists
	addrs    []netip.Prefix // on eth0, without DAD
	gateway4 netip.Addr     // default IPv4 route, if valid
}

// plugHost connects the namespace at nsPath to the bridge: a veth named
// hostSide in the root namespace, attached to the bridge, and its peer
// eth0 in the namespace, configured by s. lo comes up too.
func plugHost(nsPath, hostSide string, bridge string, s hostSetup) error {
	if len(s.sysctls) > 0 {
		err := inNetNS(nsPath, func() error {
			for _, kv := range s.sysctls {
				if err := writeSysctl(kv[0], kv[1]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("%s: %w", nsPath, err)
	}
	defer ns.Close()
	veth := netlink.NewVeth(netlink.NewLinkAttrs())
	veth.Name = hostSide
	veth.MasterIndex = br.Attrs().Index
	veth.PeerName = "eth0"
	veth.PeerNamespace = netlink.NsFd(int(ns))
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: %w", hostSide, err)
	}
	host, err := netlink.LinkByName(hostSide)
	if err != nil {
		return fmt.Errorf("veth %s: %w", hostSide, err)
	}
	// A bridge port needs no addresses of its own.
	writeSysctl("net/ipv6/conf/"+hostSide+"/disable_ipv6", "1")
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("veth %s: up: %w", hostSide, err)
	}

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", name, nsPath, err)
		}
		if name == "eth0" {
			for _, p := range s.addrs {
				if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p.Addr(), p.Bits()), Flags: unix.IFA_F_NODAD}); err != nil {
					return fmt.Errorf("eth0 in %s: address %s: %w", nsPath, p, err)
				}
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s in %s: up: %w", name, nsPath, err)
		}
	}
	if s.gateway4.IsValid() {
		r := &netlink.Route{Dst: ipNet(netip.IPv4Unspecified(), 0), Gw: s.gateway4.AsSlice()}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s in %s: %w", s.gateway4, nsPath, err)
		}
	}
	return nil
}

// deleteLink deletes a link of the root namespace; a missing one is no
// error.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("link %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}
