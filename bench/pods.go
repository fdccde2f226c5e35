package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"skiff.dev/skiff/agent"
	"skiff.dev/skiff/agent/netns"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/test/testimage"
)

// PodsOptions size the pods benchmark; zero values take the defaults.
type PodsOptions struct {
	Pods        int    // pods created, then updated in place; default 100
	Concurrency int    // creations (and updates) in flight at once; default 1
	RSSPods     int    // running pods when memory is read; default 50
	FloorRuns   int    // runc create+start runs outside skiff; default 20
	Exe         string // the skiff binary run as `skiff agent`; default this one
}

const (
	podsNode      = "bench"
	podsNamespace = "default"
	podsWait      = 60 * time.Second // per pod, before giving up
)

// podsCommand runs until SIGTERM and exits at once on it: as the init of
// its PID namespace a plain `sleep` would ignore SIGTERM and every
// in-place update would wait out the agent's stop grace (10s).
var podsCommand = []any{"sh", "-c", `trap "exit 0" TERM; sleep 600 & wait`}

// Pods measures running pods on one node: a real API server with embedded
// etcd in this process, and a node agent joined to it as a child process
// (`skiff agent`), as on a multi-node cluster. It measures, per pod, the
// time from just before the create (Apply) to the pod's status.phase
// becoming Running as seen on a watch through the API, then the same for an
// in-place update (an env change) until the restarted container runs; the
// agent's and its shims' memory with RSSPods pods running; and, as the
// floor, runc create + start of the same container outside skiff. It needs
// root, runc, busybox-static and docker-registry.
func Pods(ctx context.Context, w io.Writer, o PodsOptions) (err error) {
	if o.Pods == 0 {
		o.Pods = 100
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.RSSPods == 0 {
		o.RSSPods = 50
	}
	if o.RSSPods > o.Pods {
		o.RSSPods = o.Pods
	}
	if o.FloorRuns == 0 {
		o.FloorRuns = 20
	}
	if o.Exe == "" {
		if o.Exe, err = os.Executable(); err != nil {
			return err
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("bench pods: must run as root (the node agent runs runc)")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return errors.New("bench pods: no runc in PATH (scripts/install-deps.sh installs it)")
	}
	if _, err := os.Stat(testimage.BusyboxPath); err != nil {
		return fmt.Errorf("bench pods: no %s (Debian's busybox-static; scripts/install-deps.sh installs it)", testimage.BusyboxPath)
	}
	regBin, err := exec.LookPath("docker-registry")
	if err != nil {
		return errors.New("bench pods: no docker-registry (Debian's docker-registry; scripts/install-deps.sh installs it)")
	}

	// Cleanup runs in reverse: pods deleted through the API, the agent
	// stopped, whatever is left killed and unmounted, the server stopped,
	// the registry killed, the directory removed. It must work after ctx
	// was cancelled (Ctrl-C), so it has its own.
	cleanCtx := context.WithoutCancel(ctx)
	// The agent runs in this machine's network namespace: what it turns
	// on there for pods (forwarding, the egress table) is put back after.
	restoreHost, err := netns.KeepHost()
	if err != nil {
		return fmt.Errorf("bench pods: %w", err)
	}
	defer restoreHost()
	dir, err := os.MkdirTemp("", "skiff-bench-pods-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var rows []Row

	// The floor first, on a quiet machine.
	floor, err := runcFloor(ctx, runc, filepath.Join(dir, "floor"), o.FloorRuns)
	if err != nil {
		return fmt.Errorf("runc floor: %w", err)
	}

	reg, err := testimage.NewRegistry(regBin, filepath.Join(dir, "registry"))
	if err != nil {
		return err
	}
	defer reg.Stop()
	img, err := testimage.Busybox()
	if err != nil {
		return err
	}
	image, err := reg.PushImage("skiff/busybox:1", img)
	if err != nil {
		return err
	}

	srv, err := startServer(cleanCtx, filepath.Join(dir, "server"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer srv.stop()
	info, cfg, admin := srv.info, srv.cfg, srv.admin

	agentDir := filepath.Join(dir, "agent")
	runtimeRoot := filepath.Join(agentDir, "runtime")
	defer forceCleanup(runc, runtimeRoot, dir)
	tok, err := admin.CreateToken(ctx, "node:"+podsNode, "")
	if err != nil {
		return err
	}
	hash, err := agent.CAHash([]byte(cfg.CA))
	if err != nil {
		return err
	}
	ag, err := startAgent(o.Exe, info.URL, tok, hash, agentDir, reg.Addr)
	if err != nil {
		return err
	}
	defer ag.stop()
	defer deleteAllPods(cleanCtx, admin, ag)
	if err := waitNodeReady(ctx, admin, ag); err != nil {
		return err
	}

	l, err := admin.List(ctx, "Pod", podsNamespace, "")
	if err != nil {
		return err
	}
	pw := newPodWatch(ag)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go pw.run(watchCtx, admin, l.Revision)

	// Warm up: the image is pulled and unpacked once, before measuring.
	if _, err := createPod(ctx, admin, pw, "warmup", image); err != nil {
		return fmt.Errorf("warm-up pod: %w", err)
	}
	if err := deletePod(ctx, admin, pw, "warmup"); err != nil {
		return fmt.Errorf("warm-up pod: %w", err)
	}

	podName := func(i int) string { return fmt.Sprintf("p%03d", i) }
	names := make([]string, o.Pods)
	for i := range names {
		names[i] = podName(i)
	}
	how := "one at a time"
	if o.Concurrency > 1 {
		how = fmt.Sprintf("%d at a time", o.Concurrency)
	}

	// Create: the first RSSPods pods, memory, then the rest.
	create := make([]span, o.Pods)
	if err := parallel(o.Concurrency, o.RSSPods, func(_, i int) error {
		s, err := createPod(ctx, admin, pw, names[i], image)
		create[i] = s
		return err
	}); err != nil {
		return err
	}
	mem, err := readMemory(ag.cmd.Process.Pid, runtimeRoot, o.RSSPods)
	if err != nil {
		return err
	}
	if err := parallel(o.Concurrency, o.Pods-o.RSSPods, func(_, i int) error {
		s, err := createPod(ctx, admin, pw, names[o.RSSPods+i], image)
		create[o.RSSPods+i] = s
		return err
	}); err != nil {
		return err
	}
	memAll, err := readMemory(ag.cmd.Process.Pid, runtimeRoot, o.Pods)
	if err != nil {
		return err
	}
	createSplit, err := splitSpans(ctx, admin, runtimeRoot, names, create, 1, 1)
	if err != nil {
		return err
	}

	// Update in place: a new env value restarts the container.
	update := make([]span, o.Pods)
	if err := parallel(o.Concurrency, o.Pods, func(_, i int) error {
		s, err := updatePod(ctx, admin, pw, names[i], image)
		update[i] = s
		return err
	}); err != nil {
		return err
	}
	updateSplit, err := splitSpans(ctx, admin, runtimeRoot, names, update, 2, 2)
	if err != nil {
		return err
	}

	netup, err := stepDurations(ctx, admin, names, 1, "netup")
	if err != nil {
		return err
	}

	cd, ud := durations(create), durations(update)
	cp50, cp99 := percentile(cd, 50), percentile(cd, 99)
	up50, up99 := percentile(ud, 50), percentile(ud, 99)
	n := o.Pods
	rows = append(rows,
		Row{Metric: fmt.Sprintf("API create → container running, p50 (%d pods)", n), Value: ms(cp50),
			Target: "≤ 150 ms", Met: met(cp50 <= 150*time.Millisecond)},
		Row{Metric: fmt.Sprintf("API create → container running, p99 (%d pods)", n), Value: ms(cp99),
			Target: "≤ 400 ms", Met: met(cp99 <= 400*time.Millisecond)},
		Row{Metric: fmt.Sprintf("in-place update (env) → new container running, p50 (%d pods)", n), Value: ms(up50),
			Target: "≤ 150 ms", Met: met(up50 <= 150*time.Millisecond)},
		Row{Metric: fmt.Sprintf("in-place update (env) → new container running, p99 (%d pods)", n), Value: ms(up99)},
		Row{Metric: fmt.Sprintf("pod network setup (netup: netns, veth, addresses, routes), p50 (%d pods)", len(netup)), Value: ms(percentile(netup, 50)),
			Target: "≤ 20 ms", Met: met(percentile(netup, 50) <= 20*time.Millisecond)},
		Row{Metric: fmt.Sprintf("pod network setup, p99 (%d pods)", len(netup)), Value: ms(percentile(netup, 99))},
		Row{Metric: fmt.Sprintf("agent process RSS, %d running pods", mem.pods), Value: mib(mem.agent.rss),
			Target: "≤ 40 MiB", Met: met(mem.agent.rss <= 40<<20)},
		Row{Metric: "  of which anonymous / file-backed (the skiff binary)", Value: mib(mem.agent.anon) + " / " + mib(mem.agent.file)},
		Row{Metric: fmt.Sprintf("shims' RSS, sum of %d (one per container)", mem.shims), Value: mib(mem.shimRSS)},
		Row{Metric: fmt.Sprintf("shims' PSS, sum of %d (shared pages split)", mem.shims), Value: mib(mem.shimPSS)},
		Row{Metric: "shim RSS, mean: anonymous / file-backed", Value: mib(mem.shimAnon/int64(max(mem.shims, 1))) + " / " +
			mib(mem.shimFile/int64(max(mem.shims, 1)))},
		Row{Metric: fmt.Sprintf("agent process RSS, %d running pods", memAll.pods), Value: mib(memAll.agent.rss)},
		Row{Metric: fmt.Sprintf("shims' PSS, sum of %d", memAll.shims), Value: mib(memAll.shimPSS)},
		Row{Metric: fmt.Sprintf("server process RSS (API, etcd, bench client), %d pods", memAll.pods), Value: mib(memAll.self.rss)},
		Row{Metric: fmt.Sprintf("runc floor: create+start, p50 (%d runs)", len(floor)), Value: ms(percentile(floor, 50))},
		Row{Metric: fmt.Sprintf("runc floor: create+start, p99 (%d runs)", len(floor)), Value: ms(percentile(floor, 99))},
	)
	Print(w, fmt.Sprintf("skiff bench pods (one node, agent as a child process, pods created and updated %s)", how), rows)
	fmt.Fprintln(w)
	printSplit(w, createSplit, updateSplit, create, update)
	return nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// benchPodObject is a one-container pod that runs until SIGTERM.
func benchPodObject(name, image string, gen int) api.Object {
	return api.Object{Kind: "Pod", Namespace: podsNamespace, Name: name, Labels: map[string]string{"bench": "pods"},
		Spec: map[string]any{
			"containers": []any{map[string]any{
				"name": "app", "image": image, "command": podsCommand,
				"env":       map[string]any{"BENCH_GEN": strconv.Itoa(gen)},
				"resources": map[string]any{"memory": "32Mi"},
			}},
			"restart": "always",
		}}
}

// span is when a write was sent and when its effect was seen.
type span struct{ start, seen time.Time }

func (s span) d() time.Duration { return s.seen.Sub(s.start) }

func durations(spans []span) []time.Duration {
	ds := make([]time.Duration, len(spans))
	for i, s := range spans {
		ds[i] = s.d()
	}
	return ds
}

// createPod applies a new pod and waits until it is Running.
func createPod(ctx context.Context, c *client.Client, pw *podWatch, name, image string) (span, error) {
	done := pw.expect(name, func(o api.Object) bool { return phase(o) == "Running" })
	start := time.Now()
	if _, err := c.Apply(ctx, benchPodObject(name, image, 1), 0); err != nil {
		pw.cancel(name)
		return span{}, fmt.Errorf("create pod %s: %w", name, err)
	}
	at, err := pw.wait(ctx, name, done, "Running")
	return span{start, at}, err
}

// updatePod changes the pod's env and waits until its container was
// restarted and runs again.
func updatePod(ctx context.Context, c *client.Client, pw *podWatch, name, image string) (span, error) {
	done := pw.expect(name, func(o api.Object) bool {
		st, restarts := appContainer(o)
		return o.Meta.Generation >= 2 && phase(o) == "Running" && st == "running" && restarts >= 1
	})
	start := time.Now()
	if _, err := c.Apply(ctx, benchPodObject(name, image, 2), 0); err != nil {
		pw.cancel(name)
		return span{}, fmt.Errorf("update pod %s: %w", name, err)
	}
	at, err := pw.wait(ctx, name, done, "restarted with the new env")
	return span{start, at}, err
}

// deletePod deletes a pod and waits until it is gone.
func deletePod(ctx context.Context, c *client.Client, pw *podWatch, name string) error {
	ref := api.Ref{Kind: "Pod", Namespace: podsNamespace, Name: name}
	if _, err := c.Delete(ctx, ref, 0); err != nil {
		return err
	}
	deadline := time.Now().Add(podsWait)
	for {
		if _, err := c.Get(ctx, ref); client.IsCode(err, "not_found") {
			return nil
		} else if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s not gone %v after delete", name, podsWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func phase(o api.Object) string {
	p, _ := o.Status["phase"].(string)
	return p
}

// appContainer returns the state and restarts of container "app".
func appContainer(o api.Object) (string, int) {
	list, _ := o.Status["containers"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		if m["name"] == "app" {
			st, _ := m["state"].(string)
			r, _ := m["restarts"].(float64)
			return st, int(r)
		}
	}
	return "", 0
}

// podWatch follows pods on one watch and timestamps, per pod, the first
// event that meets what a waiter expects.
type podWatch struct {
	mu     sync.Mutex
	waits  map[string]*podWaiter
	last   map[string]api.Object
	failed chan struct{} // closed when the watch ends
	err    error
	agent  *childAgent
}

type podWaiter struct {
	cond func(api.Object) bool
	done chan time.Time
}

func newPodWatch(a *childAgent) *podWatch {
	return &podWatch{waits: map[string]*podWaiter{}, last: map[string]api.Object{}, failed: make(chan struct{}), agent: a}
}

func (pw *podWatch) run(ctx context.Context, c *client.Client, after int64) {
	err := c.Watch(ctx, "Pod", podsNamespace, after, func(ev client.Event) error {
		now := time.Now()
		pw.mu.Lock()
		defer pw.mu.Unlock()
		name := ev.Object.Name
		pw.last[name] = ev.Object
		if w := pw.waits[name]; w != nil && ev.Type != "deleted" && w.cond(ev.Object) {
			w.done <- now
			delete(pw.waits, name)
		}
		return nil
	})
	pw.mu.Lock()
	pw.err = err
	pw.mu.Unlock()
	close(pw.failed)
}

// expect registers a waiter; call it before the write it waits for.
func (pw *podWatch) expect(name string, cond func(api.Object) bool) chan time.Time {
	done := make(chan time.Time, 1)
	pw.mu.Lock()
	pw.waits[name] = &podWaiter{cond: cond, done: done}
	pw.mu.Unlock()
	return done
}

func (pw *podWatch) cancel(name string) {
	pw.mu.Lock()
	delete(pw.waits, name)
	pw.mu.Unlock()
}

func (pw *podWatch) wait(ctx context.Context, name string, done chan time.Time, what string) (time.Time, error) {
	t := time.NewTimer(podsWait)
	defer t.Stop()
	select {
	case at := <-done:
		return at, nil
	case <-ctx.Done():
		pw.cancel(name)
		return time.Time{}, ctx.Err()
	case <-pw.agent.exited:
		pw.cancel(name)
		return time.Time{}, fmt.Errorf("pod %s: the agent exited: %s", name, pw.agent.logTail())
	case <-pw.failed:
		pw.mu.Lock()
		defer pw.mu.Unlock()
		return time.Time{}, fmt.Errorf("watching pods: %v", pw.err)
	case <-t.C:
		pw.cancel(name)
		pw.mu.Lock()
		last := pw.last[name]
		pw.mu.Unlock()
		st, _ := json.Marshal(last.Status)
		return time.Time{}, fmt.Errorf("pod %s: not %s within %v; last status %s", name, what, podsWait, st)
	}
}

// deleteAllPods deletes every pod and waits (a while, and only while the
// agent runs) until they are gone, so that the agent stops their
// containers the normal way.
func deleteAllPods(ctx context.Context, c *client.Client, a *childAgent) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	l, err := c.List(ctx, "Pod", "", "")
	if err != nil {
		return
	}
	for _, p := range l.Items {
		c.Delete(ctx, api.Ref{Kind: "Pod", Namespace: p.Namespace, Name: p.Name}, 0)
	}
	for ctx.Err() == nil {
		l, err := c.List(ctx, "Pod", "", "")
		if err != nil || len(l.Items) == 0 {
			return
		}
		select {
		case <-a.exited:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// childAgent is `skiff agent` run as a child of this process.
type childAgent struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startAgent(exe, server, token, caHash, dataDir, registry string) (*childAgent, error) {
	if err := os.MkdirAll(dataDir, 0o711); err != nil {
		return nil, err
	}
	logPath := dataDir + ".log"
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "agent", "--server", server, "--token", token, "--ca-hash", caHash,
		"--data", dataDir, "--name", podsNode, "--insecure-registry", registry, "--listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	a := &childAgent{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(a.exited) }()
	return a, nil
}

// stop sends SIGTERM, and SIGKILL if the agent has not ended in 20s.
func (a *childAgent) stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
	}
}

// logTail is the end of the agent's log, for errors.
func (a *childAgent) logTail() string {
	b, _ := os.ReadFile(a.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// waitNodeReady waits for the agent to register its node and report ready.
func waitNodeReady(ctx context.Context, c *client.Client, a *childAgent) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := c.Get(ctx, api.Ref{Kind: "Node", Name: podsNode})
		if err == nil && n.Status["state"] == "ready" {
			return nil
		}
		select {
		case <-a.exited:
			return fmt.Errorf("agent exited: %s", a.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not ready within 30s; agent log: %s", podsNode, a.logTail())
		}
	}
}

// procMem is one process's memory, in bytes.
type procMem struct{ rss, anon, file, pss int64 }

// memory is what the node's processes hold.
type memory struct {
	pods                                 int
	agent                                procMem
	shims                                int
	shimRSS, shimAnon, shimFile, shimPSS int64   // summed over the shims
	self                                 procMem // this process: server, etcd, bench
}

// readMemory reads memory after letting the agent settle (its supervision
// loop runs every second).
func readMemory(agentPid int, runtimeRoot string, pods int) (memory, error) {
	time.Sleep(3 * time.Second)
	m := memory{pods: pods}
	var err error
	if m.agent, err = readProcMem(agentPid); err != nil {
		return m, fmt.Errorf("agent memory: %w", err)
	}
	if m.self, err = readProcMem(os.Getpid()); err != nil {
		return m, err
	}
	shims, _ := filepath.Glob(filepath.Join(runtimeRoot, "containers", "*", "shim.json"))
	for _, s := range shims {
		var rec struct {
			Pid int `json:"pid"`
		}
		b, err := os.ReadFile(s)
		if err != nil || json.Unmarshal(b, &rec) != nil || rec.Pid == 0 {
			continue
		}
		if pm, err := readProcMem(rec.Pid); err == nil {
			m.shims++
			m.shimRSS += pm.rss
			m.shimAnon += pm.anon
			m.shimFile += pm.file
			m.shimPSS += pm.pss
		}
	}
	if m.shims != pods {
		return m, fmt.Errorf("found %d live shims with %d pods running", m.shims, pods)
	}
	return m, nil
}

// readProcMem reads VmRSS, RssAnon and RssFile from /proc/PID/status and
// Pss from /proc/PID/smaps_rollup.
func readProcMem(pid int) (procMem, error) {
	var m procMem
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file, "Pss:": &m.pss}
	for _, f := range []string{"status", "smaps_rollup"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			return m, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if len(fs) >= 2 && fields[fs[0]] != nil {
				kb, err := strconv.ParseInt(fs[1], 10, 64)
				if err != nil {
					return m, fmt.Errorf("/proc/%d/%s: %q", pid, f, line)
				}
				*fields[fs[0]] = kb << 10
			}
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	return m, nil
}

// splitNames are the spans a pod start is split into, from the step
// record of the run (when the node took the start step, when its status
// write was done) and the runtime's files (their modification times).
var splitNames = []string{
	"API write, admission, scheduling, dispatch to the node",
	"agent: state, netns, image resolve (update: stop+remove old container)",
	"runtime: bundle, overlay mount, shim exec and init",
	"runc create",
	"runc start",
	"agent: state, report; server: status write",
	"status written → seen on the watch",
}

// stepDurations returns how long a step took for each pod in the run of
// generation gen, from the moment its node took it to the moment the
// server had its outcome.
func stepDurations(ctx context.Context, c *client.Client, names []string, gen int64, step string) ([]time.Duration, error) {
	var out []time.Duration
	for _, name := range names {
		runs, err := c.Runs(ctx, api.Ref{Kind: "Pod", Namespace: podsNamespace, Name: name})
		if err != nil {
			return nil, fmt.Errorf("runs of pod %s: %w", name, err)
		}
		for _, r := range runs {
			if r.Generation != gen || r.Phase != "up" {
				continue
			}
			for _, st := range r.Steps {
				if st.Name == step && st.State == "done" && st.Started != nil && st.Finished != nil {
					out = append(out, st.Finished.Sub(*st.Started))
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no finished %s step in the runs of generation %d", step, gen)
	}
	return out, nil
}

// splitSpans splits each pod's span at the moments above, for the run of
// generation gen and the container's start number seq.
func splitSpans(ctx context.Context, c *client.Client, runtimeRoot string, names []string, spans []span, gen int64, seq int) ([][]time.Duration, error) {
	split := make([][]time.Duration, len(splitNames))
	for i, name := range names {
		runs, err := c.Runs(ctx, api.Ref{Kind: "Pod", Namespace: podsNamespace, Name: name})
		if err != nil {
			return nil, fmt.Errorf("runs of pod %s: %w", name, err)
		}
		var taken, finished time.Time
		for _, r := range runs {
			if r.Generation != gen || r.Phase != "up" {
				continue
			}
			for _, st := range r.Steps {
				if st.Name == "start" && st.Started != nil && st.Finished != nil {
					taken, finished = *st.Started, *st.Finished
				}
			}
		}
		if taken.IsZero() {
			return nil, fmt.Errorf("pod %s: no finished start step in the runs of generation %d", name, gen)
		}
		dir := filepath.Join(runtimeRoot, "containers", fmt.Sprintf("%s_%s_app_%d", podsNamespace, name, seq))
		var marks []time.Time
		for _, f := range []string{"spec.json", "shim.json", "init.pid", "started.json"} {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				return nil, fmt.Errorf("pod %s: %w", name, err)
			}
			marks = append(marks, fi.ModTime())
		}
		points := append(append([]time.Time{spans[i].start, taken}, marks...), finished, spans[i].seen)
		for k := range splitNames {
			split[k] = append(split[k], points[k+1].Sub(points[k]))
		}
	}
	return split, nil
}

// printSplit prints the p50 of each span of create and update, and the
// spans of the slowest create and update.
func printSplit(w io.Writer, create, update [][]time.Duration, creates, updates []span) {
	slowest := func(spans []span) int {
		k := 0
		for i := range spans {
			if spans[i].d() > spans[k].d() {
				k = i
			}
		}
		return k
	}
	sc, su := slowest(creates), slowest(updates)
	fmt.Fprintln(w, "where the time goes (p50 of each span, which need not add up to the p50 above; and the slowest pod's spans)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SPAN\tCREATE p50\tUPDATE p50\tSLOWEST CREATE\tSLOWEST UPDATE\t")
	for k, name := range splitNames {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", name, ms(percentile(create[k], 50)), ms(percentile(update[k], 50)),
			ms(create[k][sc]), ms(update[k][su]))
	}
	fmt.Fprintf(tw, "total\t%s\t%s\t%s\t%s\t\n", ms(percentile(durations(creates), 50)), ms(percentile(durations(updates), 50)),
		ms(creates[sc].d()), ms(updates[su].d()))
	tw.Flush()
	fmt.Fprintln(w, "(spans that end at a runtime file's modification time have the kernel's file time granularity, a timer tick)")
}

// forceCleanup kills whatever containers and shims are left under the
// runtime root (after a failure, or an agent that did not stop them),
// deletes their runc state and unmounts everything under dir.
func forceCleanup(runc, runtimeRoot, dir string) {
	for _, f := range []string{"started.json", "shim.json"} {
		files, _ := filepath.Glob(filepath.Join(runtimeRoot, "containers", "*", f))
		for _, s := range files {
			var rec struct {
				Pid int `json:"pid"`
			}
			if b, err := os.ReadFile(s); err == nil && json.Unmarshal(b, &rec) == nil && rec.Pid > 0 {
				syscall.Kill(rec.Pid, syscall.SIGKILL)
			}
		}
	}
	runcRoot := filepath.Join(runtimeRoot, "runc")
	if ents, err := os.ReadDir(runcRoot); err == nil {
		for _, e := range ents {
			exec.Command(runc, "--root", runcRoot, "delete", "--force", e.Name()).Run()
		}
	}
	unmountUnder(dir)
}

// unmountUnder lazily unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := strings.ReplaceAll(f[4], `\040`, " ")
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		unix.Unmount(p, unix.MNT_DETACH)
	}
}

// runcFloor times `runc create` + `runc start` of `sleep 600` in a bundle
// from `runc spec` (runc's default config, as root) over a busybox root,
// outside skiff: no shim, overlay, user namespace or seccomp profile.
func runcFloor(ctx context.Context, runc, dir string, runs int) ([]time.Duration, error) {
	bundle := filepath.Join(dir, "bundle")
	root := filepath.Join(dir, "runc")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(testimage.BusyboxPath)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bin, 0o755); err != nil {
		return nil, err
	}
	for _, a := range []string{"sh", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			return nil, err
		}
	}
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %v: %s", err, out)
	}
	cfgPath := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, err
	}
	proc, _ := cfg["process"].(map[string]any)
	rt, _ := cfg["root"].(map[string]any)
	if proc == nil || rt == nil {
		return nil, errors.New("runc spec: no process or root in config.json")
	}
	proc["terminal"] = false
	proc["args"] = []string{"sleep", "600"}
	proc["env"] = []string{"PATH=/bin"}
	rt["path"] = "rootfs"
	if b, err = json.Marshal(cfg); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	// runc's output goes to a file, not a pipe: the container inherits
	// runc create's stdio, and a pipe would stay open until it exits.
	outPath := filepath.Join(dir, "runc.out")
	runcDo := func(args ...string) error {
		out, err := os.Create(outPath)
		if err != nil {
			return err
		}
		defer out.Close()
		cmd := exec.CommandContext(ctx, runc, append([]string{"--root", root}, args...)...)
		cmd.Dir = bundle
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(outPath)
			return fmt.Errorf("runc %s: %v: %s", args[0], err, bytes.TrimSpace(b))
		}
		return nil
	}
	var ds []time.Duration
	for i := -1; i < runs; i++ { // run -1 warms the page cache, unmeasured
		id := fmt.Sprintf("skiff-bench-floor-%d-%d", os.Getpid(), i)
		start := time.Now()
		err := runcDo("create", "--bundle", bundle, id)
		if err == nil {
			err = runcDo("start", id)
		}
		d := time.Since(start)
		exec.Command(runc, "--root", root, "delete", "--force", id).Run()
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			ds = append(ds, d)
		}
	}
	return ds, nil
}
