//go:build linux

package runtime

import (
	goruntime "runtime"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// allowedSyscalls are allowed without conditions. The list follows
// Docker's default profile for a container without capabilities: what
// glibc, musl and busybox programs use, and none of the syscalls Docker
// reserves for CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_BOOT,
// CAP_SYSLOG, CAP_SYS_TIME, CAP_SYS_RAWIO, CAP_SYS_PACCT, CAP_SYS_NICE or
// CAP_DAC_READ_SEARCH (no such capability is ever granted). Names unknown
// to the kernel or libseccomp are skipped by runc.
//
// Denied (not listed) among others: mount, umount, umount2, unshare, setns,
// pivot_root, chroot, keyctl, add_key, request_key, ptrace, kcmp,
// process_vm_readv/writev, pidfd_getfd, process_madvise, bpf,
// perf_event_open, kexec_load, kexec_file_load, init_module, finit_module,
// delete_module, reboot, swapon, swapoff, open_by_handle_at,
// name_to_handle_at, userfaultfd, acct, quotactl, quotactl_fd,
// lookup_dcookie, mount_setattr, move_mount, open_tree, fsopen, fsconfig,
// fsmount, fspick, syslog, sethostname, setdomainname, settimeofday,
// clock_settime, iopl, ioperm, vhangup, fanotify_init, io_uring_setup,
// io_uring_enter, io_uring_register, mbind, set_mempolicy, move_pages,
// uselib, ustat, sysfs, _sysctl, nfsservctl, personality (other than the
// values below), clone with namespace flags.
var allowedSyscalls = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk",
	"cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32",
	"clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
	"clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
	"close", "close_range", "connect", "copy_file_range", "creat",
	"dup", "dup2", "dup3",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group",
	"faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
	"fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown",
	"fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
	"flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
	"fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64",
	"futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
	"futex_wake", "futimesat",
	"get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents",
	"getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
	"getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid",
	"getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
	"getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage", "getsid",
	"getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getuid32",
	"getxattr", "getxattrat",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
	"io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
	"io_pgetevents_time64", "io_setup", "io_submit", "ioctl", "ioprio_get",
	"ioprio_set", "ipc",
	"kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	"lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr",
	"listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr",
	"lstat", "lstat64",
	"madvise", "map_shadow_stack", "membarrier", "memfd_create", "mincore",
	"mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
	"mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
	"mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
	"mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget",
	"msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
	"nanosleep", "newfstatat", "_newselect",
	"open", "openat", "openat2",
	"pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
	"pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
	"pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
	"pselect6_time64", "pwrite64", "pwritev", "pwritev2",
	"read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
	"recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
	"removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "rmdir",
	"rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
	"rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
	"rt_tgsigqueueinfo",
	"sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
	"sched_getattr", "sched_getparam", "sched_getscheduler",
	"sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
	"sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
	"seccomp", "select", "semctl", "semget", "semop", "semtimedop",
	"semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
	"sendto", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid",
	"setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
	"setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
	"setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
	"setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32",
	"setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
	"socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64",
	"statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
	"tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
	"timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
	"timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
	"timerfd_settime64", "times", "tkill", "truncate", "truncate64",
	"ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
	"utimensat_time64", "utimes",
	"vfork", "vmsplice",
	"wait4", "waitid", "waitpid", "write", "writev",
}

// nsFlags are the clone flags that create namespaces.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// defaultSeccomp is the container's seccomp profile: an allow-list; every
// other syscall fails with EPERM.
func defaultSeccomp() *specs.LinuxSeccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	allow := func(names ...string) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: names, Action: specs.ActAllow}
	}
	calls := []specs.LinuxSyscall{allow(allowedSyscalls...)}
	// personality: only the harmless domains (Linux, UNAME26, 32-bit
	// address space) and the query.
	for _, v := range []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff} {
		c := allow("personality")
		c.Args = []specs.LinuxSeccompArg{{Index: 0, Value: v, Op: specs.OpEqualTo}}
		calls = append(calls, c)
	}
	// socket: any family but AF_VSOCK (raw and packet sockets need
	// CAP_NET_RAW, which is never granted).
	sock := allow("socket")
	sock.Args = []specs.LinuxSeccompArg{{Index: 0, Value: unix.AF_VSOCK, Op: specs.OpNotEqual}}
	calls = append(calls, sock)
	// clone without namespace flags (the flags are argument 0 on every
	// architecture but s390).
	clone := allow("clone")
	clone.Args = []specs.LinuxSeccompArg{{Index: 0, Value: nsFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}}
	calls = append(calls, clone)
	// clone3 passes its flags in memory, out of seccomp's reach: make it
	// look absent, so that libcs fall back to clone.
	calls = append(calls, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys})

	var arches []specs.Arch
	switch goruntime.GOARCH {
	case "amd64":
		arches = []specs.Arch{specs.ArchX86_64, specs.ArchX86}
		if x32Enabled() {
			arches = append(arches, specs.ArchX32)
		}
		calls = append(calls, allow("arch_prctl", "modify_ldt"))
	case "arm64":
		arches = []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
		calls = append(calls, allow("arm_fadvise64_64", "arm_sync_file_range",
			"sync_file_range2", "breakpoint", "cacheflush", "set_tls"))
	case "386":
		arches = []specs.Arch{specs.ArchX86}
		calls = append(calls, allow("modify_ldt"))
	}
	return &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &eperm,
		Architectures:   arches,
		Syscalls:        calls,
	}
}

// x32Enabled tells, on amd64, whether the kernel runs x32 programs
// (CONFIG_X86_X32_ABI, and not booted with syscall.x32=n; many kernels
// have it off, this VM's included): an x32 getpid (bit 30 set on x86_64's number 39) returns
// a pid, else ENOSYS.
//
// The x32 rules are left out of the profile where the kernel has no x32:
// each architecture in the profile is a copy of the rules that libseccomp
// compiles in every runc init, ~6 ms of CPU per container start each (see
// BenchmarkStart). That is no weakening: the profile is an allow-list, so a
// syscall of an architecture it does not list matches no rule (x32 numbers
// all have bit 30 set) and is refused, as it would be by the kernel.
var x32Enabled = sync.OnceValue(func() bool {
	const x32SyscallBit, sysGetpidAMD64 = 0x40000000, 39
	_, _, errno := unix.RawSyscall(x32SyscallBit|sysGetpidAMD64, 0, 0, 0)
	return errno == 0
})
