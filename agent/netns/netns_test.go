package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	ownPrefix = netip.MustParsePrefix("2001:db8:1::/64")
	egress    = netip.MustParsePrefix("10.127.0.0/16")
)

func TestVethName(t *testing.T) {
	got := VethName("default", "web")
	if len(got) != 13 || !strings.HasPrefix(got, "skv") {
		t.Fatalf("VethName = %q, want skv and 10 hex digits", got)
	}
	if got == VethName("default", "web2") || got != VethName("default", "web") {
		t.Fatalf("VethName is not a function of namespace/name")
	}
	// sha256("default/web") starts with these 10 hex digits.
	if got != "skv82b3ade9d0" {
		t.Errorf("VethName(default, web) = %s, want skv82b3ade9d0", got)
	}
}

func TestHostRouteString(t *testing.T) {
	for _, tc := range []struct {
		r    HostRoute
		want string
	}{
		{HostRoute{Dst: netip.MustParsePrefix("2001:db8:1::5/128"), Dev: "skv0123456789", Metric: 1024}, "2001:db8:1::5 dev skv0123456789 proto 92 metric 1024"},
		{HostRoute{Dst: netip.MustParsePrefix("10.127.0.5/32"), Dev: "skv0123456789", Scope: "link"}, "10.127.0.5 dev skv0123456789 proto 92 scope link"},
		{HostRoute{Type: "unreachable", Dst: ownPrefix, Dev: "lo", Metric: 1024}, "unreachable 2001:db8:1::/64 dev lo proto 92 metric 1024"},
		{HostRoute{Dst: netip.MustParsePrefix("2001:db8:2::/64"), Via: netip.MustParseAddr("fd00::2"), Dev: "ul0"}, "2001:db8:2::/64 via fd00::2 dev ul0 proto 92"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestPrefixBits(t *testing.T) {
	for _, tc := range []struct {
		mask []byte
		want int
	}{
		{[]byte{255, 255, 0, 0}, 16},
		{[]byte{255, 255, 255, 255}, 32},
		{[]byte{255, 240, 0, 0}, 12},
		{[]byte{0, 0, 0, 0}, 0},
		{[]byte{255, 0, 255, 0}, -1},
		{[]byte{255, 13, 0, 0}, -1},
	} {
		if got := prefixBits(tc.mask); got != tc.want {
			t.Errorf("prefixBits(%v) = %d, want %d", tc.mask, got, tc.want)
		}
	}
}

func TestPodValidate(t *testing.T) {
	good := Pod{NetNS: "/x", HostVeth: VethName("a", "b"), IPv6: netip.MustParseAddr("2001:db8::1")}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]Pod{
		"no netns":      {HostVeth: good.HostVeth, IPv6: good.IPv6},
		"bad veth":      {NetNS: "/x", HostVeth: "eth7", IPv6: good.IPv6},
		"long veth":     {NetNS: "/x", HostVeth: "skv0123456789abcdef", IPv6: good.IPv6},
		"no IPv6":       {NetNS: "/x", HostVeth: good.HostVeth},
		"IPv4 as IPv6":  {NetNS: "/x", HostVeth: good.HostVeth, IPv6: netip.MustParseAddr("10.0.0.1")},
		"IPv6 as IPv4":  {NetNS: "/x", HostVeth: good.HostVeth, IPv6: good.IPv6, IPv4: good.IPv6},
		"link-local v6": {NetNS: "/x", HostVeth: good.HostVeth, IPv6: netip.MustParseAddr("fe80::5")},
	} {
		if err := p.validate(); err == nil {
			t.Errorf("%s: validate passed %+v", name, p)
		}
	}
}

// Two pods on one node talk over IPv6; the node reaches them; SetupPod
// again changes nothing; TeardownPod leaves nothing behind.
func TestPodsOnOneNode(t *testing.T) {
	requireRoot(t)
	hostNS := newNetNS(t)
	h := openHost(t, hostNS)
	if err := h.EnsureNode(NodeConfig{EgressRange: egress}); err != nil {
		t.Fatal(err)
	}
	a := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "a"), IPv6: netip.MustParseAddr("2001:db8:1::a"), IPv4: netip.MustParseAddr("10.127.0.10")}
	b := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "b"), IPv6: netip.MustParseAddr("2001:db8:1::b")}
	for _, p := range []Pod{a, b} {
		if err := h.SetupPod(p); err != nil {
			t.Fatal(err)
		}
	}

	if remote, err := connect(a.NetNS, b.NetNS, b.IPv6); err != nil {
		t.Fatalf("pod a -> pod b over IPv6: %v", err)
	} else if remote != a.IPv6 {
		t.Errorf("pod b saw the connection from %s, want pod a's %s", remote, a.IPv6)
	}
	if _, err := connect(hostNS, a.NetNS, a.IPv6); err != nil {
		t.Fatalf("host -> pod a over IPv6: %v", err)
	}

	if _, err := connect(hostNS, a.NetNS, a.IPv4); err != nil {
		t.Fatalf("host -> pod a over IPv4: %v", err)
	}
	if got, err := inNSRead(a.NetNS, "/proc/sys/net/ipv4/ping_group_range"); err != nil || got != "0\t2147483647" {
		t.Errorf("pod a ping_group_range = %q, %v; want 0 2147483647", got, err)
	}
	if lo := podLinks(t, b.NetNS)["lo"]; lo == nil || !isUp(lo) {
		t.Errorf("pod b loopback not up")
	}

	// Again: nothing changes.
	before, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	eth0 := podLinks(t, a.NetNS)["eth0"].Attrs().Index
	for _, p := range []Pod{a, b} {
		if err := h.SetupPod(p); err != nil {
			t.Fatal(err)
		}
	}
	after, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	if before.String() != after.String() || podLinks(t, a.NetNS)["eth0"].Attrs().Index != eth0 {
		t.Errorf("SetupPod again changed things:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if len(after.Links) != 2 {
		t.Errorf("want 2 skv links, state:\n%s", after)
	}
	t.Logf("state with two pods:\n%s", after)

	for _, p := range []Pod{a, b} {
		if err := h.TeardownPod(p.HostVeth); err != nil {
			t.Fatal(err)
		}
		if err := h.TeardownPod(p.HostVeth); err != nil {
			t.Fatalf("TeardownPod again: %v", err)
		}
	}
	s, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Links) != 0 {
		t.Errorf("skv links left after teardown: %v", s.Links)
	}
	for _, r := range s.Routes {
		if r.Dst.IsSingleIP() {
			t.Errorf("pod route left after teardown: %s", r)
		}
	}
	for _, p := range []Pod{a, b} {
		if podLinks(t, p.NetNS)["eth0"] != nil {
			t.Errorf("pod netns %s still has eth0", p.NetNS)
		}
	}
}

