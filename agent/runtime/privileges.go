package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Privileges weaken the default sandbox of one container. The zero value
// weakens nothing. The agent sets only what the pod requested and a grant
// allowed; the runtime applies exactly that.
type Privileges struct {
	// Root allows UID 0 inside the user namespace (still an unprivileged
	// host user).
	Root bool
	// Capabilities are added to every set ("NET_ADMIN" or "CAP_NET_ADMIN").
	Capabilities []string
	// Devices are host device nodes passed in at the same path.
	Devices []string
	// HostPaths are host directories or files bind-mounted at the same path.
	HostPaths []HostPath
	// WritableRoot makes the root file system writable (the overlay's
	// upper layer, per container).
	WritableRoot bool
	// Unconfined drops the seccomp filter and the AppArmor profile.
	Unconfined bool
	// HostUser runs the container without a user namespace: its UID and
	// GID are the host's (and UID 0 is the host's root, which also needs
	// Root).
	HostUser bool
}

// HostPath is one bind mount from the host.
type HostPath struct {
	Path     string
	ReadOnly bool
}

func (p Privileges) validate(id string) error {
	for _, c := range p.Capabilities {
		name := "CAP_" + strings.TrimPrefix(strings.ToUpper(c), "CAP_")
		if !knownCapability(name) {
			return fmt.Errorf("container %s: unknown capability %s", id, c)
		}
	}
	for _, d := range p.Devices {
		var st unix.Stat_t
		if !strings.HasPrefix(d, "/dev/") || unix.Stat(d, &st) != nil || st.Mode&(unix.S_IFCHR|unix.S_IFBLK) == 0 {
			return fmt.Errorf("container %s: device %s is not a device node on this host", id, d)
		}
	}
	for _, h := range p.HostPaths {
		if !filepath.IsAbs(h.Path) || filepath.Clean(h.Path) != h.Path {
			return fmt.Errorf("container %s: host path %q is not a clean absolute path", id, h.Path)
		}
		if _, err := os.Stat(h.Path); err != nil {
			return fmt.Errorf("container %s: host path %s: %v", id, h.Path, err)
		}
	}
	return nil
}

// apply weakens a container's configuration as p says.
func (p Privileges) apply(s *specs.Spec) error {
	if len(p.Capabilities) > 0 {
		var caps []string
		for _, c := range p.Capabilities {
			caps = append(caps, "CAP_"+strings.TrimPrefix(strings.ToUpper(c), "CAP_"))
		}
		// Ambient too: the process is not root, and capabilities must
		// survive its execve to be of any use.
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps,
			Inheritable: caps, Ambient: caps}
	}
	for _, d := range p.Devices {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			return fmt.Errorf("device %s: %w", d, err)
		}
		typ := "c"
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			typ = "b"
		}
		major, minor := int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev)))
		mode := os.FileMode(st.Mode & 0o777)
		s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: d, Type: typ, Major: major, Minor: minor, FileMode: &mode})
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices,
			specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: "rwm"})
	}
	for _, h := range p.HostPaths {
		opts := []string{"rbind", "nosuid", "nodev"}
		if h.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: h.Path, Type: "bind", Source: h.Path, Options: opts})
	}
	if p.WritableRoot {
		s.Root.Readonly = false
	}
	if p.Unconfined {
		s.Linux.Seccomp = nil
		s.Process.ApparmorProfile = ""
	}
	if p.HostUser {
		s.Linux.UIDMappings, s.Linux.GIDMappings = nil, nil
		kept := s.Linux.Namespaces[:0]
		for _, ns := range s.Linux.Namespaces {
			if ns.Type != specs.UserNamespace {
				kept = append(kept, ns)
			}
		}
		s.Linux.Namespaces = kept
	}
	return nil
}

func knownCapability(name string) bool {
	switch name {
	case "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
		"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
		"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
		"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
		"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
		"CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
		"CAP_CHECKPOINT_RESTORE":
		return true
	}
	return false
}
