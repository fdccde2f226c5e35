// Package ipam is the addressing plan of pod networking, as pure
// functions: the cluster's pod prefix, one /64 per node with a random
// subnet id, one address per pod with a random interface id.
//
// Randomness instead of counters means no allocation state to keep or
// lose: an address is taken exactly while an object holds it (a Node's
// status.podPrefix, a Pod's status.ip), and released when the object goes.
// Collisions are improbable (2^64 interface ids per node) and checked
// anyway against what is taken.
package ipam

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// NodeBits is the prefix length of a node's pod subnet.
const NodeBits = 64

// MaxClusterBits is the longest cluster prefix accepted: a /56 leaves 256
// node subnets, fewer is too small to be worth having.
const MaxClusterBits = 56

var ula = netip.MustParsePrefix("fc00::/7")
var globalUnicast = netip.MustParsePrefix("2000::/3")

// ParseClusterPrefix validates a cluster pod prefix given by an operator
// (--pod-prefix): an IPv6 prefix, unique local (fc00::/7) or global
// unicast (2000::/3), /56 or larger, written with its host bits zero.
func ParseClusterPrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, fmt.Errorf("pod prefix %q is an address, not a prefix: give its length too, e.g. %s/48", s, a)
		}
		return netip.Prefix{}, fmt.Errorf("pod prefix %q is not an IP prefix (want an IPv6 prefix such as fd12:3456:789a::/48)", s)
	}
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("pod prefix %s is not IPv6: pod networking is IPv6-only (IPv4 is only used for egress, from a node-local range)", s)
	}
	if !ula.Contains(p.Addr()) && !globalUnicast.Contains(p.Addr()) {
		return netip.Prefix{}, fmt.Errorf("pod prefix %s is neither unique local (fc00::/7) nor global unicast (2000::/3)", s)
	}
	if p.Bits() > MaxClusterBits {
		return netip.Prefix{}, fmt.Errorf("pod prefix %s is too small: give a /%d or larger (a /48 holds 65,536 node subnets of /64, a /56 holds 256)", s, MaxClusterBits)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("pod prefix %s has host bits set: did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// RandomULA returns a random unique local /48 as RFC 4193 describes:
// fd00::/8 with a random 40-bit global id.
func RandomULA() netip.Prefix {
	var a [16]byte
	a[0] = 0xfd
	rand.Read(a[1:6])
	return netip.PrefixFrom(netip.AddrFrom16(a), 48)
}

// ErrFull means no free subnet or address was found.
var ErrFull = errors.New("no free address")

// tries bounds the random draws before giving up: with a /48 half full a
// draw fails with probability 1/2, so 64 failures in a row mean it is
// practically full.
const tries = 64

// NodeSubnet picks a /64 for a node inside cluster with a random subnet
// id, not in taken.
func NodeSubnet(cluster netip.Prefix, taken map[netip.Prefix]bool) (netip.Prefix, error) {
	free := 1 << (NodeBits - cluster.Bits())
	if len(taken) >= free {
		return netip.Prefix{}, fmt.Errorf("pod prefix %s: all %d node subnets are taken: %w", cluster, free, ErrFull)
	}
	for range tries {
		a := cluster.Addr().As16()
		var r [8]byte
		rand.Read(r[:])
		id := binary.BigEndian.Uint64(r[:]) & (uint64(free) - 1)
		hi := binary.BigEndian.Uint64(a[:8]) | id
		binary.BigEndian.PutUint64(a[:8], hi)
		binary.BigEndian.PutUint64(a[8:], 0)
		p := netip.PrefixFrom(netip.AddrFrom16(a), NodeBits)
		if !taken[p] {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("pod prefix %s: no free node subnet after %d tries: %w", cluster, tries, ErrFull)
}

// PodAddress picks an address for a pod inside its node's /64 with a
// random interface id, not in taken. Interface ids 0 (the subnet-router
// anycast address) and those below 0x10000 are left out, so a pod never
// looks like ::1 or a hand-assigned address.
func PodAddress(node netip.Prefix, taken map[netip.Addr]bool) (netip.Addr, error) {
	if !node.Addr().Is6() || node.Bits() != NodeBits {
		return netip.Addr{}, fmt.Errorf("node subnet %s is not an IPv6 /%d", node, NodeBits)
	}
	for range tries {
		a := node.Addr().As16()
		rand.Read(a[8:])
		if binary.BigEndian.Uint64(a[8:]) < 0x10000 {
			continue
		}
		addr := netip.AddrFrom16(a)
		if !taken[addr] {
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("node subnet %s: no free address after %d tries: %w", node, tries, ErrFull)
}
