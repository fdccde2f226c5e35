package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Faults a test injects into a running lab: a node or a server cut off
// from the network, a server cut off from its peers, an agent or a server
// stopped or killed and started again (KillServer, StartServer are in
// servers_linux.go).

// Partition cuts a node or a server (of a multi-server lab) off from
// everything (the servers, the nodes, the outside, the lab's own
// clients) by taking its link to the bridge down, as pulling its cable
// would. Its processes keep running.
func (l *Lab) Partition(name string) error { return l.setLink(name, false) }

// Heal undoes Partition and PartitionPeers.
func (l *Lab) Heal(name string) error {
	if s := l.ServerByName(name); s != nil && s.veth != "" {
		if err := l.cutPeers(s, false); err != nil {
			return err
		}
	}
	return l.setLink(name, true)
}

// setLink takes the link to the bridge of a node or a server down or up.
func (l *Lab) setLink(name string, up bool) error {
	veth := ""
	if n := l.NodeByName(name); n != nil {
		veth = n.veth
	} else if s := l.ServerByName(name); s != nil && s.veth != "" {
		veth = s.veth
	} else if s != nil {
		return fmt.Errorf("lab: server %s runs in the root namespace (a one-server lab): it has no link to cut", name)
	} else {
		return fmt.Errorf("lab: no node or server %s", name)
	}
	link, err := netlink.LinkByName(veth)
	if err != nil {
		return fmt.Errorf("lab: %s: link %s: %w", name, veth, err)
	}
	if up {
		err = netlink.LinkSetUp(link)
	} else {
		err = netlink.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("lab: %s: link %s: %w", name, veth, err)
	}
	return nil
}

// PartitionPeers cuts a server of a multi-server lab off from the other
// servers only: its etcd member loses the others (a minority of one,
// unless the lab has two servers), while clients and nodes still reach
// its API, which then answers 503. Each side gets a blackhole route to
// the other's underlay address, so no packet crosses either way. Heal
// undoes it.
func (l *Lab) PartitionPeers(name string) error {
	s := l.ServerByName(name)
	if s == nil || s.veth == "" {
		return fmt.Errorf("lab: no server %s in a namespace of its own (PartitionPeers needs Config.Servers of 2 or more)", name)
	}
	return l.cutPeers(s, true)
}

// cutPeers adds (or, with cut unset, removes) the blackhole routes
// between s and the other servers. Routes already there, or already
// gone, are no error.
func (l *Lab) cutPeers(s *Server, cut bool) error {
	route := func(in *Server, to netip.Addr) error {
		ns, err := netns.GetFromPath(in.Path)
		if err != nil {
			return fmt.Errorf("%s: %w", in.Path, err)
		}
		defer ns.Close()
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			return fmt.Errorf("netlink in %s: %w", in.Path, err)
		}
		defer h.Close()
		r := &netlink.Route{Dst: ipNet(to, 128), Type: unix.RTN_BLACKHOLE}
		if cut {
			err = h.RouteAdd(r)
			if errors.Is(err, unix.EEXIST) {
				err = nil
			}
		} else {
			err = h.RouteDel(r)
			if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
				err = nil
			}
		}
		if err != nil {
			return fmt.Errorf("lab: server %s: blackhole route to %s: %w", in.Name, to, err)
		}
		return nil
	}
	for _, o := range l.servers {
		if o == s {
			continue
		}
		if err := route(s, o.Underlay); err != nil {
			return err
		}
		if err := route(o, s.Underlay); err != nil {
			return err
		}
	}
	return nil
}

// StopAgent stops a node's agent: with SIGTERM (and SIGKILL after 10 s),
// or with kill set, at once with SIGKILL, as a crash would. Its containers
// keep running.
func (l *Lab) StopAgent(name string, kill bool) error {
	n := l.NodeByName(name)
	if n == nil {
		return fmt.Errorf("lab: no node %s", name)
	}
	if n.agent == nil || n.agent.exited() {
		return nil
	}
	if kill {
		n.agent.cmd.Process.Signal(syscall.SIGKILL)
		<-n.agent.done
		return nil
	}
	n.agent.stop(10e9)
	return nil
}

// StartAgent starts a stopped node's agent again, with its data directory
// alone, as an operator would after a crash: the agent keeps its name,
// address and credentials there.
func (l *Lab) StartAgent(name string) error {
	n := l.NodeByName(name)
	if n == nil {
		return fmt.Errorf("lab: no node %s", name)
	}
	if n.agent != nil && !n.agent.exited() {
		return fmt.Errorf("lab: node %s: the agent is running", name)
	}
	p, err := startProc(n.Name, n.Path, n.Log, []string{l.binary, "agent", "--data", n.Dir, "--listen", fmt.Sprintf(":%d", AgentPort)}, l.env)
	if err != nil {
		return fmt.Errorf("lab: node %s: %w", name, err)
	}
	n.agent = p
	return l.rec.addProc(p)
}
