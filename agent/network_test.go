package agent

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"skiff.dev/skiff/agent/netns"
	"skiff.dev/skiff/api"
)

func node(name, prefix, addr string) api.Object {
	st := map[string]any{}
	if prefix != "" {
		st["podPrefix"] = prefix
	}
	if addr != "" {
		st["address"] = addr
	}
	return api.Object{Kind: "Node", Name: name, Status: st}
}

// routesFrom: a route per addressed peer via its underlay; a peer with an
// IPv4-only underlay is named; a peer on this same host needs no route,
// and then no node claims its /64 unreachable in the shared table.
func TestRoutesFrom(t *testing.T) {
	a := &Agent{o: Options{Name: "n1", Address: "fd00::11"}, log: slog.Default()}
	rt, problems := a.routesFrom([]api.Object{
		node("n1", "fd12::/64", "fd00::11"),
		node("n2", "fd12:0:0:2::/64", "fd00::12"),
		node("n3", "fd12:0:0:3::/64", "192.0.2.13"),
		node("n4", "fd12:0:0:4::/64", ""), // registered a moment ago
		node("n5", "", "fd00::15"),        // not addressed yet
	})
	want := []netns.Route{{Node: "n2", Prefix: netip.MustParsePrefix("fd12:0:0:2::/64"), Via: netip.MustParseAddr("fd00::12")}}
	if rt.Own != netip.MustParsePrefix("fd12::/64") || len(rt.Peers) != 1 || rt.Peers[0] != want[0] {
		t.Errorf("routes = %+v, want own fd12::/64 and %+v", rt, want)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "node n3 has an IPv4-only underlay (192.0.2.13)") {
		t.Errorf("problems = %q, want one naming n3's IPv4-only underlay", problems)
	}

	// An event from before n1 had its /64 keeps the one known.
	rt, _ = a.routesFrom([]api.Object{node("n1", "", ""), node("n2", "fd12:0:0:2::/64", "fd00::12")})
	if rt.Own != netip.MustParsePrefix("fd12::/64") {
		t.Errorf("own prefix from a stale list = %v, want the known fd12::/64", rt.Own)
	}

	// This node's own underlay is IPv4 while there are peers.
	b := &Agent{o: Options{Name: "n1", Address: "192.0.2.11"}, log: slog.Default()}
	if _, problems := b.routesFrom([]api.Object{node("n1", "fd12::/64", "192.0.2.11"), node("n2", "fd12:0:0:2::/64", "fd00::12")}); len(problems) != 1 ||
		!strings.Contains(problems[0], "this node's underlay address 192.0.2.11 is IPv4") {
		t.Errorf("problems = %q, want this node's IPv4 underlay named", problems)
	}

	// Another agent on this very host (a test machine): its pods' routes
	// are in this table already.
	c := &Agent{o: Options{Name: "n1", Address: "::1"}, log: slog.Default()}
	rt, problems = c.routesFrom([]api.Object{node("n1", "fd12::/64", "::1"), node("n2", "fd12:0:0:2::/64", "::1")})
	if len(rt.Peers) != 0 || rt.Own.IsValid() || len(problems) != 0 {
		t.Errorf("same-host peer: routes %+v, problems %q; want none", rt, problems)
	}
}
