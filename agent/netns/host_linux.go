package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host is a node's network namespace as skiff configures it. Its methods
// may be called from several goroutines, but not twice at once for the same
// pod.
type Host struct {
	path string         // "" for the calling process's namespace
	ns   netns.NsHandle // guarded by nothing: set by Open, closed by Close
	nl   *netlink.Handle
}

// Open opens the network namespace at netnsPath (a bind-mounted nsfs file
// or /proc/PID/ns/net) for configuration; "" is the calling process's own
// network namespace, the agent's.
func Open(netnsPath string) (*Host, error) {
	nsPath := netnsPath
	if nsPath == "" {
		nsPath = "/proc/self/ns/net"
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("host netns %s: %w", nsPath, err)
	}
	var nl *netlink.Handle
	if netnsPath == "" {
		nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		nl, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("host netns %s: netlink: %w", nsPath, err)
	}
	return &Host{path: netnsPath, ns: ns, nl: nl}, nil
}

// Close releases the namespace and netlink sockets; what was configured
// stays.
func (h *Host) Close() error {
	h.nl.Close()
	return h.ns.Close()
}

func (h *Host) String() string {
	if h.path == "" {
		return "host netns"
	}
	return "host netns " + h.path
}

// nft is a netfilter connection in the host's namespace.
func (h *Host) nft() (*nftables.Conn, error) {
	if h.path == "" {
		return nftables.New()
	}
	return nftables.New(nftables.WithNetNSFd(int(h.ns)))
}

// sysctl reads (value == "") or writes a /proc/sys/net file of the host's
// namespace; name is relative to /proc/sys, like "net/ipv4/ip_forward".
func (h *Host) sysctl(name, value string) (string, error) {
	if h.path == "" {
		return sysctl(name, value)
	}
	var got string
	err := inNetNS(h.ns, func() (err error) {
		got, err = sysctl(name, value)
		return err
	})
	return got, err
}

// sysctl reads or writes /proc/sys/name in the calling thread's network
// namespace.
func sysctl(name, value string) (string, error) {
	p := filepath.Join("/proc/sys", name)
	if value == "" {
		b, err := os.ReadFile(p)
		return strings.TrimSpace(string(b)), err
	}
	return value, os.WriteFile(p, []byte(value), 0o644)
}

// Do runs fn on a thread in the network namespace pinned at path (an nsfs
// file). Sockets fn opens stay in that namespace.
func Do(path string, fn func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer ns.Close()
	if err := inNetNS(ns, fn); err != nil {
		return fmt.Errorf("in network namespace %s: %w", path, err)
	}
	return nil
}

// inNetNS runs fn on a thread in the network namespace ns. /proc/sys/net
// shows the namespace of the thread that opens it. The thread is given back
// to the runtime only if it made it back to its namespace; otherwise it ends
// with the goroutine.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		err = fn()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// retryDump repeats a netlink dump the kernel reports as interrupted (a
// change raced it), a few times.
func retryDump[T any](dump func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := dump()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 5 {
			continue
		}
		return v, err
	}
}

// linkByName is LinkByName with "not found" as a nil link and no error.
func linkByName(nl *netlink.Handle, name string) (netlink.Link, error) {
	l, err := nl.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	return l, err
}

func isUp(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp != 0 }

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func hostNet(a netip.Addr) *net.IPNet { return ipNet(netip.PrefixFrom(a, a.BitLen())) }

func toAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func toPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(toAddr(n.IP), ones)
}