// A pod whose netns was made anew, or whose address changed, is fixed by
// SetupPod.
func TestSetupPodRepairs(t *testing.T) {
	requireRoot(t)
	hostNS := newNetNS(t)
	h := openHost(t, hostNS)
	if err := h.EnsureNode(NodeConfig{}); err != nil {
		t.Fatal(err)
	}
	p := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "r"), IPv6: netip.MustParseAddr("2001:db8:1::7")}
	if err := h.SetupPod(p); err != nil {
		t.Fatal(err)
	}
	// A new netns for the pod: the old veth still exists in the host.
	p.NetNS = newPodNetNS(t)
	if err := h.SetupPod(p); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(hostNS, p.NetNS, p.IPv6); err != nil {
		t.Fatalf("host -> pod in its new netns: %v", err)
	}
	// A new address, and IPv4.
	p.IPv6, p.IPv4 = netip.MustParseAddr("2001:db8:1::8"), netip.MustParseAddr("10.127.0.8")
	if err := h.SetupPod(p); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(hostNS, p.NetNS, p.IPv6); err != nil {
		t.Fatalf("host -> pod at its new address: %v", err)
	}
	s, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	var dsts []string
	for _, r := range s.Routes {
		dsts = append(dsts, r.Dst.String())
	}
	if got := strings.Join(dsts, " "); got != "2001:db8:1::8/128 10.127.0.8/32" {
		t.Errorf("routes %s, want only the pod's new addresses; state:\n%s", got, s)
	}
}

