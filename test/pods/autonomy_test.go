package pods_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"skiff.dev/skiff/test/testcluster"
	"skiff.dev/skiff/test/testimage"
)

// The pods of the autonomy test: restart: always, one container that
// ignores SIGTERM (it is the init of its PID namespace and has no trap)
// and two that trap it, so that deleting them takes seconds, not 30. duo
// lists two first, but two requires one: one starts first.
const tickerPod = `kind: Pod
name: ticker
spec:
  restart: always
  containers:
    - name: main
      image: IMAGE
      command: [sh, -c, 'while true; do date; sleep 1; done']
`

const duoPod = `kind: Pod
name: duo
spec:
  restart: always
  containers:
    - name: two
      image: IMAGE
      command: [sh, -c, 'trap "exit 0" TERM; while true; do echo two; sleep 1; done']
      requires: [one]
    - name: one
      image: IMAGE
      command: [sh, -c, 'trap "exit 0" TERM; while true; do echo one; sleep 1; done']
`

// autonomyPods lists the containers of the pods above.
var autonomyPods = map[string][]string{"ticker": {"main"}, "duo": {"one", "two"}}

// agentProc is a `skiff agent` child process.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *testcluster.LockedBuffer
	done   chan struct{}
}

// startAgent runs `skiff agent ARGS...` until the test ends (or kill).
func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	testcluster.KeepHostNetwork(t)
	a := &agentProc{stderr: &testcluster.LockedBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(testcluster.Binary, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.stderr, a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(a.kill)
	return a
}

func (a *agentProc) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// kill ends the agent with SIGKILL, as a crash or a power cut would.
func (a *agentProc) kill() {
	if !a.exited() {
		a.cmd.Process.Kill()
	}
	<-a.done
}

// stop sends Ctrl-C and expects a clean exit.
func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-a.done:
		if !a.cmd.ProcessState.Success() {
			t.Errorf("skiff agent exited with %v after Ctrl-C; stderr:\n%s", a.cmd.ProcessState, a.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("skiff agent did not stop within 30s of Ctrl-C; stderr:\n%s", a.stderr)
		a.kill()
	}
}

// runtimeRecord is a container's started.json or shim.json.
type runtimeRecord struct {
	Pid       int       `json:"pid"`
	StartedAt time.Time `json:"startedAt"`
}

func readRecord(path string) (int, bool) {
	r, ok := readRuntimeRecord(path)
	return r.Pid, ok
}

func readRuntimeRecord(path string) (runtimeRecord, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return runtimeRecord{}, false
	}
	var r runtimeRecord
	if json.Unmarshal(b, &r) != nil || r.Pid <= 0 {
		return runtimeRecord{}, false
	}
	return r, true
}

// runtimePids returns the pids of every container and every shim the
// runtime under the agent's data directory recorded.
func runtimePids(agentDir string) (containers, shims []int) {
	for file, into := range map[string]*[]int{"started.json": &containers, "shim.json": &shims} {
		paths, _ := filepath.Glob(filepath.Join(agentDir, "runtime", "containers", "*", file))
		for _, p := range paths {
			if pid, ok := readRecord(p); ok {
				*into = append(*into, pid)
			}
		}
	}
	return containers, shims
}

// unmountAll unmounts (lazily) every mount under dir, deepest first: what
// a reboot does to the runtime's overlays and pinned namespaces.
func unmountAll(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// cleanupAgentDir kills whatever containers and shims a failed test left
// running under the agent's data directory and unmounts what it mounted.
func cleanupAgentDir(agentDir string) {
	containers, shims := runtimePids(agentDir)
	for _, pid := range append(containers, shims...) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountAll(agentDir)
}

// containerState is one container of a pod as the runtime has it on disk.
type containerState struct {
	id      string    // runtime container ID: default_POD_CONTAINER_SEQ
	pid     int       // the init's host pid from started.json, 0 if none
	started time.Time // when it started, from started.json
}

// runtimeContainer returns the newest runtime container of pod/name
// (the one with the highest start sequence number).
func runtimeContainer(agentDir, pod, name string) (containerState, bool) {
	dirs, _ := filepath.Glob(filepath.Join(agentDir, "runtime", "containers", "default_"+pod+"_"+name+"_*"))
	best, bestSeq := "", -1
	for _, d := range dirs {
		seq, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "default_"+pod+"_"+name+"_"))
		if err == nil && seq > bestSeq {
			best, bestSeq = d, seq
		}
	}
	if best == "" {
		return containerState{}, false
	}
	r, _ := readRuntimeRecord(filepath.Join(best, "started.json"))
	return containerState{id: filepath.Base(best), pid: r.Pid, started: r.StartedAt}, true
}

