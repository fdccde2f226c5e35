//go:build linux

package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var recordRE = regexp.MustCompile(`^(\S+) (stdout|stderr) (.*)$`)

// TestExitCodeAndLogs runs a container through skiff-shim (cmd/skiff-shim),
// as the agent does when skiff-shim is installed next to skiff.
func TestExitCodeAndLogs(t *testing.T) {
	r, _ := newTestRuntime(t)
	exitCodeAndLogs(t, r)
}

// TestShimFallback runs a container through `EXE shim`, the default
// Options and what the agent does with a lone skiff binary: EXE is this
// test binary, wired as cmd/skiff (see TestMain).
func TestShimFallback(t *testing.T) {
	r, _ := newTestRuntimeWith(t, Options{})
	exe, _ := os.Executable()
	if r.shim != exe || !slices.Equal(r.shimArgs, []string{"shim"}) {
		t.Fatalf("default shim %q %q, want %q [shim]", r.shim, r.shimArgs, exe)
	}
	exitCodeAndLogs(t, r)
}

func exitCodeAndLogs(t *testing.T, r *Runtime) {
	t.Helper()
	s := testSpec(t, "sh", "-c", "echo hello; echo oops >&2; exit 3")
	before := time.Now()
	startOK(t, r, s)
	st := waitExited(t, r, s.ID, 10*time.Second)
	if st.ExitCode != 3 {
		t.Errorf("ExitCode = %d, want 3", st.ExitCode)
	}
	if st.StartedAt.Before(before.Add(-time.Second)) || st.FinishedAt.Before(st.StartedAt) || st.Pid == 0 {
		t.Errorf("bad times/pid: %+v", st)
	}
	if st.Labels["container"] != "app" {
		t.Errorf("Labels = %v", st.Labels)
	}
	recs := readLogs(t, r, s.ID)
	got := map[string]string{}
	for _, rec := range recs {
		m := recordRE.FindStringSubmatch(rec)
		if m == nil {
			t.Fatalf("bad log record %q", rec)
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Errorf("bad timestamp in %q: %v", rec, err)
		}
		got[m[3]] = m[2]
	}
	if got["hello"] != "stdout" || got["oops"] != "stderr" || len(recs) != 2 {
		t.Errorf("log records = %q", recs)
	}
}

// exec runs a command in the container and returns its exit code and
// combined output.
func execIn(t *testing.T, r *Runtime, id string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := r.Exec(ctx, id, args, nil, &out, &out, false)
	if err != nil {
		t.Fatalf("Exec %q: %v", args, err)
	}
	return code, out.String()
}

func execErr(r *Runtime, id string, args ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := r.Exec(ctx, id, args, nil, &out, &out, false)
	return code, out.String(), err
}