// Pods on two nodes talk through plain routes over the underlay.
func TestPodsAcrossNodes(t *testing.T) {
	requireRoot(t)
	ns1, ns2 := newNetNS(t), newNetNS(t)
	link(t, ns1, ns2, "ul0", netip.MustParsePrefix("fd00::1/64"), netip.MustParsePrefix("fd00::2/64"))
	h1, h2 := openHost(t, ns1), openHost(t, ns2)
	own1, own2 := ownPrefix, netip.MustParsePrefix("2001:db8:2::/64")
	p1 := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "p1"), IPv6: netip.MustParseAddr("2001:db8:1::5")}
	p2 := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "p2"), IPv6: netip.MustParseAddr("2001:db8:2::5")}
	for _, n := range []struct {
		h    *Host
		own  netip.Prefix
		pod  Pod
		peer Route
	}{
		{h1, own1, p1, Route{Node: "n2", Prefix: own2, Via: netip.MustParseAddr("fd00::2")}},
		{h2, own2, p2, Route{Node: "n1", Prefix: own1, Via: netip.MustParseAddr("fd00::1")}},
	} {
		if err := n.h.EnsureNode(NodeConfig{}); err != nil {
			t.Fatal(err)
		}
		if err := n.h.SetupPod(n.pod); err != nil {
			t.Fatal(err)
		}
		ch, err := n.h.SyncRoutes(n.own, []Route{n.peer})
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.Added) != 2 || len(ch.Removed) != 0 {
			t.Errorf("SyncRoutes: want 2 routes added, got\n%s", ch)
		}
		t.Logf("SyncRoutes:\n%s", ch)
		// Again: nothing to do.
		if ch, err := n.h.SyncRoutes(n.own, []Route{n.peer}); err != nil || !ch.Empty() {
			t.Errorf("SyncRoutes again: %v\n%s", err, ch)
		}
	}
	if remote, err := connect(p1.NetNS, p2.NetNS, p2.IPv6); err != nil {
		t.Fatalf("pod on n1 -> pod on n2: %v", err)
	} else if remote != p1.IPv6 {
		t.Errorf("pod on n2 saw %s, want %s", remote, p1.IPv6)
	}
	// An address in n1's prefix that no pod has is refused, not sent out
	// of the node. (The first ICMP error can race the pod's connect
	// holding its socket; the SYN resent a second later then fails.)
	if err := dial(p1.NetNS, netip.MustParseAddrPort("[2001:db8:1::99]:80"), 3*time.Second); !errors.Is(err, unix.ENETUNREACH) && !errors.Is(err, unix.EHOSTUNREACH) {
		t.Errorf("connect to an unassigned address in the node's prefix: %v, want it refused as unreachable", err)
	} else {
		t.Logf("unassigned address: %v", err)
	}
	s, err := h1.State()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("n1:\n%s", s)
	wantRoutes := []string{
		"unreachable 2001:db8:1::/64 dev lo proto 92 metric 1024",
		"2001:db8:1::5 dev " + p1.HostVeth + " proto 92 metric 1024",
		"2001:db8:2::/64 via fd00::2 dev ul0 proto 92 metric 1024",
	}
	if got := routeStrings(s); strings.Join(got, "\n") != strings.Join(wantRoutes, "\n") {
		t.Errorf("n1 routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantRoutes, "\n"))
	}

	// A peer whose via is not on-link fails, named; the others go in.
	bad := Route{Node: "n3", Prefix: netip.MustParsePrefix("2001:db8:3::/64"), Via: netip.MustParseAddr("fd99::3")}
	good := Route{Node: "n4", Prefix: netip.MustParsePrefix("2001:db8:4::/64"), Via: netip.MustParseAddr("fd00::4")}
	ch, err := h1.SyncRoutes(own1, []Route{bad, good})
	if err == nil || !strings.Contains(err.Error(), "node n3") || !strings.Contains(err.Error(), "fd99::3") {
		t.Errorf("SyncRoutes with an unreachable via: error %v, want one naming n3 and fd99::3", err)
	} else {
		t.Logf("error: %v", err)
	}
	if strings.Contains(err.Error(), "n4") {
		t.Errorf("error names n4, whose route is fine: %v", err)
	}
	// n2's route went (no longer listed), n4's came.
	if len(ch.Added) != 1 || ch.Added[0].Dst != good.Prefix || len(ch.Removed) != 1 || ch.Removed[0].Dst != own2 {
		t.Errorf("changes:\n%s\nwant + n4's prefix, - n2's", ch)
	}
	if _, err := connectWithin(p1.NetNS, p2.NetNS, p2.IPv6, 500*time.Millisecond); err == nil {
		t.Errorf("pod on n1 still reaches n2 after its route was removed")
	}
	s, err = h1.State()
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes = []string{
		"unreachable 2001:db8:1::/64 dev lo proto 92 metric 1024",
		"2001:db8:1::5 dev " + p1.HostVeth + " proto 92 metric 1024",
		"2001:db8:4::/64 via fd00::4 dev ul0 proto 92 metric 1024",
	}
	if got := routeStrings(s); strings.Join(got, "\n") != strings.Join(wantRoutes, "\n") {
		t.Errorf("n1 routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantRoutes, "\n"))
	}
	// A peer moved to another via is replaced in place.
	good.Via = netip.MustParseAddr("fd00::44")
	ch, err = h1.SyncRoutes(own1, []Route{good})
	if err != nil || len(ch.Added) != 1 || ch.Added[0].Via != good.Via || len(ch.Removed) != 1 || ch.Removed[0].Via != netip.MustParseAddr("fd00::4") {
		t.Errorf("SyncRoutes with a new via: %v\n%s", err, ch)
	}
	// No own prefix and no peers: no node routes; the pod's stays.
	if _, err := h1.SyncRoutes(netip.Prefix{}, nil); err != nil {
		t.Fatal(err)
	}
	s, err = h1.State()
	if err != nil {
		t.Fatal(err)
	}
	if got := routeStrings(s); len(got) != 1 || !strings.Contains(got[0], p1.HostVeth) {
		t.Errorf("routes after syncing nothing: %q, want the pod's only", got)
	}
}

// A pod's IPv4 egress is masqueraded to the node's address.
func TestEgress(t *testing.T) {
	requireRoot(t)
	hostNS, outside := newNetNS(t), newNetNS(t)
	link(t, outside, hostNS, "up0", netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	h := openHost(t, hostNS)
	for range 2 {
		if err := h.EnsureNode(NodeConfig{EgressRange: egress}); err != nil {
			t.Fatal(err)
		}
	}
	p := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "e"), IPv6: netip.MustParseAddr("2001:db8:1::5"), IPv4: netip.MustParseAddr("10.127.0.5")}
	if err := h.SetupPod(p); err != nil {
		t.Fatal(err)
	}
	remote, err := connect(p.NetNS, outside, netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatalf("pod -> outside over IPv4: %v", err)
	}
	if want := netip.MustParseAddr("192.0.2.2"); remote != want {
		t.Errorf("outside saw the pod as %s, want the node's %s (masqueraded)", remote, want)
	}
	// ping, as any user: an ICMP datagram socket.
	if err := inNS(p.NetNS, func() error { return ping(netip.MustParseAddr("192.0.2.1")) }); err != nil {
		t.Errorf("ping from the pod: %v", err)
	}

	s, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state:\n%s", s)
	if !s.IPv4Forwarding || !s.IPv6Forwarding {
		t.Errorf("forwarding off: %+v", s)
	}
	if s.EgressRange != egress {
		t.Errorf("EgressRange = %s, want %s", s.EgressRange, egress)
	}
	wantNFT := "table ip skiff {\n" +
		"\tchain postrouting {\n" +
		"\t\ttype nat hook postrouting priority srcnat; policy accept;\n" +
		"\t\tip saddr 10.127.0.0/16 ip daddr != 10.127.0.0/16 masquerade comment \"skiff: pod egress\"\n" +
		"\t}\n" +
		"}\n"
	if s.NFT != wantNFT {
		t.Errorf("nft table:\n%s\nwant (one rule after two EnsureNode):\n%s", s.NFT, wantNFT)
	}
	// State shows what the tools show, where they are installed.
	if out, ok := runIn(t, hostNS, "nft", "list", "table", "ip", "skiff"); ok && out != s.NFT {
		t.Errorf("nft list table ip skiff:\n%s\nState().NFT:\n%s", out, s.NFT)
	}
	// (ip leaves out the protocol it filters by.)
	if out, ok := runIn(t, hostNS, "ip", "route", "show", "proto", "0x5c"); ok && out != "10.127.0.5 dev "+p.HostVeth+" scope link \n" {
		t.Errorf("ip route show proto 0x5c:\n%s", out)
	}

	if err := h.RemoveNode(); err != nil {
		t.Fatal(err)
	}
	if err := h.RemoveNode(); err != nil {
		t.Fatalf("RemoveNode again: %v", err)
	}
	if s, err := h.State(); err != nil || s.NFT != "" || s.EgressRange.IsValid() {
		t.Errorf("after RemoveNode: %v\n%s", err, s)
	}
	if _, err := connectWithin(p.NetNS, outside, netip.MustParseAddr("192.0.2.1"), 500*time.Millisecond); err == nil {
		t.Errorf("pod reached outside without masquerade (outside has no route back to %s)", p.IPv4)
	}
}

