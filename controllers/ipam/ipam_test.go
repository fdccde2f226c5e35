package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseClusterPrefix(t *testing.T) {
	good := []string{"fd12:3456:789a::/48", "fd00:1::/56", "2001:db8::/48", "2a01:4f8::/40"}
	for _, s := range good {
		if _, err := ParseClusterPrefix(s); err != nil {
			t.Errorf("ParseClusterPrefix(%q) = %v", s, err)
		}
	}
	bad := []struct{ in, want string }{
		{"10.0.0.0/8", "not IPv6"},
		{"::ffff:10.0.0.0/104", "not IPv6"},
		{"fe80::/48", "neither unique local"},
		{"ff02::/16", "neither unique local"},
		{"::1/128", "neither unique local"},
		{"fd12:3456:789a::/64", "too small"},
		{"fd12:3456:789a:1::/60", "too small"},
		{"fd12:3456:789a::", "an address, not a prefix"},
		{"fd12:3456:789a::1/48", "host bits set: did you mean fd12:3456:789a::/48"},
		{"banana", "not an IP prefix"},
		{"", "not an IP prefix"},
	}
	for _, tt := range bad {
		_, err := ParseClusterPrefix(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseClusterPrefix(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestRandomULA(t *testing.T) {
	a, b := RandomULA(), RandomULA()
	for _, p := range []netip.Prefix{a, b} {
		if _, err := ParseClusterPrefix(p.String()); err != nil || p.Bits() != 48 || p.Addr().As16()[0] != 0xfd {
			t.Errorf("RandomULA() = %s (%v), want a valid fdXX::/48", p, err)
		}
	}
	if a == b {
		t.Errorf("two RandomULA() are both %s", a)
	}
}

func TestNodeSubnetFillsAndStaysInside(t *testing.T) {
	cluster := netip.MustParsePrefix("fd00:1:2:ff00::/56")
	taken := map[netip.Prefix]bool{}
	for range 256 {
		p, err := NodeSubnet(cluster, taken)
		if errors.Is(err, ErrFull) {
			// Random draws may give up a little before the last ones.
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Bits() != 64 || !cluster.Contains(p.Addr()) || taken[p] {
			t.Fatalf("NodeSubnet = %s: outside %s, not a /64, or taken", p, cluster)
		}
		taken[p] = true
	}
	if len(taken) < 200 {
		t.Errorf("only %d of 256 subnets handed out before giving up", len(taken))
	}
	for i := range 256 {
		a := cluster.Addr().As16()
		a[7] = byte(i)
		taken[netip.PrefixFrom(netip.AddrFrom16(a), 64)] = true
	}
	if _, err := NodeSubnet(cluster, taken); !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "all 256 node subnets are taken") {
		t.Errorf("NodeSubnet of a full /56 = %v, want all 256 taken", err)
	}
}

func TestPodAddress(t *testing.T) {
	node := netip.MustParsePrefix("fd00:1:2:3::/64")
	taken := map[netip.Addr]bool{}
	for range 1000 {
		a, err := PodAddress(node, taken)
		if err != nil {
			t.Fatal(err)
		}
		if !node.Contains(a) || taken[a] {
			t.Fatalf("PodAddress = %s: outside %s or taken", a, node)
		}
		taken[a] = true
	}
	if _, err := PodAddress(netip.MustParsePrefix("fd00::/48"), nil); err == nil {
		t.Error("PodAddress in a /48 succeeded")
	}
}