func TestSandbox(t *testing.T) {
	r, _ := newTestRuntime(t)
	s := testSpec(t, "sleep", "600")
	startOK(t, r, s)
	st, err := r.State(s.ID)
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("State = %+v, %v", st, err)
	}

	ok := func(want string, args ...string) string {
		t.Helper()
		code, out := execIn(t, r, s.ID, args...)
		if code != 0 {
			t.Errorf("%q: exit %d, want 0; output %q", args, code, out)
		}
		if want != "" && !strings.Contains(out, want) {
			t.Errorf("%q: output %q, want it to contain %q", args, out, want)
		}
		return out
	}
	fails := func(args ...string) string {
		t.Helper()
		code, out := execIn(t, r, s.ID, args...)
		if code == 0 {
			t.Errorf("%q succeeded, want it to fail; output %q", args, out)
		}
		return out
	}

	// Non-root inside the user namespace...
	if out := ok("", "id", "-u"); strings.TrimSpace(out) != "1000" {
		t.Errorf("id -u = %q, want 1000", out)
	}
	ok("1000", "id", "-g")
	// ... and an unprivileged, mapped uid on the host.
	status, err := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	wantUID := strconv.Itoa(int(s.UserNS.HostID + s.UID))
	wantGID := strconv.Itoa(int(s.UserNS.HostID + s.GID))
	if f := statusField(string(status), "Uid"); len(f) == 0 || f[0] != wantUID || f[1] != wantUID {
		t.Errorf("host Uid of the container's process = %v, want %s", f, wantUID)
	}
	if f := statusField(string(status), "Gid"); len(f) == 0 || f[0] != wantGID {
		t.Errorf("host Gid of the container's process = %v, want %s", f, wantGID)
	}
	uidMap, _ := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/uid_map")
	if f := strings.Fields(string(uidMap)); len(f) != 3 || f[0] != "0" || f[1] != strconv.Itoa(int(s.UserNS.HostID)) || f[2] != "65536" {
		t.Errorf("uid_map = %q", uidMap)
	}

	// No capabilities, no new privileges, seccomp filter.
	proc := ok("", "cat", "/proc/self/status")
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000"} {
		if !strings.Contains(proc, want) {
			t.Errorf("/proc/self/status lacks %q:\n%s", want, proc)
		}
	}
	// The same holds for the container's own process, seen from the host.
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("host /proc/%d/status lacks %q", st.Pid, want)
		}
	}

	fails("mount", "-t", "tmpfs", "x", "/mnt")
	fails("unshare", "-U", "true")
	fails("unshare", "-r", "true")
	fails("unshare", "-n", "true")
	fails("nsenter", "-t", "1", "-U", "true")
	fails("chroot", "/", "true")
	// Raw and packet sockets need CAP_NET_RAW.
	if out := fails("ping", "-c1", "-W1", "127.0.0.1"); !strings.Contains(strings.ToLower(out), "permission denied") && !strings.Contains(strings.ToLower(out), "not permitted") {
		t.Errorf("ping failed for another reason than permissions: %q", out)
	}
	if out := fails("arping", "-c1", "-w1", "-I", "lo", "127.0.0.1"); !strings.Contains(strings.ToLower(out), "not permitted") && !strings.Contains(strings.ToLower(out), "permission denied") {
		t.Errorf("arping failed for another reason than permissions: %q", out)
	}
	// Read-only root, /proc/sys and /sys; writable /tmp.
	fails("touch", "/x")
	fails("touch", "/etc/x")
	fails("sh", "-c", "echo x > /etc/hosts")
	fails("sh", "-c", "echo 1 > /proc/sysrq-trigger")
	fails("sh", "-c", "echo 1 > /proc/sys/kernel/printk")
	fails("touch", "/sys/x")
	ok("", "sh", "-c", "touch /tmp/x && echo data > /tmp/y && cat /tmp/y && touch /dev/shm/x")
	if out := ok("", "stat", "-c", "%a %u", "/tmp"); strings.TrimSpace(out) != "1777 0" {
		t.Errorf("/tmp mode and owner = %q, want 1777 0", out)
	}
	fails("sh", "-c", "head -c 70000000 /dev/zero > /tmp/big") // size-limited
	ok("", "rm", "-f", "/tmp/big")
	fails("touch", "/dev/x")
	mounts := ok("", "cat", "/proc/mounts")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^overlay / overlay ro[,\s]`),
		regexp.MustCompile(`(?m)^\S+ /tmp tmpfs rw,nosuid,nodev,.*size=65536k`),
		regexp.MustCompile(`(?m)^\S+ /sys sysfs ro[,\s]`),
		regexp.MustCompile(`(?m)^\S+ /etc/hosts \S+ ro[,\s]`),
		regexp.MustCompile(`(?m)^\S+ /etc/resolv.conf \S+ ro[,\s]`),
		regexp.MustCompile(`(?m)^\S+ /etc/hostname \S+ ro[,\s]`),
		regexp.MustCompile(`(?m)^\S+ /proc/sys proc ro[,\s]`),
		regexp.MustCompile(`(?m)^\S+ /dev/shm tmpfs `),
		regexp.MustCompile(`(?m)^\S+ /dev/mqueue mqueue `),
		regexp.MustCompile(`(?m)^\S+ /dev/pts devpts `),
	} {
		if !want.MatchString(mounts) {
			t.Errorf("/proc/mounts has no line matching %s:\n%s", want, mounts)
		}
	}
	// Masked paths (those this kernel has) read empty.
	for _, p := range maskedPaths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		args := []string{"cat", p}
		if fi.IsDir() {
			args = []string{"ls", "-A", p}
		}
		if out := ok("", args...); out != "" {
			t.Errorf("masked %s is not empty: %q", p, out)
		}
	}
	// Only the standard devices.
	devs := strings.Fields(ok("", "ls", "-A", "/dev"))
	allowed := map[string]bool{"null": true, "zero": true, "full": true, "random": true, "urandom": true, "tty": true,
		"pts": true, "ptmx": true, "shm": true, "mqueue": true, "fd": true, "stdin": true, "stdout": true, "stderr": true, "core": true}
	for _, d := range devs {
		if !allowed[d] {
			t.Errorf("unexpected /dev/%s (ls /dev: %v)", d, devs)
		}
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if !strings.Contains(" "+strings.Join(devs, " ")+" ", " "+d+" ") {
			t.Errorf("/dev/%s missing (ls /dev: %v)", d, devs)
		}
	}
	ok("", "sh", "-c", "head -c 16 /dev/urandom > /dev/null && echo x > /dev/null")
	// Hostname and generated /etc files.
	ok("web-0", "hostname")
	ok("web-0", "cat", "/etc/hostname")
	ok("127.0.0.1\tlocalhost", "cat", "/etc/hosts")
	// Processes: a new PID namespace with the container's init as 1.
	if out := ok("", "cat", "/proc/1/cmdline"); !strings.HasPrefix(out, "sleep") {
		t.Errorf("pid 1 is %q, want sleep", out)
	}
}

func statusField(status, key string) []string {
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.Fields(v)
		}
	}
	return nil
}

func TestConfigSandbox(t *testing.T) {
	// No root needed: the configuration as written for runc.
	r := &Runtime{root: "/var/lib/skiff/runtime"}
	s := &Spec{ID: "c1", Rootfs: "/img", Args: []string{"app"}, UID: 1000, GID: 2000,
		UserNS: IDRange{HostID: 100000, Size: 65536}, CPUMilli: 500, MemoryBytes: 64 << 20, NetNS: "/run/netns/pod"}
	b, err := json.Marshal(r.config(s, "h", "/", nsOpts{}))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	json.Unmarshal(b, &cfg)
	get := func(path ...string) any {
		var v any = cfg
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	if caps, ok := get("process", "capabilities").(map[string]any); !ok || len(caps) != 0 {
		t.Errorf("capabilities = %v, want present and empty (no bounding/effective/permitted/inheritable/ambient)", get("process", "capabilities"))
	}
	if get("process", "noNewPrivileges") != true {
		t.Error("noNewPrivileges not set")
	}
	if get("process", "oomScoreAdj") != nil {
		t.Error("oomScoreAdj must not be set")
	}
	if u := get("process", "user").(map[string]any); u["uid"] != 1000.0 || u["gid"] != 2000.0 {
		t.Errorf("user = %v", u)
	}
	if get("root", "readonly") != true || get("root", "path") != "rootfs" {
		t.Errorf("root = %v", get("root"))
	}
	for _, k := range []string{"uidMappings", "gidMappings"} {
		m := get("linux", k).([]any)
		if len(m) != 1 || m[0].(map[string]any)["hostID"] != 100000.0 || m[0].(map[string]any)["size"] != 65536.0 || m[0].(map[string]any)["containerID"] != 0.0 {
			t.Errorf("%s = %v", k, m)
		}
	}
	ns := map[string]string{}
	for _, n := range get("linux", "namespaces").([]any) {
		m := n.(map[string]any)
		p, _ := m["path"].(string)
		ns[m["type"].(string)] = p
	}
	for _, typ := range []string{"pid", "ipc", "uts", "mount", "user", "network", "cgroup"} {
		if _, ok := ns[typ]; !ok {
			t.Errorf("no %s namespace", typ)
		}
	}
	if ns["network"] != "/run/netns/pod" || ns["user"] != "" {
		t.Errorf("namespaces = %v", ns)
	}
	if get("linux", "cgroupsPath") != "/skiff/c1" {
		t.Errorf("cgroupsPath = %v", get("linux", "cgroupsPath"))
	}
	if get("linux", "resources", "memory", "limit") != float64(64<<20) {
		t.Errorf("memory = %v", get("linux", "resources", "memory"))
	}
	if get("linux", "resources", "cpu", "quota") != 50000.0 || get("linux", "resources", "cpu", "period") != 100000.0 {
		t.Errorf("cpu = %v", get("linux", "resources", "cpu"))
	}
	mounts := map[string]map[string]any{}
	for _, m := range cfg["mounts"].([]any) {
		mm := m.(map[string]any)
		mounts[mm["destination"].(string)] = mm
		if src, _ := mm["source"].(string); mm["type"] == "bind" && !strings.HasPrefix(src, "/var/lib/skiff/runtime/containers/c1/etc/") {
			t.Errorf("host bind mount %v", mm)
		}
	}
	for _, d := range []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/tmp", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} {
		if mounts[d] == nil {
			t.Errorf("no %s mount", d)
		}
	}
	if len(mounts) != 10 {
		t.Errorf("%d mounts, want 10", len(mounts))
	}
	opts := func(d string) string {
		var o []string
		for _, x := range mounts[d]["options"].([]any) {
			o = append(o, x.(string))
		}
		return "," + strings.Join(o, ",") + ","
	}
	for d, want := range map[string][]string{
		"/tmp":             {"nosuid", "nodev", "size=64m", "mode=1777"},
		"/sys":             {"ro", "nosuid", "nodev", "noexec"},
		"/etc/hosts":       {"ro", "bind"},
		"/etc/resolv.conf": {"ro", "bind"},
		"/etc/hostname":    {"ro", "bind"},
	} {
		for _, w := range want {
			if !strings.Contains(opts(d), ","+w+",") {
				t.Errorf("%s options %s lack %s", d, opts(d), w)
			}
		}
	}
	masked := strings.Join(anyStrings(get("linux", "maskedPaths")), " ")
	for _, p := range []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"} {
		if !strings.Contains(" "+masked+" ", " "+p+" ") {
			t.Errorf("%s not masked", p)
		}
	}
	ro := strings.Join(anyStrings(get("linux", "readonlyPaths")), " ")
	for _, p := range []string{"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"} {
		if !strings.Contains(" "+ro+" ", " "+p+" ") {
			t.Errorf("%s not read-only", p)
		}
	}
	devs := get("linux", "resources", "devices").([]any)
	if d := devs[0].(map[string]any); d["allow"] != false || d["access"] != "rwm" {
		t.Errorf("device cgroup does not start with deny-all: %v", devs)
	}
	if get("process", "apparmorProfile") != nil && apparmorProfile() == "" {
		t.Error("apparmor profile set where AppArmor is not enabled")
	}

	// Seccomp.
	sc := get("linux", "seccomp").(map[string]any)
	if sc["defaultAction"] != "SCMP_ACT_ERRNO" || sc["defaultErrnoRet"] != 1.0 {
		t.Errorf("seccomp default = %v / %v", sc["defaultAction"], sc["defaultErrnoRet"])
	}
	arches := strings.Join(anyStrings(sc["architectures"]), " ")
	want := map[string][]string{"amd64": {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86"}, "arm64": {"SCMP_ARCH_AARCH64"}}[goruntime.GOARCH]
	if goruntime.GOARCH == "amd64" && x32Enabled() {
		want = append(want, "SCMP_ARCH_X32")
	}
	for _, a := range want {
		if !strings.Contains(" "+arches+" ", " "+a+" ") {
			t.Errorf("architectures %s lack %s", arches, a)
		}
	}
	allowed := map[string]bool{}
	conditional := map[string]bool{}
	for _, c := range sc["syscalls"].([]any) {
		m := c.(map[string]any)
		for _, n := range anyStrings(m["names"]) {
			if m["action"] == "SCMP_ACT_ALLOW" {
				if m["args"] != nil {
					conditional[n] = true
				} else {
					allowed[n] = true
				}
			}
		}
	}
	for _, n := range []string{"mount", "umount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "ptrace",
		"bpf", "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
		"swapon", "swapoff", "pivot_root", "chroot", "open_by_handle_at", "name_to_handle_at", "userfaultfd", "acct",
		"quotactl", "lookup_dcookie", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
		"syslog", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "io_uring_setup", "clone3", "sethostname",
		"settimeofday", "iopl", "ioperm", "vhangup", "fanotify_init"} {
		if allowed[n] || conditional[n] {
			t.Errorf("seccomp allows %s", n)
		}
	}
	for _, n := range []string{"read", "write", "openat", "execve", "mmap", "futex", "exit_group", "wait4", "fork", "rt_sigaction", "epoll_wait", "getrandom", "arch_prctl"} {
		if !allowed[n] && goruntime.GOARCH == "amd64" {
			t.Errorf("seccomp denies %s", n)
		}
	}
	for _, n := range []string{"clone", "personality", "socket"} {
		if allowed[n] || !conditional[n] {
			t.Errorf("%s must be allowed with argument filters only", n)
		}
	}
	for _, c := range sc["syscalls"].([]any) {
		m := c.(map[string]any)
		if anyStrings(m["names"])[0] == "clone" {
			a := m["args"].([]any)[0].(map[string]any)
			if a["op"] != "SCMP_CMP_MASKED_EQ" || a["value"] != float64(0x7E020000) || a["index"] != nil && a["index"] != 0.0 {
				t.Errorf("clone filter = %v", a)
			}
		}
	}
}

func anyStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestExec(t *testing.T) {
	r, _ := newTestRuntime(t)
	s := testSpec(t, "sleep", "600")
	s.Cwd = "/www"
	s.Env = append(s.Env, "GREETING=hi")
	startOK(t, r, s)
	if code, _ := execIn(t, r, s.ID, "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
	if code, out := execIn(t, r, s.ID, "sh", "-c", "pwd; echo $GREETING"); code != 0 || out != "/www\nhi\n" {
		t.Errorf("exec = %d %q", code, out)
	}
	// Killed by a signal: 128+9.
	if code, _ := execIn(t, r, s.ID, "sh", "-c", "kill -9 $$"); code != 137 {
		t.Errorf("exit code %d, want 137", code)
	}
	// Separate stdout and stderr, and stdin.
	var stdout, stderr bytes.Buffer
	code, err := r.Exec(context.Background(), s.ID, []string{"sh", "-c", "cat; echo e >&2"}, strings.NewReader("in\n"), &stdout, &stderr, false)
	if err != nil || code != 0 || stdout.String() != "in\n" || stderr.String() != "e\n" {
		t.Errorf("exec with stdin = %d, %v, %q, %q", code, err, stdout.String(), stderr.String())
	}
	// A missing program is an error, not an exit code.
	_, err = r.Exec(context.Background(), s.ID, []string{"nosuchprog"}, nil, nil, nil, false)
	if err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("exec of a missing program: err = %v", err)
	}
	// A terminal.
	var tout bytes.Buffer
	code, err = r.Exec(context.Background(), s.ID, []string{"sh", "-c", "tty; exit 4"}, nil, &tout, nil, true)
	if err != nil || code != 4 || !strings.Contains(tout.String(), "/dev/pts/") {
		t.Errorf("tty exec = %d, %v, %q", code, err, tout.String())
	}
	// Not running: an error.
	if _, err := r.Exec(context.Background(), "nosuch", []string{"true"}, nil, nil, nil, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("exec in a missing container: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	r, root := newTestRuntime(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"htpd"}, `exec: "htpd": executable file not found in $PATH`},
		{[]string{"/bin/nosuch"}, `exec: "/bin/nosuch": no such file or directory`},
		{[]string{"notaprog"}, `exec: "notaprog": exec format error`},
		{[]string{"/www/index.html"}, `exec: "/www/index.html": permission denied`},
	} {
		s := testSpec(t, tc.args...)
		err := r.Start(context.Background(), s)
		if err == nil || err.Error() != "container "+s.ID+": "+tc.want {
			t.Errorf("Start %q: err = %v, want %q", tc.args, err, tc.want)
		}
		if _, err := os.Stat(r.dir(s.ID)); !os.IsNotExist(err) {
			t.Errorf("failed Start left %s behind", r.dir(s.ID))
		}
	}
	if mps, _ := mountsUnder(root); len(mps) > 0 {
		t.Errorf("failed Starts left mounts: %v", mps)
	}
	// A cancelled Start leaves nothing either.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := testSpec(t, "sleep", "600")
	if err := r.Start(ctx, s); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled context: %v", err)
	}
	if _, err := os.Stat(r.dir(s.ID)); !os.IsNotExist(err) {
		t.Errorf("cancelled Start left %s behind", r.dir(s.ID))
	}
	if _, err := os.Stat(filepath.Join(root, "runc", s.ID)); !os.IsNotExist(err) {
		t.Errorf("cancelled Start left runc state behind")
	}
	// Invalid specs.
	s = testSpec(t, "true")
	s.UserNS = IDRange{}
	if err := r.Start(context.Background(), s); err == nil {
		t.Error("Start without a user namespace succeeded")
	}
	s = testSpec(t, "true")
	s.UID = 70000
	if err := r.Start(context.Background(), s); err == nil {
		t.Error("Start with an unmapped uid succeeded")
	}
	// Twice the same ID.
	s = testSpec(t, "sleep", "600")
	startOK(t, r, s)
	if err := r.Start(context.Background(), s); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second Start: %v", err)
	}
	if st, _ := r.State(s.ID); st.Status != StatusRunning {
		t.Errorf("the first container suffered from the second Start: %+v", st)
	}
	// Remove refuses a running container.
	if err := r.Remove(context.Background(), s.ID); !errors.Is(err, ErrRunning) {
		t.Errorf("Remove of a running container: %v", err)
	}
}

func TestStop(t *testing.T) {
	r, _ := newTestRuntime(t)
	polite := testSpec(t, "sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done")
	stubborn := testSpec(t, "sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done")
	startOK(t, r, polite)
	startOK(t, r, stubborn)
	// Signal only once sh has set its trap.
	for _, id := range []string{polite.ID, stubborn.ID} {
		deadline := time.Now().Add(10 * time.Second)
		for len(readLogs(t, r, id)) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}

	start := time.Now()
	if err := r.Stop(context.Background(), polite.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("a container that exits on TERM took %v to stop", d)
	}
	st, _ := r.State(polite.ID)
	if st.Status != StatusExited || st.ExitCode != 0 || st.FinishedAt.Before(st.StartedAt) || st.FinishedAt.IsZero() {
		t.Errorf("polite: %+v", st)
	}
	if recs := readLogs(t, r, polite.ID); len(recs) != 2 || !strings.HasSuffix(recs[1], " stdout bye") {
		t.Errorf("polite logs: %q", recs)
	}

	start = time.Now()
	grace := 700 * time.Millisecond
	if err := r.Stop(context.Background(), stubborn.ID, grace); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < grace || d > grace+8*time.Second {
		t.Errorf("a container that ignores TERM took %v to stop, grace %v", d, grace)
	}
	st, _ = r.State(stubborn.ID)
	if st.Status != StatusExited || st.ExitCode != 128+int(syscall.SIGKILL) || st.FinishedAt.Sub(st.StartedAt) < grace {
		t.Errorf("stubborn: %+v", st)
	}
	// Idempotent.
	if err := r.Stop(context.Background(), stubborn.ID, grace); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := r.Stop(context.Background(), "nosuch", grace); err != nil {
		t.Errorf("Stop of a missing container: %v", err)
	}
}

func TestResourceLimits(t *testing.T) {
	r, _ := newTestRuntime(t)
	s := testSpec(t, "sleep", "600")
	s.MemoryBytes = 48 << 20
	s.CPUMilli = 250
	startOK(t, r, s)
	st, _ := r.State(s.ID)
	mem, err := hostCgroupFile(st.Pid, "memory", "memory.limit_in_bytes", "memory.max")
	if err != nil {
		t.Fatal(err)
	}
	if mem != strconv.Itoa(48<<20) {
		t.Errorf("memory limit = %s, want %d", mem, 48<<20)
	}
	cpu, err := hostCgroupFile(st.Pid, "cpu", "cpu.cfs_quota_us", "cpu.max")
	if err != nil {
		t.Fatal(err)
	}
	if cpu != "25000" && cpu != "25000 100000" {
		t.Errorf("cpu quota = %q, want 25000 (per 100000)", cpu)
	}
	// The cgroup is under "skiff" and named after the container.
	cg, _ := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/cgroup")
	if !strings.Contains(string(cg), "/skiff/"+s.ID) {
		t.Errorf("/proc/%d/cgroup = %s", st.Pid, cg)
	}
	if err := r.Stop(context.Background(), s.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/sys/fs/cgroup/memory/skiff/" + s.ID, "/sys/fs/cgroup/skiff/" + s.ID} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left after Remove", d)
		}
	}
}

// hostCgroupFile reads a cgroup file of the process from the host: v1
// (controller hierarchy) or v2 (unified).
func hostCgroupFile(pid int, controller, v1file, v2file string) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, parts[2], v1file))
				return strings.TrimSpace(string(v)), err
			}
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", p, v2file))
			return strings.TrimSpace(string(v)), err
		}
	}
	return "", errors.New("no cgroup for " + controller)
}

func TestSurvivesStarterDeath(t *testing.T) {
	_, root := newTestRuntime(t)
	s := testSpec(t, "sh", "-c", "echo up; while [ ! -e /tmp/go ]; do sleep 0.05; done; sleep 1; exit 5")
	in, _ := json.Marshal(map[string]any{"Options": Options{Root: root, Shim: testShim}, "Spec": s})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(self)
	helper.Env = append(os.Environ(), helperEnv+"="+string(in))
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var helperErr bytes.Buffer
	helper.Stderr = &helperErr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 8)
	n, _ := out.Read(line)
	if string(line[:n]) != "started\n" {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("helper: %q %s", line[:n], helperErr.String())
	}
	// kill -9 of the agent.
	helper.Process.Signal(syscall.SIGKILL)
	helper.Wait()

	r2 := testRuntimeOn(t, root)
	sts, err := r2.List()
	if err != nil || len(sts) != 1 || sts[0].ID != s.ID || sts[0].Status != StatusRunning || sts[0].Labels["pod"] != "default/web" {
		t.Fatalf("List after the starter died = %+v, %v", sts, err)
	}
	if code, _ := execIn(t, r2, s.ID, "touch", "/tmp/go"); code != 0 {
		t.Fatal("touch /tmp/go failed")
	}
	r2 = nil
	// The container exits while no Runtime exists.
	time.Sleep(1500 * time.Millisecond)
	var sh shimRecord
	readJSON(filepath.Join(root, "containers", s.ID, fileShim), &sh)
	deadline := time.Now().Add(10 * time.Second)
	for procAlive(sh.Pid, sh.PidStart) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if procAlive(sh.Pid, sh.PidStart) {
		t.Fatal("the shim outlived its container")
	}
	r3 := testRuntimeOn(t, root)
	st, err := r3.State(s.ID)
	if err != nil || st.Status != StatusExited || st.ExitCode != 5 {
		t.Fatalf("State after exit = %+v, %v", st, err)
	}
	if recs := readLogs(t, r3, s.ID); len(recs) != 1 || !strings.HasSuffix(recs[0], " stdout up") {
		t.Errorf("logs = %q", recs)
	}
}

func TestSharedNetNS(t *testing.T) {
	r, root := newTestRuntime(t)
	// Two containers of a pod, in one network namespace: an httpd and a
	// wget of it over 127.0.0.1.
	pod := func(t *testing.T, netns string, ids IDRange) (server, client Spec) {
		server = testSpec(t, "httpd", "-f", "-v", "-p", "127.0.0.1:8080", "-h", "/www")
		server.NetNS, server.UserNS = netns, ids
		startOK(t, r, server)
		client = testSpec(t, "sh", "-c", "for i in $(seq 50); do wget -q -O - http://127.0.0.1:8080/index.html && exit 0; sleep 0.1; done; exit 1")
		client.NetNS, client.UserNS = netns, ids
		startOK(t, r, client)
		st := waitExited(t, r, client.ID, 15*time.Second)
		recs := readLogs(t, r, client.ID)
		if st.ExitCode != 0 || len(recs) == 0 || !strings.HasSuffix(recs[len(recs)-1], " stdout hello from httpd") {
			t.Errorf("client exit %d, logs %q; server logs %q", st.ExitCode, recs, readLogs(t, r, server.ID))
		}
		return server, client
	}

	t.Run("PodNetNS", func(t *testing.T) {
		ids := testUserNS()
		netns, err := r.CreatePodNetNS("pod-"+testID(t)[len(testID(t))-6:], ids)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(filepath.Dir(netns))
		if again, err := r.CreatePodNetNS(name, ids); err != nil || again != netns {
			t.Errorf("CreatePodNetNS again = %q, %v; want the same namespace", again, err)
		}
		if _, err := r.CreatePodNetNS(name, testUserNS()); err == nil {
			t.Error("CreatePodNetNS with other ids succeeded")
		}
		defer func() {
			if err := r.RemovePodNetNS(name); err != nil {
				t.Error(err)
			}
			if mps, _ := mountsUnder(filepath.Join(root, "pods")); len(mps) > 0 {
				t.Errorf("pod namespaces still mounted: %v", mps)
			}
		}()
		server, _ := pod(t, netns, ids)
		// Its /sys is the pod network namespace's, read-only; exec works.
		if code, out := execIn(t, r, server.ID, "ls", "/sys/class/net"); code != 0 || strings.TrimSpace(out) != "lo" {
			t.Errorf("/sys/class/net in the pod = %d %q, want lo only", code, out)
		}
		if code, _ := execIn(t, r, server.ID, "touch", "/sys/x"); code == 0 {
			t.Error("/sys is writable")
		}
		if code, out := execIn(t, r, server.ID, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"); code != 0 || out != "hello from httpd\n" {
			t.Errorf("wget in exec = %d %q", code, out)
		}
		// Still no capability, even as the pod user namespace's members.
		if code, out := execIn(t, r, server.ID, "grep", "CapEff", "/proc/self/status"); code != 0 || !strings.Contains(out, "0000000000000000") {
			t.Errorf("CapEff = %q", out)
		}
		// Host uid as mapped.
		st, _ := r.State(server.ID)
		status, _ := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/status")
		if f := statusField(string(status), "Uid"); len(f) == 0 || f[0] != strconv.Itoa(int(ids.HostID+1000)) {
			t.Errorf("host uid = %v", f)
		}
		// A container with another mapping may not join.
		bad := testSpec(t, "true")
		bad.NetNS = netns
		if err := r.Start(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "pod user namespace") {
			t.Errorf("Start with a mismatched user namespace: %v", err)
		}
		r.Stop(context.Background(), server.ID, 0)
	})

	t.Run("HostNetNS", func(t *testing.T) {
		// A network namespace created by the host (ip netns add): the
		// containers run and talk; exec needs runc >= 1.2.
		if _, err := exec.LookPath("ip"); err != nil {
			t.Skip("needs iproute2 (ip)")
		}
		name := "skiff-test-" + testID(t)[len(testID(t))-6:]
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v %s", err, out)
		}
		defer exec.Command("ip", "netns", "delete", name).Run()
		if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("lo up: %v %s", err, out)
		}
		server, _ := pod(t, "/run/netns/"+name, testUserNS())
		if code, out, err := execErr(r, server.ID, "ls", "/sys/class/net"); err != nil {
			if !strings.Contains(err.Error(), "CreatePodNetNS") {
				t.Errorf("exec error without the why: %v", err)
			}
			t.Logf("as expected with runc < 1.2: %v", err)
		} else if code != 0 || strings.TrimSpace(out) != "lo" {
			t.Errorf("/sys/class/net = %d %q, want lo only", code, out)
		}
		r.Stop(context.Background(), server.ID, 0)
	})

	// A container with no NetNS has its own, with only a loopback device.
	alone := testSpec(t, "sh", "-c", "ls /sys/class/net; wget -q -T 1 -O - http://127.0.0.1:8080/ && exit 0; exit 9")
	startOK(t, r, alone)
	if st := waitExited(t, r, alone.ID, 10*time.Second); st.ExitCode != 9 {
		t.Errorf("a container in its own network namespace: %+v %q", st, readLogs(t, r, alone.ID))
	}
	// (stdout and stderr records may interleave either way; busybox wget
	// may crash on an unreachable network.)
	var out []string
	for _, rec := range readLogs(t, r, alone.ID) {
		if m := recordRE.FindStringSubmatch(rec); m != nil && m[2] == "stdout" {
			out = append(out, m[3])
		}
	}
	if len(out) != 1 || out[0] != "lo" {
		t.Errorf("alone: /sys/class/net = %q, want lo only", out)
	}
}

func TestRemove(t *testing.T) {
	r, root := newTestRuntime(t)
	s := testSpec(t, "sh", "-c", "echo x > /tmp/x; exit 0")
	startOK(t, r, s)
	waitExited(t, r, s.ID, 10*time.Second)
	dir := filepath.Join(root, "containers", s.ID)
	if mps, _ := mountsUnder(dir); len(mps) == 0 {
		t.Error("the container's root is not mounted before Remove")
	}
	if err := r.Remove(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	if mps, _ := mountsUnder(dir); len(mps) > 0 {
		t.Errorf("still mounted after Remove: %v", mps)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), s.ID) {
		t.Errorf("mountinfo still mentions %s", s.ID)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "runc", s.ID)); !os.IsNotExist(err) {
		t.Errorf("runc state left: %v", err)
	}
	if _, err := r.State(s.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("State after Remove: %v", err)
	}
	if err := r.Remove(context.Background(), s.ID); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if sts, _ := r.List(); len(sts) != 0 {
		t.Errorf("List after Remove: %+v", sts)
	}
	// The image was not written.
	if _, err := os.Stat(filepath.Join(testRootfs, "tmp", "x")); err == nil {
		t.Error("the container wrote into its image")
	}
}
