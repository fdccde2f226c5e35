//go:build linux

package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// prepare lays out a container's state directory, mounts its overlay root
// and writes config.json. The caller removes the directory on error.
func (r *Runtime) prepare(s *Spec) error {
	dir := r.dir(s.ID)
	hostRoot := int(s.UserNS.HostID)
	if s.Privileges.HostUser {
		hostRoot = 0 // no user namespace: the container's root is the host's
	}
	bundle := filepath.Join(dir, dirBundle)
	rootfs := filepath.Join(bundle, "rootfs")
	upper := filepath.Join(dir, dirUpper)
	work := filepath.Join(dir, dirWork)
	// The bundle path must be walkable by the container's root (an
	// unprivileged host user); upper/work belong to it.
	for _, d := range []string{bundle, rootfs, filepath.Join(dir, dirEtc)} {
		if err := os.Mkdir(d, 0o711); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, hostRoot, hostRoot); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(dir, dirLog), 0o700); err != nil {
		return err
	}

	cwd := s.Cwd
	if cwd == "" {
		cwd = "/"
	}
	// Fail early, with a clear error, on what would make the exec fail.
	if err := checkExecutable(s.Rootfs, s.Args[0], s.Env, cwd); err != nil {
		return err
	}

	// Small per-container /etc files, bound read-only.
	hostname := s.Hostname
	if hostname == "" {
		hostname = s.ID
		if len(hostname) > 63 {
			hostname = hostname[:63]
		}
	}
	etc := map[string][]byte{
		"hostname":    []byte(hostname + "\n"),
		"hosts":       hostsFile(hostname, s.ExtraHosts),
		"resolv.conf": resolvConf(s.ResolvConf),
	}
	for name, b := range etc {
		if err := os.WriteFile(filepath.Join(dir, dirEtc, name), b, 0o644); err != nil {
			return err
		}
	}

	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", s.Rootfs, upper, work)
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	if err := makeMountpoints(rootfs, cwd); err != nil {
		return err
	}

	var ns nsOpts
	if s.NetNS != "" {
		owner, initOwned, err := netnsOwner(s.NetNS)
		if err != nil {
			return err
		}
		defer owner.Close()
		if initOwned {
			// The container's root cannot mount a sysfs for a network
			// namespace its user namespace does not own: mount one here,
			// as the host's root, and runc binds it read-only.
			sys := filepath.Join(dir, dirSys)
			if err := os.Mkdir(sys, 0o755); err != nil {
				return err
			}
			if err := inNetNS(s.NetNS, func() error {
				return unix.Mount("sysfs", sys, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
			}); err != nil {
				return fmt.Errorf("mount sysfs of %s: %w", s.NetNS, err)
			}
			ns.sysBind = sys
		} else if !s.Privileges.HostUser {
			// A pod network namespace (see CreatePodNetNS): join the user
			// namespace that owns it, by the pod's own pin when it is one
			// of ours (it lasts as long as the pod's network, which goes
			// only after its containers), else by a pin of the
			// container's. Every mount on the host makes each `runc run`
			// slower (it reads the host's mount table, and the container's
			// mount namespace starts as a copy of it).
			ids, podPin, ok := r.podUserNSOf(s.NetNS, owner)
			if ok && ids != s.UserNS {
				return fmt.Errorf("network namespace %s belongs to a pod user namespace mapping %+v, not %+v", s.NetNS, ids, s.UserNS)
			}
			if ok {
				ns.userNS = podPin
			} else {
				pin := filepath.Join(dir, fileUserNS)
				if err := os.WriteFile(pin, nil, 0o644); err != nil {
					return err
				}
				if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", owner.Fd()), pin, "", unix.MS_BIND, ""); err != nil {
					return fmt.Errorf("pin the user namespace owning %s: %w", s.NetNS, err)
				}
				ns.userNS = pin
			}
		}
	}

	cfg := r.config(s, hostname, cwd, ns)
	return writeJSONMode(filepath.Join(bundle, "config.json"), cfg, 0o600)
}

// makeMountpoints creates, as the host's root, what runc will mount on and
// chdir to: the container's root could not create them in directories the
// image (owned by host root) has. It works through os.Root, so a symlink
// in the image never leads outside the container's root.
func makeMountpoints(rootfs, cwd string) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, d := range []string{"proc", "dev", "sys", "tmp", "etc"} {
		if _, err := root.Lstat(d); errors.Is(err, fs.ErrNotExist) {
			if err := root.Mkdir(d, 0o755); err != nil {
				return fmt.Errorf("create /%s in the container's root: %w", d, err)
			}
		}
	}
	// runc gives a tmpfs the mode of the directory it covers: /tmp must be
	// writable by every user, whatever the image says.
	if err := root.Chmod("tmp", os.ModeSticky|0o777); err != nil {
		return fmt.Errorf("chmod /tmp in the container's root: %w", err)
	}
	for _, f := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf"} {
		fi, err := root.Lstat(f)
		if err == nil && fi.Mode().IsRegular() {
			continue
		}
		if err == nil {
			// A symlink (or something else) that runc would follow:
			// replace it in this container's upper layer.
			if err := root.RemoveAll(f); err != nil {
				return fmt.Errorf("replace /%s in the container's root: %w", f, err)
			}
		}
		fh, err := root.OpenFile(f, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("create /%s in the container's root: %w", f, err)
		}
		fh.Close()
	}
	if rel := strings.TrimPrefix(filepath.Clean(cwd), "/"); rel != "" {
		if _, err := root.Stat(rel); errors.Is(err, fs.ErrNotExist) {
			// Best effort: a cwd under an absolute symlink is left to runc.
			_ = root.MkdirAll(rel, 0o755)
		}
	}
	return nil
}

func hostsFile(hostname string, extra []string) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
	for _, l := range extra {
		b.WriteString(strings.TrimSpace(l) + "\n")
	}
	return b.Bytes()
}

// resolvConf is the given content, or the host's resolv.conf without
// loopback name servers (they do not answer in a pod's network namespace).
func resolvConf(given string) []byte {
	if given != "" {
		if !strings.HasSuffix(given, "\n") {
			given += "\n"
		}
		return []byte(given)
	}
	var b bytes.Buffer
	b.WriteString("# generated by skiff from the host's resolv.conf\n")
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return b.Bytes()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if len(fields) < 2 {
				continue
			}
			if a, err := netip.ParseAddr(fields[1]); err == nil && a.IsLoopback() {
				continue
			}
		case "search", "domain", "options":
		default:
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.Bytes()
}
