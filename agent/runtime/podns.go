//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"skiff.dev/skiff/agent/netns"
)

// Pod namespaces live in Root/pods/NAME: userns and netns (bind-mounted
// namespace files) and ids.json (the user namespace's IDRange).
const (
	podUserNS = "userns"
	podNetNS  = "netns"
	podIDs    = "ids.json"
)

func (r *Runtime) podsDir() string { return filepath.Join(r.root, "pods") }

// CreatePodNetNS creates (or, for an existing one with the same ids, finds)
// a pod's network namespace, owned by a new user
// namespace that maps 0..ids.Size-1 to ids (the pod's UserNS), with its
// loopback device up, and returns the path to give as Spec.NetNS. Both
// namespaces are pinned under Root/pods/NAME until RemovePodNetNS.
//
// Why a user namespace of its own: a user-namespaced container can only
// mount a sysfs for, and (with runc < 1.2) `runc exec` can only enter, a
// network namespace owned by its user namespace. Containers started with
// Spec.NetNS set to such a namespace join its owning user namespace
// instead of creating one, so all containers of the pod share it.
//
// Network setup (veth, addresses, routes) is the caller's: as the host's
// root it may configure the namespace like any other.
func (r *Runtime) CreatePodNetNS(name string, ids IDRange) (string, error) {
	if err := validID(name); err != nil {
		return "", fmt.Errorf("pod netns: %w", err)
	}
	if ids.Size == 0 || ids.HostID == 0 {
		return "", fmt.Errorf("pod netns %s: need a user namespace range with HostID > 0 and Size > 0", name)
	}
	dir := filepath.Join(r.podsDir(), name)
	netns := filepath.Join(dir, podNetNS)
	if _, err := os.Stat(dir); err == nil {
		// Idempotent: the same pod again gets the same namespace; one
		// left unpinned (by a reboot) is made anew.
		var old IDRange
		if readJSON(filepath.Join(dir, podIDs), &old) == nil && isNSFile(netns) && isNSFile(filepath.Join(dir, podUserNS)) {
			if old != ids {
				return "", fmt.Errorf("pod netns %s exists with user namespace %+v, not %+v", name, old, ids)
			}
			return netns, nil
		}
		if err := r.RemovePodNetNS(name); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(r.podsDir(), 0o711); err != nil {
		return "", err
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			unmountUnder(dir)
			os.RemoveAll(dir)
		}
	}()
	if err := writeJSON(filepath.Join(dir, podIDs), ids); err != nil {
		return "", err
	}
	for _, f := range []string{podUserNS, podNetNS} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return "", err
		}
	}

	// A process in new user and network namespaces, held until both are
	// pinned.
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.HostID), Size: int(ids.Size)}}
	hold := r.holder()
	hold.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings:                m,
		GidMappings:                m,
		GidMappingsEnableSetgroups: true,
		Pdeathsig:                  syscall.SIGKILL,
	}
	hold.Dir = "/"
	hold.Env = shimEnv()
	stdin, err := hold.StdinPipe()
	if err != nil {
		return "", err
	}
	if err := hold.Start(); err != nil {
		return "", fmt.Errorf("pod netns %s: %w", name, err)
	}
	pid := strconv.Itoa(hold.Process.Pid)
	var pinErr error
	for _, ns := range []struct{ proc, file string }{{"user", podUserNS}, {"net", podNetNS}} {
		src := "/proc/" + pid + "/ns/" + ns.proc
		if err := unix.Mount(src, filepath.Join(dir, ns.file), "", unix.MS_BIND, ""); err != nil {
			pinErr = fmt.Errorf("pin %s: %w", src, err)
			break
		}
	}
	stdin.Close()
	if err := hold.Wait(); err != nil && pinErr == nil {
		pinErr = fmt.Errorf("holder process: %w", err)
	}
	if pinErr != nil {
		return "", fmt.Errorf("pod netns %s: %w", name, pinErr)
	}
	if err := inNetNS(netns, loopbackUp); err != nil {
		return "", fmt.Errorf("pod netns %s: loopback up: %w", name, err)
	}
	ok = true
	return netns, nil
}

// holder returns the command of a process that only waits for its stdin
// to close: cat, which starts in a millisecond, else the shim (`-hold`),
// which takes a few ms as skiff-shim and ~15 ms as `skiff shim` (the
// whole binary's package initialisation).
func (r *Runtime) holder() *exec.Cmd {
	for _, p := range []string{"/usr/bin/cat", "/bin/cat"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o001 != 0 {
			return exec.Command(p)
		}
	}
	return exec.Command(r.shim, append(append([]string(nil), r.shimArgs...), "-hold")...)
}

// isNSFile tells whether path is a pinned namespace (a bind mount of an
// nsfs file).
func isNSFile(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// RemovePodNetNS releases a pod's namespaces (they go away with the last
// process in them). Removing a missing one is no error.
func (r *Runtime) RemovePodNetNS(name string) error {
	if err := validID(name); err != nil {
		return fmt.Errorf("pod netns: %w", err)
	}
	dir := filepath.Join(r.podsDir(), name)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unmountUnder(dir); err != nil {
		return fmt.Errorf("pod netns %s: %w", name, err)
	}
	return os.RemoveAll(dir)
}

// holdMain is `shim -hold`: wait for stdin to close.
func holdMain() int {
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// inNetNS runs fn on a thread in the network namespace at path.
func inNetNS(path string, fn func() error) error { return netns.Do(path, fn) }

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// netnsOwner opens the user namespace that owns the network namespace at
// path; initOwned tells whether that is the host's (ours).
func netnsOwner(path string) (owner *os.File, initOwned bool, err error) {
	ns, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer ns.Close()
	fd, err := unix.IoctlRetInt(int(ns.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return nil, false, fmt.Errorf("owner of %s: %w", path, err)
	}
	owner = os.NewFile(uintptr(fd), "userns")
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		owner.Close()
		return nil, false, err
	}
	if err := unix.Stat("/proc/self/ns/user", &b); err != nil {
		owner.Close()
		return nil, false, err
	}
	return owner, a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// podUserNSOf finds the pod user namespace owner, which owns the network
// namespace at netns, among ours: its IDRange and the path it is pinned
// at. The pod whose netns this is (Root/pods/NAME/netns) is looked at
// first, then every pod.
func (r *Runtime) podUserNSOf(netns string, owner *os.File) (IDRange, string, bool) {
	var st unix.Stat_t
	if unix.Fstat(int(owner.Fd()), &st) != nil {
		return IDRange{}, "", false
	}
	match := func(dir string) (IDRange, string, bool) {
		pin := filepath.Join(dir, podUserNS)
		var pst unix.Stat_t
		if unix.Stat(pin, &pst) != nil || pst.Dev != st.Dev || pst.Ino != st.Ino {
			return IDRange{}, "", false
		}
		var ids IDRange
		if readJSON(filepath.Join(dir, podIDs), &ids) != nil {
			return IDRange{}, "", false
		}
		return ids, pin, true
	}
	if dir := filepath.Dir(netns); filepath.Dir(dir) == r.podsDir() {
		if ids, pin, ok := match(dir); ok {
			return ids, pin, true
		}
	}
	ents, _ := os.ReadDir(r.podsDir())
	for _, e := range ents {
		if ids, pin, ok := match(filepath.Join(r.podsDir(), e.Name())); ok {
			return ids, pin, true
		}
	}
	return IDRange{}, "", false
}