// allContainers returns the newest runtime container of every container of
// the autonomy pods, keyed "pod/container".
func allContainers(agentDir string) map[string]containerState {
	out := map[string]containerState{}
	for pod, names := range autonomyPods {
		for _, n := range names {
			if cs, ok := runtimeContainer(agentDir, pod, n); ok {
				out[pod+"/"+n] = cs
			}
		}
	}
	return out
}

// parseJoin checks the command `skiff token create --node` printed and
// returns its flags.
func parseJoin(t *testing.T, line string) map[string]string {
	t.Helper()
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "skiff" || f[1] != "agent" || len(f)%2 != 0 {
		t.Fatalf("token create --node printed %q, want `skiff agent --flag value ...`", line)
	}
	flags := map[string]string{}
	for i := 2; i < len(f); i += 2 {
		if !strings.HasPrefix(f[i], "--") {
			t.Fatalf("join command %q: %q is not a flag", line, f[i])
		}
		flags[f[i]] = f[i+1]
	}
	if u, err := url.Parse(flags["--server"]); err != nil || u.Scheme != "https" || u.Host == "" {
		t.Errorf("join command %q: --server %q is not an https URL", line, flags["--server"])
	}
	if flags["--token"] == "" {
		t.Errorf("join command %q: no --token", line)
	}
	h := flags["--ca-hash"]
	if !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 || strings.Trim(h[7:], "0123456789abcdef") != "" {
		t.Errorf("join command %q: --ca-hash %q is not sha256:<64 hex digits>", line, h)
	}
	if flags["--name"] != "n2" {
		t.Errorf("join command %q: --name %q, want n2", line, flags["--name"])
	}
	return flags
}

// checkStartOrder checks that duo/one started before duo/two, which
// requires it.
func checkStartOrder(t *testing.T, when string, cs map[string]containerState) {
	t.Helper()
	one, two := cs["duo/one"], cs["duo/two"]
	if one.started.IsZero() || two.started.IsZero() || two.started.Before(one.started) {
		t.Errorf("%s: duo/two (requires one) started at %s, duo/one at %s: want one first",
			when, two.started.Format(time.StampMicro), one.started.Format(time.StampMicro))
	}
}

// failedJoin runs a join that must fail quickly, saying want, and keep no
// config in dir.
func failedJoin(t *testing.T, what, dir, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testcluster.Binary, append(append([]string{"agent"}, args...), "--data", dir)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	if err == nil || ctx.Err() != nil {
		t.Errorf("agent joining with %s: %v after %s, want a quick non-zero exit; output:\n%s", what, err, time.Since(t0), out.String())
	} else if !strings.Contains(out.String(), want) {
		t.Errorf("agent joining with %s says %q, want it to say %q", what, strings.TrimSpace(out.String()), want)
	}
	if _, err := os.Stat(filepath.Join(dir, "config")); err == nil {
		t.Errorf("agent joining with %s kept a config in %s", what, dir)
	}
}

// nodeReady tells whether `skiff get nodes` lists name as ready.
func nodeReady(c *testcluster.Cluster, name string) (bool, string) {
	out, errs, code := c.Run("", "get", "nodes")
	if code != 0 {
		return false, errs
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == name {
			for _, x := range f[1:] {
				if x == "ready" {
					return true, out
				}
			}
		}
	}
	return false, out
}

