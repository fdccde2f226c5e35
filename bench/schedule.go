package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"skiff.dev/skiff/agent/sim"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

// ScheduleOptions size the scheduling benchmark; zero values take the
// defaults.
type ScheduleOptions struct {
	Nodes   int // simulated nodes; default 5,000
	Pods    int // pods created in bulk; default 50,000
	Clients int // concurrent creators; default 64
	// Batch is how many pods a creator sends in one request (POST
	// /v1/apply/list, as `skiff apply -f` sends a manifest): pods
	// "created in bulk"; 1 sends each alone (POST /v1/apply). Default 100.
	Batch   int
	Timeout time.Duration // for all pods to run, from the first create; default 30m
	// Heartbeat is the simulated nodes' heartbeat period; default
	// sim.DefaultHeartbeat.
	Heartbeat time.Duration
	// Profile, if set, is a directory where profiles of this process
	// (server, etcd, simulator and bench clients) are written:
	// nodes-cpu.pprof while the nodes join; cpu.pprof, mutex.pprof and
	// block.pprof from the first create until every pod runs;
	// heap-created.pprof when the last pod was created (about when the
	// most are in flight), heap.pprof at the end.
	Profile string
	// Log, if set, gets the server's and the simulator's log.
	Log io.Writer
}

const scheduleNamespace = "default"

