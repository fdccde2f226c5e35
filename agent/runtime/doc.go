// Package runtime is skiff's container runtime layer: the node agent runs
// each container of a pod with runc, in a sandbox by default, supervised by
// a small per-container shim that outlives the agent.
//
// # API
//
// New(Options) gives a Runtime on a state root. Start(ctx, Spec) prepares
// the container and returns once its process runs (or with why not, such
// as `container app: exec: "htpd": executable file not found in $PATH`
// or `... exec format error`, found by looking the command up in the image
// before runc runs). Stop(ctx, id, grace) sends SIGTERM, waits up to grace,
// then SIGKILL. Remove(ctx, id) runs `runc delete`, unmounts and removes
// the state. State(id) and List() report containers, exited ones not yet
// removed included, from the state on disk alone: a Runtime made after the
// agent restarted (even after kill -9) re-adopts every container. Exec runs
// a command in a running container with `runc exec` (optionally with a
// terminal) and passes its exit code through. Logs(id) lists the log
// files, oldest first; each line is "RFC3339Nano stdout|stderr LINE".
// CreatePodNetNS / RemovePodNetNS make a pod network namespace that
// user-namespaced containers can fully share (see below).
//
// # The shim
//
// Start runs `Options.Shim Options.ShimArgs... -root R -id ID ...` in its
// own session (setsid), stdout and stderr to shim.log, fd 3 a pipe on which
// the shim reports the container's pid or the error. The shim is ShimMain
// in one of two binaries: skiff-shim (cmd/skiff-shim, which links only
// this package: 4 MB, under a millisecond of package initialisation), which
// `make build` puts next to skiff and the agent runs when it finds it
// there; or skiff itself as `skiff shim` (the default Options, and the
// agent's fallback for a lone skiff binary), whose package initialisers
// (etcd, gRPC, Prometheus) cost ~13 ms of CPU at every container start. The agent reaps the shim while it lives
// (no zombies); if the agent dies, the shim is reparented to init and
// carries on: nothing ties it to the agent (no parent-death signal, its own
// session and process group).
//
// The shim makes itself a child subreaper, records its pid and start time
// (shim.json), runs `runc --root Root/runc run --detach` with the
// container's stdout and stderr as pipes to itself; runc's init process,
// orphaned when runc exits, is reparented to the shim. The shim
// records the init's pid and start time and the start time of day
// (started.json), reports on fd 3, and copies the container's output, a
// record per line, to the log (rotated at Options.LogMaxBytes, three files
// kept). When the init exits the shim writes exit.json (exit code, or
// 128+signal, and times; via a temporary file, fsync and rename) before
// anything else, drains the output and exits. The exit code is thus never
// lost, even when no agent runs.
//
// runc is run from a sealed in-memory copy the Runtime makes once
// (runcbin.go), passed to each shim as fd 4: runc then skips the copy of
// itself (or read-only bind mount of itself on the host) it would make for
// every container's init against CVE-2019-5736. Processes run from it show
// as the fd's number in ps (their argv[0] is "runc").
//
// State tells "exited" when exit.json exists, "running" when the init
// (pid and start time, so a recycled pid is never mistaken for it) is
// alive, and "unknown" otherwise (a start that did not finish, a killed
// shim, a reboot).
//
// # State layout
//
//	Root/runc/                 runc's state (runc --root), not /run/runc
//	Root/pods/NAME/            CreatePodNetNS: userns, netns (bind-mounted ns files), ids.json
//	Root/containers/ID/        one directory per container (mode 0711)
//	    spec.json              the Spec (labels for re-adoption), mode 0600
//	    bundle/config.json     the OCI configuration, mode 0600
//	    bundle/rootfs/         overlay mount: lower Spec.Rootfs, upper/work below
//	    upper/ work/           the container's writable layer, owned by its mapped root
//	    etc/hosts, etc/hostname, etc/resolv.conf   bound read-only into the container
//	    sys/                   sysfs of a joined host-owned network namespace (if any)
//	    userns                 pin of a joined user namespace (if any) that is not a pod's of Root/pods
//	    shim.json started.json exit.json init.pid  see above
//	    shim.log runc.log      the shim's and runc's own messages
//	    log/container.log[.1,.2]   the container's output
//
// Every parent of Root must be searchable by others (o+x): the container's
// root is an unprivileged host user that must reach its bundle. New checks.
//
// # The default sandbox
//
// Nothing in Spec weakens it. Each container gets, in config.json:
//
//   - A new user namespace mapping container IDs 0..Size-1 to the host's
//     UserNS.HostID.. (UIDs and GIDs); HostID 0 is refused. The process
//     runs as Spec.UID:GID inside it, so on the host as HostID+UID.
//   - New PID, IPC, UTS, mount and cgroup namespaces; the network namespace
//     at Spec.NetNS, or a new one with only a loopback device (down).
//   - No capabilities: all five sets, bounding included, are empty.
//   - NoNewPrivileges.
//   - A seccomp allow-list (seccomp.go) as strict as Docker's default
//     profile for a container without capabilities: every other syscall
//     fails with EPERM. Denied, among others: mount, umount2, unshare,
//     setns, pivot_root, chroot, clone with namespace flags (an argument
//     filter; clone3 fails with ENOSYS so that libcs fall back to clone),
//     keyctl, add_key, request_key, ptrace, process_vm_*, bpf,
//     perf_event_open, kexec_*, *_module, reboot, swapon/off,
//     open_by_handle_at, name_to_handle_at, userfaultfd, acct, quotactl,
//     lookup_dcookie, the new mount API (fsopen, fsconfig, fsmount, fspick,
//     move_mount, open_tree, mount_setattr), io_uring, syslog, AF_VSOCK
//     sockets. Raw and packet sockets need CAP_NET_RAW, never granted.
//     Architectures: x86_64, x86 and (where the kernel runs x32
//     programs; many have x32 off) x32 on amd64; aarch64 and arm on
//     arm64.
//   - A read-only root: an overlay of Spec.Rootfs (never written) with a
//     per-container upper/work, mounted by Start on the host before runc
//     runs, readonly in the spec. Start creates the mount points (/proc,
//     /dev, /sys, /tmp, /etc/hosts ...) in the upper layer, through os.Root
//     so that image symlinks cannot lead out of the root.
//   - A writable tmpfs at /tmp: 64 MiB, nosuid, nodev, mode 1777.
//   - /proc; /dev as a tmpfs with only runc's default devices (null, zero,
//     full, random, urandom, tty, ptmx and the fd/stdio links), /dev/pts,
//     /dev/shm (64 MiB), /dev/mqueue; device cgroup: deny all but those.
//   - /sys read-only: a new sysfs when the container's user namespace owns
//     the network namespace; for a joined network namespace the host owns,
//     Start mounts its sysfs on the host and runc binds it read-only.
//   - Masked: /proc/acpi, /proc/kcore, /proc/keys, /proc/latency_stats,
//     /proc/timer_list, /proc/timer_stats, /proc/sched_debug, /proc/scsi,
//     /sys/firmware, /sys/devices/virtual/powercap. Read-only: /proc/asound,
//     /proc/bus, /proc/fs, /proc/irq, /proc/sys, /proc/sysrq-trigger.
//   - No host mounts but the container's own generated /etc/hosts,
//     /etc/hostname and /etc/resolv.conf (the host's without loopback name
//     servers, unless Spec.ResolvConf), bound read-only, nosuid, nodev,
//     noexec.
//   - Cgroup /skiff/ID (cgroupfs; v1 or v2): memory limit from MemoryBytes,
//     CPU quota CPUMilli/1000 of a 100ms period.
//   - AppArmor only where /sys/module/apparmor/parameters/enabled is Y and a
//     "skiff-default" (else "docker-default") profile is loaded; none
//     otherwise. No oom_score_adj (lowering it may be refused).
//
// # Pod network namespaces
//
// A user-namespaced container can mount a sysfs for, and with runc before
// 1.2 `runc exec` can only enter (runc issue 4390), a network namespace
// that its user namespace owns. CreatePodNetNS therefore makes a pod's
// network namespace together with a user namespace that maps the pod's
// UserNS, and Start makes containers whose NetNS such a user namespace owns
// join it (and refuses one whose UserNS differs, for namespaces made by
// CreatePodNetNS). A network namespace the host owns (ip netns add) works
// too, except for Exec with runc < 1.2, which then fails with an error
// that says so.
//
// # Not here
//
// Images (pulling, unpacking: Spec.Rootfs is an unpacked image root, read
// only) and networking (interfaces, addresses, routes, DNS servers: the
// caller configures the pod's network namespace) belong to other packages.
// Also not here: image user name lookup (Spec.UID/GID are numeric),
// supplementary groups, rlimits other than the shim's, restart policies,
// probes, and a terminal size for Exec other than 80x24.
package runtime