// TestAgentJoinsAndRunsWithoutServer joins a separate `skiff agent` with
// the command `skiff token create --node` prints, runs pods on it, then
// simulates a cold boot with no control plane (server down, agent, shims
// and containers killed, namespaces unmounted) and checks the agent alone
// brings every container back, and reports it when the server returns.
func TestAgentJoinsAndRunsWithoutServer(t *testing.T) {
	requireRoot(t)
	begin := time.Now()
	reg := testimage.StartRegistry(t)
	image := reg.Push(t, "skiff/busybox:1", testimage.BusyboxImage(t))
	base := t.TempDir()
	data := filepath.Join(base, "data")
	agentDir := filepath.Join(base, "agent")
	t.Cleanup(func() { cleanupAgentDir(agentDir) }) // runs after the agent is killed
	c := testcluster.Up(t, data)
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}

	// 1. Join with the printed command.
	join := parseJoin(t, strings.TrimSpace(c.OK("", "token", "create", "--node", "n2")))

	// A join whose CA hash does not match fails at once and keeps nothing;
	// so does one whose --name is not the token's node.
	failedJoin(t, "a wrong --ca-hash", filepath.Join(base, "bad-hash"), "CA does not match",
		"--server", join["--server"], "--token", join["--token"], "--ca-hash", "sha256:"+strings.Repeat("0", 64), "--name", "n2")
	failedJoin(t, "another node's --name", filepath.Join(base, "bad-name"), "token is for node n2",
		"--server", join["--server"], "--token", join["--token"], "--ca-hash", join["--ca-hash"], "--name", "n3")

	args := []string{"agent"}
	for _, k := range []string{"--server", "--token", "--ca-hash", "--name"} {
		args = append(args, k, join[k])
	}
	ag := startAgent(t, append(args, "--data", agentDir, "--insecure-registry", reg.Addr, "--listen", "127.0.0.1:0")...)

	// 2. The node registers, and pods run on it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, out := nodeReady(c, "n2")
		if ok {
			break
		}
		if time.Now().After(deadline) || ag.exited() {
			t.Fatalf("node n2 not ready within 30s; skiff get nodes:\n%s\nagent stderr:\n%s", out, ag.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.OK(strings.ReplaceAll(tickerPod, "IMAGE", image), "apply", "-f", "-")
	c.OK(strings.ReplaceAll(duoPod, "IMAGE", image), "apply", "-f", "-")
	for pod := range autonomyPods {
		p := waitPod(t, c, pod, "Running", running)
		if p.Status.Node != "n2" {
			t.Errorf("pod/%s on node %q, want n2", pod, p.Status.Node)
		}
	}
	before := allContainers(agentDir)
	for pod, names := range autonomyPods {
		for _, n := range names {
			if cs, ok := before[pod+"/"+n]; !ok || cs.pid == 0 || !alive(cs.pid) {
				t.Fatalf("%s/%s: no running container in the agent's runtime state (%+v); agent stderr:\n%s", pod, n, cs, ag.stderr)
			}
		}
	}
	checkStartOrder(t, "first start", before)

	// Logs and exec of a pod on a joined node go through the server to the
	// node's own API (mutual TLS from the cluster CA).
	deadline = time.Now().Add(30 * time.Second)
	for {
		logs, errs, code := c.Run("", "logs", "ticker", "--tail", "2")
		if code == 0 && strings.Contains(logs, "stdout ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff logs of a pod on a joined node: exit %d: %s%s\nagent stderr:\n%s", code, logs, errs, ag.stderr)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if out, errs, code := c.Run("", "exec", "ticker", "--", "sh", "-c", "id -u; exit 4"); code != 4 || strings.TrimSpace(out) != "1000" {
		t.Errorf("skiff exec on a joined node: exit %d, %q %s", code, out, errs)
	}
	netnsDirs, _ := filepath.Glob(filepath.Join(agentDir, "runtime", "pods", "*"))
	if len(netnsDirs) != len(autonomyPods) {
		t.Errorf("pod network namespaces: %v, want one per pod", netnsDirs)
	}

	// 3. A cold boot with no control plane: server down, agent killed,
	// every container and shim gone, the pinned namespaces and overlay
	// mounts gone.
	c.Stop()
	ag.kill()
	containers, shims := runtimePids(agentDir)
	if len(containers) != 3 || len(shims) != 3 {
		t.Errorf("before the reboot: %d container and %d shim pids recorded, want 3 and 3", len(containers), len(shims))
	}
	for _, pid := range append(containers, shims...) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(10 * time.Second)
	for _, pid := range append(containers, shims...) {
		for alive(pid) && !zombie(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) && !zombie(pid) {
			t.Fatalf("pid %d survived SIGKILL", pid)
		}
	}
	unmountAll(agentDir)
	for _, d := range netnsDirs {
		if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), " "+d+"/") {
			t.Fatalf("%s still mounted after the reboot simulation", d)
		}
	}

	// 4. The agent starts again with only its data directory and no
	// server: every container runs again.
	ag = startAgent(t, "agent", "--data", agentDir, "--listen", "127.0.0.1:0")
	deadline = time.Now().Add(30 * time.Second)
	var after map[string]containerState
	for {
		after = allContainers(agentDir)
		var missing []string
		for pod, names := range autonomyPods {
			for _, n := range names {
				key := pod + "/" + n
				cs, ok := after[key]
				if !ok || cs.id == before[key].id || cs.pid == 0 || !alive(cs.pid) || zombie(cs.pid) {
					missing = append(missing, key)
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) || ag.exited() {
			t.Fatalf("after a cold boot without a server, not running again within 30s: %v (runtime state %+v, was %+v)\nagent stderr:\n%s",
				missing, after, before, ag.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for key, cs := range after {
		if cs.pid == before[key].pid {
			t.Errorf("%s: same pid %d as before the reboot", key, cs.pid)
		}
	}
	checkStartOrder(t, "cold boot", after)
	// They stay up (restart: always, nothing crashing).
	time.Sleep(2 * time.Second)
	for key, cs := range after {
		if now := allContainers(agentDir)[key]; now.id != cs.id || !alive(cs.pid) {
			t.Errorf("%s did not stay up after the cold boot: %+v, then %+v", key, cs, now)
		}
	}
	if ag.exited() {
		t.Fatalf("agent exited without a server; stderr:\n%s", ag.stderr)
	}

	// A control plane that hangs (it accepts connections and never
	// answers: a stuck server, half a partition) holds up nothing either:
	// a container that crashes meanwhile comes back.
	hung := startHungServer(t, u.Host)
	time.Sleep(2 * time.Second) // the agent's status uploads and polls reach it
	crashed := after["ticker/main"]
	syscall.Kill(crashed.pid, syscall.SIGKILL)
	deadline = time.Now().Add(15 * time.Second)
	for {
		cs, _ := runtimeContainer(agentDir, "ticker", "main")
		if cs.id != crashed.id && cs.pid != 0 && alive(cs.pid) && !zombie(cs.pid) {
			after["ticker/main"] = cs
			break
		}
		if time.Now().After(deadline) || ag.exited() {
			t.Fatalf("with the server hanging, ticker/main was not restarted within 15s of a crash (runtime state %+v)\nagent stderr:\n%s", cs, ag.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	hung.close()
	if strings.Contains(ag.stderr.String(), "not joined yet") {
		t.Errorf("agent asked to join again:\n%s", ag.stderr)
	}

	// 5. The server returns at the address the agent kept: the pods'
	// status reaches it, restarts counted, still on n2.
	returned := time.Now()
	c = testcluster.Up(t, data, "--listen", u.Host)
	for pod, names := range autonomyPods {
		p := waitPod(t, c, pod, "Running with every container restarted", func(p podStatus) bool {
			if !running(p) {
				return false
			}
			for _, n := range names {
				want := 1 // the cold boot
				if pod+"/"+n == "ticker/main" {
					want = 2 // and the crash
				}
				if st, r, _ := p.container(n); st != "running" || r < want {
					return false
				}
			}
			return true
		})
		if p.Status.Node != "n2" {
			t.Errorf("pod/%s on node %q after the cold boot, want n2", pod, p.Status.Node)
		}
	}
	// The agent is still node n2 (it was started with --data alone): its
	// heartbeats reach node/n2 again.
	deadline = time.Now().Add(30 * time.Second)
	for {
		hb := nodeHeartbeat(t, c, "n2")
		if hb.After(returned) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node n2 got no heartbeat within 30s of the server's return (last %s); skiff get nodes:\n%s\nagent stderr:\n%s",
				hb, c.OK("", "get", "nodes"), ag.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ok, out := nodeReady(c, "n2"); !ok {
		t.Errorf("node n2 not ready after the server's return:\n%s", out)
	}
	// Once the server has it, a status that does not change is not sent
	// again (each upload is a write), nor is the agent's own state
	// rewritten.
	revs := map[string]int64{}
	for pod := range autonomyPods {
		revs[pod] = getPod(t, c, pod).Meta.Revision
	}
	time.Sleep(time.Second)
	db0, _ := os.Stat(filepath.Join(agentDir, "agent.db"))
	time.Sleep(3 * time.Second)
	for pod := range autonomyPods {
		if p := getPod(t, c, pod); p.Meta.Revision != revs[pod] {
			t.Errorf("pod/%s rewritten while nothing changed: revision %d, 4s later %d", pod, revs[pod], p.Meta.Revision)
		}
	}
	if db1, err := os.Stat(filepath.Join(agentDir, "agent.db")); err != nil || db0 == nil {
		t.Errorf("agent state file: %v", err)
	} else if !db1.ModTime().Equal(db0.ModTime()) {
		t.Errorf("the agent's state file is written while nothing changes (modified %v, 3s later %v)", db0.ModTime(), db1.ModTime())
	}
	if out := c.OK("", "get", "nodes"); strings.Count(out, "\n") != 2 {
		t.Errorf("nodes after the cold boot, want only n2:\n%s", out)
	}

	// 6. Delete: the containers stop and nothing is left behind.
	c.OK("", "delete", "--wait", "0", "pod/ticker", "pod/duo")
	deadline = time.Now().Add(40 * time.Second)
	for pod := range autonomyPods {
		for {
			_, errs, code := c.Run("", "get", "pod", pod)
			if code != 0 && strings.Contains(errs, "not found") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pod/%s not gone within 40s of delete; agent stderr:\n%s", pod, ag.stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for key, cs := range after {
		if alive(cs.pid) && !zombie(cs.pid) {
			t.Errorf("%s (pid %d) still runs after delete", key, cs.pid)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(agentDir, "runtime", "containers", "*")); len(left) > 0 {
		t.Errorf("runtime state left after delete: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(agentDir, "runtime", "pods", "*")); len(left) > 0 {
		t.Errorf("pod namespaces left after delete: %v", left)
	}
	ag.stop(t)
	c.Stop()
	t.Logf("took %s", time.Since(begin).Round(time.Millisecond))
}

// hungServer accepts connections and never answers.
type hungServer struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startHungServer(t *testing.T, addr string) *hungServer {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the server's address %s: %v", addr, err)
	}
	h := &hungServer{l: l}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, conn)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(h.close)
	return h
}

// close stops listening and drops every connection; safe to call twice.
func (h *hungServer) close() {
	h.l.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	h.conns = nil
}

// nodeHeartbeat returns the time of a node's last heartbeat.
func nodeHeartbeat(t *testing.T, c *testcluster.Cluster, name string) time.Time {
	t.Helper()
	var n struct {
		Status struct {
			Heartbeat time.Time `json:"heartbeat"`
		} `json:"status"`
	}
	out, _, code := c.Run("", "get", "node", name, "-o", "json")
	if code != 0 {
		return time.Time{}
	}
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		t.Fatalf("get node %s -o json: %v\n%s", name, err, out)
	}
	return n.Status.Heartbeat
}

// zombie tells whether pid is a zombie (dead, not yet reaped by its
// parent, which may be init in a container-less test environment).
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
