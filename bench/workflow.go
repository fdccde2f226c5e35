package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/daemon"
	"skiff.dev/skiff/workflow"
)

// WorkflowOptions size the workflow benchmark; zero values take defaults.
type WorkflowOptions struct {
	Runs       int // in-process runs; default 20000
	RemoteRuns int // runs through the API; default 200
}

// Workflow measures the workflow engine: runs per second through a 10-step
// graph with in-process controllers, and the per-step overhead of
// dispatching to a remote controller through the API on loopback.
func Workflow(ctx context.Context, w io.Writer, o WorkflowOptions) error {
	if o.Runs == 0 {
		o.Runs = 20000
	}
	if o.RemoteRuns == 0 {
		o.RemoteRuns = 200
	}
	var rows []Row
	rps, err := inProcessRuns(o.Runs)
	if err != nil {
		return err
	}
	rows = append(rows, Row{Metric: "runs/s, 10-step graph, in-process controllers", Value: fmt.Sprintf("%.0f/s", rps),
		Target: "≥ 2000/s", Met: met(rps >= 2000)})
	lat, err := remoteDispatch(ctx, o.RemoteRuns)
	if err != nil {
		return err
	}
	p99 := percentile(lat, 99)
	rows = append(rows, Row{Metric: "remote step dispatch through the API, p50", Value: ms(percentile(lat, 50))})
	rows = append(rows, Row{Metric: "remote step dispatch through the API, p99", Value: ms(p99),
		Target: "≤ 2 ms", Met: met(p99 <= 2*time.Millisecond)})
	Print(w, "skiff bench workflow", rows)
	return nil
}

// chain10 is ten steps of one controller in a chain from admitted to running.
func chain10(controller string) []workflow.Step {
	var steps []workflow.Step
	prev := "admitted"
	for i := 1; i <= 10; i++ {
		name := fmt.Sprintf("s%d", i)
		steps = append(steps, workflow.Step{Name: name, Controller: controller, Kind: "Pod", Phase: workflow.Up,
			Where: "cluster", After: []string{prev}, Before: []string{"running"}, RequiredBy: []string{"running"}})
		prev = name
	}
	return steps
}

type nopObjects struct{}

func (nopObjects) Write(context.Context, workflow.Ref, string, string, map[string]any) (map[string]any, error) {
	return nil, nil
}
func (nopObjects) Remove(context.Context, workflow.Ref) error { return nil }

// doneCounter counts finished runs.
type doneCounter struct {
	mu   sync.Mutex
	done int
	all  chan struct{}
	want int
}

func (d *doneCounter) Record(r workflow.RunRecord) {
	if r.State != workflow.RunDone {
		return
	}
	d.mu.Lock()
	d.done++
	if d.done == d.want {
		close(d.all)
	}
	d.mu.Unlock()
}

func inProcessRuns(n int) (float64, error) {
	g, err := workflow.BuildGraph("Pod", workflow.Up, workflow.PodTargets(), chain10("bench"))
	if err != nil {
		return 0, err
	}
	dc := &doneCounter{all: make(chan struct{}), want: n}
	local := &workflow.Local{}
	e := workflow.NewEngine(workflow.Options{Objects: nopObjects{}, Dispatcher: local, Recorder: dc, KeepRuns: 1})
	local.Engine = e
	local.Handle("bench", func(context.Context, *workflow.WorkItem, func(string, map[string]any)) workflow.Result {
		return workflow.Result{}
	})
	e.SetGraphs([]*workflow.Graph{g})
	start := time.Now()
	for i := 0; i < n; i++ {
		e.Submit(workflow.Object{Ref: workflow.Ref{Kind: "Pod", Namespace: "bench", Name: fmt.Sprintf("p%d", i)}, Generation: 1})
	}
	select {
	case <-dc.all:
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("%d of %d runs finished in 5 minutes", dc.done, n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// remoteDispatch runs a real server and one remote controller whose ten
// steps do nothing, and measures, per step, the time from the controller
// reporting one step done to receiving the next step's work item: the
// whole round trip of the API, the engine and the queue.
func remoteDispatch(ctx context.Context, runs int) ([]time.Duration, error) {
	dir, err := os.MkdirTemp("", "skiff-bench-workflow-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan daemon.Info, 1)
	srvErr := make(chan error, 1)
	go func() {
		srvErr <- daemon.Run(ctx, daemon.Options{DataDir: dir, Listen: "127.0.0.1:0",
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: func(i daemon.Info) { ready <- i }})
	}()
	var info daemon.Info
	select {
	case info = <-ready:
	case err := <-srvErr:
		return nil, err
	}
	cfg, err := client.LoadConfig(info.ConfigPath)
	if err != nil {
		return nil, err
	}
	admin, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	var stepsSpec []any
	for _, s := range chain10("bench") {
		stepsSpec = append(stepsSpec, map[string]any{"name": s.Name, "kind": "Pod", "after": s.After,
			"before": s.Before, "requiredBy": s.RequiredBy})
	}
	if _, err := admin.Apply(ctx, api.Object{Kind: "Controller", Name: "bench", Spec: map[string]any{"steps": stepsSpec}}, 0); err != nil {
		return nil, err
	}
	tok, err := admin.CreateToken(ctx, "controller:bench", "")
	if err != nil {
		return nil, err
	}
	cfg.Token = tok
	ctl, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	time.Sleep(200 * time.Millisecond) // the registration reaches the engine
	var lat []time.Duration
	for i := 0; i < runs; i++ {
		pod := api.Object{Kind: "Pod", Name: fmt.Sprintf("p%d", i), Spec: map[string]any{
			"containers": []any{map[string]any{"name": "a", "image": "busybox"}}}}
		if _, err := admin.Apply(ctx, pod, 0); err != nil {
			return nil, err
		}
		var reported time.Time
		for step := 0; step < 10; step++ {
			items, err := ctl.TakeWork(ctx, 10*time.Second, 1)
			if err != nil {
				return nil, err
			}
			if len(items) == 0 {
				return nil, fmt.Errorf("pod p%d: no work item for step %d within 10s", i, step+1)
			}
			if step > 0 {
				lat = append(lat, time.Since(reported))
			}
			reported = time.Now()
			if err := ctl.CompleteWork(ctx, items[0].ID, workflow.Result{}); err != nil {
				return nil, err
			}
		}
	}
	cancel()
	<-srvErr
	return lat, nil
}
