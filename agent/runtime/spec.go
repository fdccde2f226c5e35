//go:build linux

package runtime

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const (
	tmpSize    = "64m"
	cpuPeriod  = 100000 // µs
	cgroupRoot = "skiff"
)

// maskedPaths are hidden from the container (runc binds /dev/null over
// files and an empty read-only tmpfs over directories).
var maskedPaths = []string{
	"/proc/acpi",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/sys/firmware",
	"/sys/devices/virtual/powercap",
}

// readonlyPaths are bound read-only over themselves.
var readonlyPaths = []string{
	"/proc/asound",
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

// nsOpts are what Start found of a joined network namespace.
type nsOpts struct {
	userNS  string // join this user namespace (the pod's) instead of creating one
	sysBind string // bind this sysfs (mounted by Start) instead of mounting one
}

// config is the OCI runtime configuration of one container: the default
// sandbox (see doc.go), with nothing configurable that would weaken it.
func (r *Runtime) config(s *Spec, hostname, cwd string, ns nsOpts) *specs.Spec {
	etc := func(name string) string { return filepath.Join(r.dir(s.ID), dirEtc, name) }
	env := s.Env
	if !hasEnv(env, "PATH") {
		env = append([]string{"PATH=" + defaultPath}, env...)
	}
	if !hasEnv(env, "HOSTNAME") {
		env = append(env, "HOSTNAME="+hostname)
	}

	ptsOpts := []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}
	if s.UserNS.Size > 5 {
		ptsOpts = append(ptsOpts, "gid=5") // tty group, mapped
	}
	roBind := []string{"bind", "ro", "nosuid", "nodev", "noexec"}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: ptsOpts},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		sysMount(ns.sysBind),
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=" + tmpSize}},
		{Destination: "/etc/hostname", Type: "bind", Source: etc("hostname"), Options: roBind},
		{Destination: "/etc/hosts", Type: "bind", Source: etc("hosts"), Options: roBind},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: etc("resolv.conf"), Options: roBind},
	}

	netns := specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetNS}
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: s.UserNS.HostID, Size: s.UserNS.Size}}

	res := &specs.LinuxResources{
		// Deny every device; runc adds its default allow-list (null, zero,
		// full, random, urandom, tty, ptmx, pts).
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if s.MemoryBytes > 0 {
		limit := s.MemoryBytes
		res.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	if s.CPUMilli > 0 {
		quota := s.CPUMilli * cpuPeriod / 1000
		if quota < 1000 {
			quota = 1000 // the kernel's minimum
		}
		period := uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}

	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User: specs.User{UID: s.UID, GID: s.GID},
			Args: s.Args,
			Env:  env,
			Cwd:  cwd,
			// Present and empty: runc keeps no capability in any set,
			// the bounding set included. (Absent would keep them all.)
			Capabilities:    &specs.LinuxCapabilities{},
			NoNewPrivileges: true,
			ApparmorProfile: apparmorProfile(),
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: hostname,
		Mounts:   mounts,
		Linux: &specs.Linux{
			UIDMappings: ids,
			GIDMappings: ids,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.UserNamespace, Path: ns.userNS},
				{Type: specs.CgroupNamespace},
				netns,
			},
			CgroupsPath:   "/" + cgroupRoot + "/" + s.ID,
			Resources:     res,
			Seccomp:       defaultSeccomp(),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	s.Privileges.apply(spec)
	return spec
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func hasEnv(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}

// apparmorProfile is the AppArmor profile to confine containers with: only
// where AppArmor is enabled and a suitable profile is loaded ("skiff-default",
// else "docker-default"); "" otherwise.
func apparmorProfile() string {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	if err != nil || strings.TrimSpace(string(b)) != "Y" {
		return ""
	}
	f, err := os.Open("/sys/kernel/security/apparmor/profiles")
	if err != nil {
		return ""
	}
	defer f.Close()
	loaded := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "name (mode)"
		line := sc.Text()
		if i := strings.LastIndex(line, " ("); i > 0 {
			loaded[line[:i]] = true
		}
	}
	for _, p := range []string{"skiff-default", "docker-default"} {
		if loaded[p] {
			return p
		}
	}
	return ""
}

// sysMount is a read-only sysfs: runc mounts one for a network namespace
// owned by the container's user namespace; that of a network namespace the
// host owns is mounted by Start and bound here.
func sysMount(bind string) specs.Mount {
	opts := []string{"nosuid", "noexec", "nodev", "ro"}
	if bind == "" {
		return specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: opts}
	}
	return specs.Mount{Destination: "/sys", Type: "bind", Source: bind, Options: append([]string{"bind"}, opts...)}
}