// Schedule measures the control plane at many nodes: a real API server
// with embedded etcd in this process (daemon.Run, TLS on loopback), and a
// simulator of Nodes hollow nodes in this process too but talking HTTPS to
// it (package agent/sim: it registers and heartbeats them and reports
// every pod placed on them Running at once). Once every node is ready it
// creates Pods small pods (one container, 100m CPU, 128Mi) with Clients
// concurrent creators, and follows them on one watch through the API:
// placements per second from the status.node writes (each write's time is
// the revision's, meta.updated), the time until every pod is Running as
// the watch sees it, the create throughput, and at the end this process's
// RSS and Go heap.
func Schedule(ctx context.Context, w io.Writer, o ScheduleOptions) (err error) {
	if o.Nodes == 0 {
		o.Nodes = 5000
	}
	if o.Pods == 0 {
		o.Pods = 50000
	}
	if o.Clients == 0 {
		o.Clients = 64
	}
	if o.Batch == 0 {
		o.Batch = 100
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Minute
	}
	logTo := o.Log
	if logTo == nil {
		logTo = io.Discard
	}
	log := slog.New(slog.NewTextHandler(logTo, nil))
	dir, err := os.MkdirTemp("", "skiff-bench-schedule-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	srv, err := startServer(context.WithoutCancel(ctx), filepath.Join(dir, "server"), log.With("part", "server"))
	if err != nil {
		return err
	}
	defer srv.stop()
	cfg, admin := srv.cfg, srv.admin

	// The simulated nodes, until every one is ready: registered, and its
	// readiness run has written status.network.
	tok, err := admin.CreateToken(ctx, "simulator:sim", "")
	if err != nil {
		return err
	}
	simCfg := cfg
	simCfg.Token = tok
	s, err := sim.New(sim.Options{Config: simCfg, Prefix: "sim", Nodes: o.Nodes, Heartbeat: o.Heartbeat, Log: log.With("part", "sim")})
	if err != nil {
		return err
	}
	var stopNodesProfile func()
	if o.Profile != "" {
		if stopNodesProfile, err = startCPUProfile(o.Profile, "nodes-cpu.pprof"); err != nil {
			return err
		}
		defer stopNodesProfile()
	}
	simCtx, stopSim := context.WithCancel(ctx)
	simErr := make(chan error, 1)
	nodesStart := time.Now()
	go func() { simErr <- s.Run(simCtx) }()
	defer func() { stopSim(); <-simErr }()
	fmt.Fprintf(w, "starting %d simulated nodes…\n", o.Nodes)
	if err := waitNodesReady(ctx, admin, o.Nodes, simErr); err != nil {
		return err
	}
	nodesReady := time.Since(nodesStart)
	if stopNodesProfile != nil {
		stopNodesProfile()
	}
	fmt.Fprintf(w, "%d nodes ready in %.1f s; creating %d pods…\n", o.Nodes, nodesReady.Seconds(), o.Pods)

	l, err := admin.List(ctx, "Pod", "", "")
	if err != nil {
		return err
	}
	pw := &placementWatch{placed: map[string]time.Time{}, running: map[string]time.Time{}, want: o.Pods, all: make(chan struct{})}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchErr := make(chan error, 1)
	go func() { watchErr <- admin.Watch(watchCtx, "Pod", "", l.Revision, pw.event) }()

	stopCPU := func() {}
	if o.Profile != "" {
		if stopCPU, err = startProfiles(o.Profile); err != nil {
			return err
		}
		defer stopCPU()
	}
	// Creators: Clients goroutines over a few connections, as many
	// operators' tools would be.
	var creators []*client.Client
	for range 4 {
		c, err := client.New(cfg)
		if err != nil {
			return err
		}
		creators = append(creators, c)
	}
	createStart, createCPU := time.Now(), processCPU()
	createCtx, stopCreates := context.WithCancel(ctx)
	defer stopCreates()
	createDone := make(chan error, 1)
	var createEnd time.Time
	var createdN atomic.Int64
	batch := o.Batch
	go func() {
		err := parallel(o.Clients, (o.Pods+batch-1)/batch, func(worker, i int) error {
			c := creators[worker%len(creators)]
			first := i * batch
			if batch == 1 {
				if _, err := c.Apply(createCtx, schedulePod(first), 0); err != nil {
					return fmt.Errorf("create pod %d: %w", first, err)
				}
				createdN.Add(1)
				return nil
			}
			pods := make([]api.Object, 0, batch)
			for n := first; n < min(first+batch, o.Pods); n++ {
				pods = append(pods, schedulePod(n))
			}
			done, err := c.ApplyList(createCtx, pods)
			createdN.Add(int64(len(done)))
			if err != nil {
				return fmt.Errorf("create pods %d-%d: %w", first, first+len(pods)-1, err)
			}
			return nil
		})
		createEnd = time.Now()
		createDone <- err
	}()
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	timeout := time.After(o.Timeout)
	complete, createsDone := false, false
wait:
	for {
		select {
		case err := <-createDone:
			if err != nil {
				return err
			}
			createsDone = true
			fmt.Fprintf(w, "%d pods created in %.1f s\n", o.Pods, createEnd.Sub(createStart).Seconds())
			if o.Profile != "" {
				if err := writeProfile(o.Profile, "heap-created", "heap"); err != nil {
					return err
				}
			}
		case <-pw.all:
			complete = true
			break wait
		case err := <-watchErr:
			return fmt.Errorf("pod watch: %w", err)
		case err := <-simErr:
			return fmt.Errorf("simulator: %w", err)
		case <-progress.C:
			p, r := pw.counts()
			fmt.Fprintf(w, "  %.0f s: %d created, %d placed, %d running\n", time.Since(createStart).Seconds(), createdN.Load(), p, r)

		case <-timeout:
			if !createsDone {
				stopCreates()
				<-createDone
			}
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	allRunning, cpuUsed := time.Since(createStart), processCPU()-createCPU
	if o.Profile != "" {
		if err := stopProfiles(o.Profile, stopCPU); err != nil {
			return err
		}
	}

	var rows []Row
	placed, running := pw.results()
	rows = append(rows,
		Row{Metric: fmt.Sprintf("simulated nodes registered and ready (%d)", o.Nodes), Value: fmt.Sprintf("%.1f s", nodesReady.Seconds())},
		createRow(o, createsDone, int(createdN.Load()), createStart, createEnd))
	if len(placed) > 1 {
		first, last := placed[0], placed[len(placed)-1]
		e2e := float64(len(placed)) / last.Sub(createStart).Seconds()
		rows = append(rows,
			Row{Metric: fmt.Sprintf("placements/s, first to last status.node write (%d placed)", len(placed)), Value: rate(len(placed)-1, last.Sub(first))},
			Row{Metric: "placements/s, p50 of each second's", Value: fmt.Sprintf("%.0f/s", p50PerSecond(placed))},
			Row{Metric: "placements/s end to end (first create to last placement)", Value: fmt.Sprintf("%.0f/s", e2e),
				Target: "≥ 2,000/s", Met: met(complete && e2e >= 2000)})
	}
	if complete {
		rows = append(rows, Row{Metric: fmt.Sprintf("first create → all %d pods Running (watch)", o.Pods), Value: fmt.Sprintf("%.1f s", allRunning.Seconds())})
	} else {
		rows = append(rows, Row{Metric: fmt.Sprintf("pods Running after %.0f s (timed out)", allRunning.Seconds()),
			Value: fmt.Sprintf("%d of %d (%d placed)", len(running), o.Pods, len(placed)), Target: "all", Met: met(false)})
	}
	if len(running) > 0 {
		rows = append(rows, Row{Metric: "pods Running/s, first create to last Running", Value: rate(len(running), running[len(running)-1].Sub(createStart))})
		rows = append(rows, Row{Metric: "process CPU (user + system), first create to all Running; per pod Running",
			Value: fmt.Sprintf("%.1f s; %.2f ms", cpuUsed.Seconds(), float64(cpuUsed.Microseconds())/1000/float64(len(running)))})
	}
	mem, err := readProcMem(os.Getpid())
	if err != nil {
		return err
	}
	peak, _ := procStatusBytes("VmHWM:")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rows = append(rows,
		Row{Metric: "process RSS at the end (server, etcd, simulator, bench clients)", Value: mib(mem.rss), Target: "≤ 1.5 GiB", Met: met(mem.rss <= 3<<29)},
		Row{Metric: "… anonymous / file-backed; peak RSS", Value: mib(mem.anon) + " / " + mib(mem.file) + "; " + mib(peak)},
		Row{Metric: "Go heap: in use / held from the OS / live after GC", Value: mib(int64(ms.HeapInuse)) + " / " +
			mib(int64(ms.HeapSys-ms.HeapReleased)) + " / " + mib(liveHeap())},
	)
	st := s.Stats()
	rows = append(rows, Row{Metric: "simulator: starts / heartbeats / failed reports", Value: fmt.Sprintf("%d / %d / %d", st.Done["start"], st.Heartbeats, st.Failed)})
	Print(w, fmt.Sprintf("skiff bench schedule: %d simulated nodes, %d pods", o.Nodes, o.Pods), rows)
	if !complete {
		return errors.New("not every pod ran before the timeout")
	}
	return nil
}

// startCPUProfile starts a CPU profile into dir/name; stop may be called
// more than once.
func startCPUProfile(dir, name string) (stop func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }, nil
}

// startProfiles starts the CPU profile into dir/cpu.pprof and samples
// mutex contention and blocking; stopProfiles writes them.
func startProfiles(dir string) (stop func(), err error) {
	stop, err = startCPUProfile(dir, "cpu.pprof")
	if err != nil {
		return nil, err
	}
	runtime.SetMutexProfileFraction(10)
	runtime.SetBlockProfileRate(int(time.Millisecond))
	return stop, nil
}

func stopProfiles(dir string, stopCPU func()) error {
	stopCPU()
	runtime.SetMutexProfileFraction(0)
	runtime.SetBlockProfileRate(0)
	for _, name := range []string{"mutex", "block", "heap"} {
		if name == "heap" {
			runtime.GC()
		}
		if err := writeProfile(dir, name, name); err != nil {
			return err
		}
	}
	return nil
}

// writeProfile writes the named profile to dir/file.pprof.
func writeProfile(dir, file, name string) error {
	f, err := os.Create(filepath.Join(dir, file+".pprof"))
	if err != nil {
		return err
	}
	err = pprof.Lookup(name).WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// createRow is the create throughput, of those created before the
// timeout if not all were.
func createRow(o ScheduleOptions, done bool, n int, start, end time.Time) Row {
	if !done {
		return Row{Metric: fmt.Sprintf("API creates/s (%d of %d pods created before the timeout, %d creators, %s)", n, o.Pods, o.Clients, batchWord(o.Batch)),
			Value: rate(n, time.Since(start))}
	}
	return Row{Metric: fmt.Sprintf("API creates/s (%d pods, %d creators, %s)", o.Pods, o.Clients, batchWord(o.Batch)), Value: rate(o.Pods, end.Sub(start))}
}

func batchWord(batch int) string {
	if batch <= 1 {
		return "one pod per request"
	}
	return fmt.Sprintf("%d pods per request", batch)
}

// schedulePod is a small pod: one container, 100m CPU, 128Mi.
func schedulePod(i int) api.Object {
	return api.Object{Kind: "Pod", Namespace: scheduleNamespace, Name: fmt.Sprintf("p%06d", i), Spec: map[string]any{
		"containers": []any{map[string]any{"name": "app", "image": "busybox:1",
			"resources": map[string]any{"cpu": "100m", "memory": "128Mi"}}}}}
}

// waitNodesReady waits until n Nodes report status.network ready.
func waitNodesReady(ctx context.Context, c *client.Client, n int, simErr chan error) error {
	for {
		l, err := c.List(ctx, "Node", "", "")
		if err != nil {
			return err
		}
		ready := 0
		for _, node := range l.Items {
			if node.Status["network"] == "ready" {
				ready++
			}
		}
		if ready >= n {
			return nil
		}
		select {
		case err := <-simErr:
			simErr <- err
			return fmt.Errorf("simulator: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// placementWatch records, per pod, when its status.node was written (the
// revision's time) and when the watch saw it Running.
type placementWatch struct {
	mu      sync.Mutex
	placed  map[string]time.Time // guarded by mu
	running map[string]time.Time // guarded by mu
	want    int
	all     chan struct{} // closed when want pods run
}

func (pw *placementWatch) event(ev client.Event) error {
	now := time.Now()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	name := ev.Object.Name
	if n, _ := ev.Object.Status["node"].(string); n != "" {
		if _, ok := pw.placed[name]; !ok {
			pw.placed[name] = ev.Object.Meta.Updated
		}
	}
	if ev.Object.Status["phase"] == "Running" {
		if _, ok := pw.running[name]; !ok {
			pw.running[name] = now
			if len(pw.running) == pw.want {
				close(pw.all)
			}
		}
	}
	return nil
}

func (pw *placementWatch) counts() (placed, running int) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return len(pw.placed), len(pw.running)
}

// results returns the placement and Running times, each sorted.
func (pw *placementWatch) results() (placed, running []time.Time) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	for _, t := range pw.placed {
		placed = append(placed, t)
	}
	for _, t := range pw.running {
		running = append(running, t)
	}
	sort.Slice(placed, func(i, j int) bool { return placed[i].Before(placed[j]) })
	sort.Slice(running, func(i, j int) bool { return running[i].Before(running[j]) })
	return placed, running
}

// p50PerSecond is the median of the number of events in each whole second
// from the first event to the last (a last partial second left out).
func p50PerSecond(ts []time.Time) float64 {
	first := ts[0]
	secs := int(ts[len(ts)-1].Sub(first) / time.Second)
	if secs == 0 {
		return float64(len(ts))
	}
	counts := make([]float64, secs)
	for _, t := range ts {
		if i := int(t.Sub(first) / time.Second); i < secs {
			counts[i]++
		}
	}
	sort.Float64s(counts)
	return counts[len(counts)/2]
}

func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f/s", float64(n)/d.Seconds())
}

// processCPU is the CPU time (user and system) this process has used:
// steadier than wall-clock rates on a machine that is doing other work.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatusBytes reads a size field ("VmHWM:") of /proc/self/status.
func procStatusBytes(field string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if fs := strings.Fields(line); len(fs) >= 2 && fs[0] == field {
			kb, err := strconv.ParseInt(fs[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

// liveHeap is the Go heap still reachable after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
