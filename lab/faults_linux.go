package lab

import (
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Faults a test injects into a running lab: a node cut off from the
// network, an agent stopped or killed and started again.

// Partition cuts a node off from everything (the server, the other nodes,
// the outside) by taking its link to the bridge down, as pulling its
// cable would. Its agent and pods keep running.
func (l *Lab) Partition(name string) error { return l.setLink(name, false) }

// Heal undoes Partition.
func (l *Lab) Heal(name string) error { return l.setLink(name, true) }

func (l *Lab) setLink(name string, up bool) error {
	n := l.NodeByName(name)
	if n == nil {
		return fmt.Errorf("lab: no node %s", name)
	}
	link, err := netlink.LinkByName(n.veth)
	if err != nil {
		return fmt.Errorf("lab: node %s: link %s: %w", name, n.veth, err)
	}
	if up {
		err = netlink.LinkSetUp(link)
	} else {
		err = netlink.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("lab: node %s: link %s: %w", name, n.veth, err)
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
