package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are pinned, as iproute2
// does: `ip netns exec NAME` works on the lab's namespaces.
const netnsDir = "/run/netns"

// netnsPath is the pin of the named namespace.
func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// onThread runs fn on a goroutine locked to its OS thread and returns its
// error. fn may change the thread's network namespace (setns, unshare):
// afterwards the thread is put back where it was and handed back to Go
// only if that worked; otherwise it ends with the goroutine.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restore, err := saveNetNS()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if restore() == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// saveNetNS opens the calling thread's network namespace and returns a
// function that moves the thread back into it (and closes it). The
// caller's goroutine must be locked to its thread.
func saveNetNS() (restore func() error, err error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	return func() error {
		defer self.Close()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns back: %w", err)
		}
		return nil
	}, nil
}

// enterNetNS moves the calling thread into the network namespace at path.
func enterNetNS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	return nil
}

// inNetNS runs fn on a thread inside the network namespace at path.
// Sockets fn opens stay in that namespace.
func inNetNS(path string, fn func() error) error {
	return onThread(func() error {
		if err := enterNetNS(path); err != nil {
			return err
		}
		return fn()
	})
}

// createNetNS makes a new network namespace pinned at /run/netns/NAME
// and returns the pin's path.
func createNetNS(name string) (string, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return "", err
	}
	path := netnsPath(name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", fmt.Errorf("network namespace %s: %w", name, err)
	}
	f.Close()
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin: %w", err)
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("network namespace %s: %w", name, err)
	}
	return path, nil
}

// deleteNetNS unpins a named namespace; it goes away with the last
// process and device in it. A missing one is no error.
func deleteNetNS(name string) error {
	path := netnsPath(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin network namespace %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// writeSysctl writes a /proc/sys file of the calling thread's network
// namespace ("net/ipv6/conf/default/accept_dad").
func writeSysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// Namespace is a named network namespace of the lab, pinned at Path
// (/run/netns/Name): `ip netns exec Name CMD` runs CMD in it from a shell.
type Namespace struct {
	Name string
	Path string
}

// Start starts cmd inside the namespace (and only its network namespace:
// it shares the host's mount namespace, so /sys shows the host's devices;
// use `ip netns exec` for tools that read /sys). The caller waits for it.
// Do not give it Pdeathsig: the thread that forked it goes back to Go.
func (ns Namespace) Start(cmd *exec.Cmd) error {
	return inNetNS(ns.Path, cmd.Start)
}

// Exec runs cmd inside the namespace to completion.
func (ns Namespace) Exec(cmd *exec.Cmd) error {
	return inNetNS(ns.Path, cmd.Run)
}

// Run runs a program inside the namespace and returns its combined
// output; a failure's error carries the output.
func (ns Namespace) Run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out []byte
	err := inNetNS(ns.Path, func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %q: %w: %s", ns.Name, name, args, err, out)
	}
	return string(out), nil
}

// Do runs fn on a thread inside the namespace: sockets it makes stay
// there. fn must not start goroutines that expect to be in it.
func (ns Namespace) Do(fn func() error) error { return inNetNS(ns.Path, fn) }

// Listen opens a listener inside the namespace ("tcp4", ":8080"); serve
// it from any goroutine.
func (ns Namespace) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetNS(ns.Path, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Dial connects from inside the namespace. addr must be an IP address
// and port: a host name would be resolved on other threads.
func (ns Namespace) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetNS(ns.Path, func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
