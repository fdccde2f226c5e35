package netns

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Root-only helpers: network namespaces the tests make (and always remove),
// links between them, and TCP connections across them.

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: makes network namespaces, veths, routes and nftables tables (in namespaces of its own); run as root")
	}
}

// newNetNS makes a network namespace pinned on a file in a temporary
// directory, removed when the test ends.
func newNetNS(tb testing.TB) string {
	tb.Helper()
	path, remove, err := makeNetNS(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(remove)
	return path
}

// makeNetNS makes a network namespace pinned on dir/netns-N: unshare on a
// locked thread, bind-mount the thread's namespace, go back.
func makeNetNS(dir string) (path string, remove func(), err error) {
	f, err := os.CreateTemp(dir, "netns-")
	if err != nil {
		return "", nil, err
	}
	path = f.Name()
	f.Close()
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
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", nil, fmt.Errorf("make netns: %w", err)
	}
	return path, func() { unpin(path) }, nil
}

func unpin(path string) {
	unix.Unmount(path, unix.MNT_DETACH)
	os.Remove(path)
}

// newPodNetNS makes a network namespace owned by a new user namespace, as
// the runtime makes pods' (root in it is uid 200000 on the host).
func newPodNetNS(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "podns")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 200000, Size: 65536}}
	hold := exec.Command("sleep", "600")
	hold.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: ids,
		GidMappings: ids,
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := hold.Start(); err != nil {
		tb.Fatalf("start namespace holder: %v", err)
	}
	err := unix.Mount("/proc/"+strconv.Itoa(hold.Process.Pid)+"/ns/net", path, "", unix.MS_BIND, "")
	hold.Process.Kill()
	hold.Wait()
	if err != nil {
		tb.Fatalf("pin pod netns: %v", err)
	}
	tb.Cleanup(func() { unpin(path) })
	return path
}

// inNS runs fn on a thread in the network namespace at path; sockets made
// there stay in that namespace.
func inNS(path string, fn func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return inNetNS(ns, fn)
}

// handleIn is a netlink handle in the namespace at path.
func handleIn(tb testing.TB, path string) *netlink.Handle {
	tb.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	return h
}

// openHost opens a test's "host" namespace; closed when the test ends.
func openHost(tb testing.TB, path string) *Host {
	tb.Helper()
	h, err := Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

// link joins namespaces a and b with a veth named name on both sides, with
// addresses aAddr and bAddr, up. IPv6 addresses skip DAD, and each side has
// a link-local address without DAD too, as on an underlay long up: a
// router sends no neighbour solicitations for forwarded packets from a link
// whose link-local address is still tentative (about 2s after it came up).
func link(tb testing.TB, a, b, name string, aAddr, bAddr netip.Prefix) {
	tb.Helper()
	ha, hb := handleIn(tb, a), handleIn(tb, b)
	nsB, err := netns.GetFromPath(b)
	if err != nil {
		tb.Fatal(err)
	}
	defer nsB.Close()
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name, PeerNamespace: netlink.NsFd(nsB)}); err != nil {
		tb.Fatalf("veth %s: %v", name, err)
	}
	for _, side := range []struct {
		h     *netlink.Handle
		addr  netip.Prefix
		local netip.Prefix
	}{{ha, aAddr, netip.MustParsePrefix("fe80::a/64")}, {hb, bAddr, netip.MustParsePrefix("fe80::b/64")}} {
		l, err := side.h.LinkByName(name)
		if err != nil {
			tb.Fatal(err)
		}
		for _, a := range []netip.Prefix{side.addr, side.local} {
			addr := &netlink.Addr{IPNet: ipNet(a)}
			if a.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := side.h.AddrAdd(l, addr); err != nil {
				tb.Fatalf("%s: add %s: %v", name, a, err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			tb.Fatal(err)
		}
	}
	la, err := ha.LinkByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	lb, err := hb.LinkByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	if err := waitOperUp(ha, hb, la.Attrs().Index, lb.Attrs().Index); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
}

// connect opens a TCP connection from namespace from to addr (any port) in
// namespace to, sends a line over it and returns the remote address the
// listener saw.
func connect(from, to string, addr netip.Addr) (netip.Addr, error) {
	return connectWithin(from, to, addr, 3*time.Second)
}

// connectWithin is connect with a timeout for dialing.
func connectWithin(from, to string, addr netip.Addr, timeout time.Duration) (netip.Addr, error) {
	var ln net.Listener
	if err := inNS(to, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		return netip.Addr{}, fmt.Errorf("listen on %s: %w", addr, err)
	}
	defer ln.Close()
	type accepted struct {
		remote netip.Addr
		err    error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- accepted{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "hello\n" {
			err = fmt.Errorf("read %q, want hello", line)
		}
		acc <- accepted{c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(), err}
	}()
	var c net.Conn
	if err := inNS(from, func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), timeout)
		return err
	}); err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return netip.Addr{}, err
	}
	select {
	case a := <-acc:
		return a.remote, a.err
	case <-time.After(5 * time.Second):
		return netip.Addr{}, errors.New("listener saw no connection in 5s")
	}
}

// dial connects from namespace from to to and hangs up.
func dial(from string, to netip.AddrPort, timeout time.Duration) error {
	return inNS(from, func() error {
		c, err := net.DialTimeout("tcp", to.String(), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// podLinks lists the links in a pod netns by name.
func podLinks(tb testing.TB, path string) map[string]netlink.Link {
	tb.Helper()
	links, err := handleIn(tb, path).LinkList()
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string]netlink.Link{}
	for _, l := range links {
		m[l.Attrs().Name] = l
	}
	return m
}