// Sweep removes what a crashed agent left and keeps what it is told to.
func TestSweep(t *testing.T) {
	requireRoot(t)
	hostNS := newNetNS(t)
	old := openHost(t, hostNS)
	kept := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "kept"), IPv6: netip.MustParseAddr("2001:db8:1::1"), IPv4: netip.MustParseAddr("10.127.0.1"), Owner: "n1"}
	gone := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "gone"), IPv6: netip.MustParseAddr("2001:db8:1::2"), IPv4: netip.MustParseAddr("10.127.0.2"), Owner: "n1"}
	// Another agent's pod in the same namespace (a test host): not n1's to sweep.
	other := Pod{NetNS: newPodNetNS(t), HostVeth: VethName("default", "other"), IPv6: netip.MustParseAddr("2001:db8:2::1"), Owner: "n2"}
	for _, p := range []Pod{kept, gone, other} {
		if err := old.SetupPod(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.SyncRoutes(ownPrefix, nil); err != nil {
		t.Fatal(err)
	}
	old.Close() // the agent "crashed"

	h := openHost(t, hostNS)
	if err := h.Sweep("n1", func(veth string) bool { return veth == kept.HostVeth }); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.State(); len(s.Links) != 2 {
		t.Errorf("links after sweep: %v, want %s (kept) and %s (n2's)", s.Links, kept.HostVeth, other.HostVeth)
	}
	if err := h.TeardownPod(other.HostVeth); err != nil {
		t.Fatal(err)
	}
	s, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Links) != 1 || s.Links[0].Name != kept.HostVeth {
		t.Errorf("links after sweep and n2's teardown: %v, want %s only", s.Links, kept.HostVeth)
	}
	want := []string{
		"unreachable 2001:db8:1::/64 dev lo proto 92 metric 1024",
		"2001:db8:1::1 dev " + kept.HostVeth + " proto 92 metric 1024",
		"10.127.0.1 dev " + kept.HostVeth + " proto 92 scope link",
	}
	if got := routeStrings(s); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("routes after sweep:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if podLinks(t, gone.NetNS)["eth0"] != nil {
		t.Errorf("swept pod still has eth0")
	}
	// The kept pod is still set up: SetupPod is a no-op.
	idx := s.Links[0].Index
	if err := h.SetupPod(kept); err != nil {
		t.Fatal(err)
	}
	if s, _ := h.State(); len(s.Links) != 1 || s.Links[0].Index != idx {
		t.Errorf("SetupPod after sweep remade the kept veth")
	}
}

// runIn runs a command in a namespace; false when it is not installed.
func runIn(t *testing.T, ns, name string, args ...string) (string, bool) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Logf("%s not installed, not compared", name)
		return "", false
	}
	var out []byte
	err := inNS(ns, func() (err error) {
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), true
}

func routeStrings(s State) []string {
	var out []string
	for _, r := range s.Routes {
		out = append(out, r.String())
	}
	return out
}

func inNSRead(ns, path string) (string, error) {
	var s string
	err := inNS(ns, func() error {
		b, err := os.ReadFile(path)
		s = strings.TrimSpace(string(b))
		return err
	})
	return s, err
}

// ping sends one ICMP echo over a datagram socket (what unprivileged ping
// uses) and waits a second for the reply.
func ping(dst netip.Addr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return err
	}
	echo := []byte{8, 0, 0, 0, 0, 0, 0, 1, 's', 'k', 'i', 'f', 'f'} // the kernel sets id and checksum
	if err := unix.Sendto(fd, echo, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	if n < 8 || buf[0] != 0 {
		return fmt.Errorf("reply %x is not an echo reply", buf[:n])
	}
	return nil
}
