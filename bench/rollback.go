package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/lab"
	"skiff.dev/skiff/test/testimage"
	"skiff.dev/skiff/workflow"
)

// RollbackOptions configure the rollback bench. Zero values are the
// defaults stated.
type RollbackOptions struct {
	Replicas int // PinnedDeployment replicas; default 100
	Nodes    int // lab nodes; default 3
	// MaxSurge is the PinnedDeployment's maxSurge; default Replicas (the
	// previous version may come back all at once).
	MaxSurge int
	Runs     int       // rollbacks measured; default 3
	Log      io.Writer // the lab's log; default nowhere
}

// Rollback measures a PinnedDeployment's rollback on a lab cluster (as
// the e2e tests build it: nodes in network namespaces, real agents, a
// registry on the bridge): Replicas pods at 100 % next are moved back to
// 0 %, and the time runs from the operator's write until every previous
// pod is ready, as a watch of the pods shows it. Each run first rolls out
// to 100 % again. It also counts the blobs the registry served during the
// rollbacks, which should be none: nodes keep both versions' images.
func Rollback(ctx context.Context, w io.Writer, o RollbackOptions) error {
	if o.Replicas <= 0 {
		o.Replicas = 100
	}
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if o.MaxSurge <= 0 {
		o.MaxSurge = o.Replicas
	}
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if os.Geteuid() != 0 {
		return errors.New("bench rollback needs root: it builds a lab cluster of network namespaces")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	img, err := testimage.Busybox()
	if err != nil {
		return fmt.Errorf("bench rollback: %w", err)
	}
	l, err := lab.Start(ctx, lab.Config{Nodes: o.Nodes, Binary: exe, Registry: true, Log: o.Log})
	if err != nil {
		return err
	}
	defer l.Close()
	cfg, err := client.LoadConfig(l.ConfigPath)
	if err != nil {
		return err
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = l.WaitNodes(wctx)
	cancel()
	if err != nil {
		return err
	}
	v1, err := l.PushImage("busybox:v1", img)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	conf := cf.Config
	conf.Env = append(append([]string(nil), conf.Env...), "IMAGE_VERSION=2")
	img2, err := mutate.Config(img, conf)
	if err != nil {
		return err
	}
	v2, err := l.PushImage("busybox:v2", img2)
	if err != nil {
		return err
	}

	pw := &versionWatch{ready: map[string]string{}, since: map[string]time.Time{}}
	list, err := c.List(ctx, "Pod", "default", "")
	if err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go c.Watch(watchCtx, "Pod", "default", list.Revision, func(ev client.Event) error { pw.event(ev); return nil })

	pd := rollbackPD(o, v1, v2)
	if _, err := c.Apply(ctx, pd, 0); err != nil {
		return err
	}
	ref := pd.Ref()
	start := time.Now()
	if err := waitComplete(ctx, c, ref); err != nil {
		return fmt.Errorf("creating %d pods: %w", o.Replicas, err)
	}
	created := time.Since(start)

	var outs, backs, completes []time.Duration
	var blobs int
	var stages stageTimes
	for run := 0; run < o.Runs; run++ {
		start := time.Now()
		if err := setPercent(ctx, c, ref, 100); err != nil {
			return err
		}
		if err := waitComplete(ctx, c, ref); err != nil {
			return fmt.Errorf("rolling out to 100%%: %w", err)
		}
		outs = append(outs, time.Since(start))
		// The previous pods stop after the rollout is complete; measure
		// from a quiet cluster.
		if err := waitPods(ctx, c, o.Replicas); err != nil {
			return err
		}
		before, err := l.BlobDownloads()
		if err != nil {
			return err
		}
		done := pw.expect("v1", o.Replicas)
		start = time.Now()
		if err := setPercent(ctx, c, ref, 0); err != nil {
			return err
		}
		var readyAt map[string]time.Time
		select {
		case t := <-done:
			backs = append(backs, t.Sub(start))
			readyAt = pw.readySince("v1")
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("rollback: %d previous pods not ready after 5 minutes", o.Replicas)
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := waitComplete(ctx, c, ref); err != nil {
			return fmt.Errorf("rolling back: %w", err)
		}
		completes = append(completes, time.Since(start))
		if err := stages.add(ctx, c, start, readyAt); err != nil {
			return err
		}
		if err := waitPods(ctx, c, o.Replicas); err != nil {
			return err
		}
		after, err := l.BlobDownloads()
		if err != nil {
			return err
		}
		blobs += after - before
	}
	sort.Slice(backs, func(i, j int) bool { return backs[i] < backs[j] })
	med := backs[len(backs)/2]
	runs := make([]string, len(backs))
	for i, d := range backs {
		runs[i] = secs(d)
	}
	rows := []Row{
		{Metric: fmt.Sprintf("create %d pods at 0%% (complete)", o.Replicas), Value: secs(created)},
		{Metric: "roll out 0 → 100%, complete, median", Value: secs(median(outs))},
		{Metric: fmt.Sprintf("rollback 100 → 0%%: all %d previous pods ready, median of %d", o.Replicas, len(backs)), Value: secs(med), Target: "≤ 5 s", Met: met(med <= 5*time.Second)},
		{Metric: "… each run, fastest first", Value: strings.Join(runs, ", ")},
		{Metric: "rollback 100 → 0%: complete (next pods deleted), median", Value: secs(median(completes))},
		{Metric: "blobs pulled from the registry during rollbacks", Value: fmt.Sprint(blobs), Target: "0", Met: met(blobs == 0)},
	}
	Print(w, fmt.Sprintf("skiff bench rollback: PinnedDeployment of %d busybox httpd pods, maxSurge %d, on a %d-node lab", o.Replicas, o.MaxSurge, o.Nodes), rows)
	stages.print(w)
	return nil
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func median(ds []time.Duration) time.Duration { return percentile(ds, 50) }

// rollbackPD is the bench's PinnedDeployment: httpd pods whose shell
// stops at SIGTERM, previous on image v1, next on v2.
func rollbackPD(o RollbackOptions, v1, v2 string) api.Object {
	tmpl := func(version, image string) map[string]any {
		return map[string]any{
			"labels": map[string]any{"app": "bench", "version": version},
			"spec": map[string]any{"containers": []any{map[string]any{
				"name": "web", "image": image, "env": map[string]any{"VERSION": version},
				"command":   []any{"sh", "-c", `echo "$VERSION" > /tmp/index.html; trap "exit 0" TERM; httpd -f -p 8080 -h /tmp & wait`},
				"resources": map[string]any{"memory": "16Mi"},
			}}},
		}
	}
	return api.Object{Kind: "PinnedDeployment", Namespace: "default", Name: "bench", Spec: map[string]any{
		"replicas": o.Replicas, "nextPercent": 0, "maxSurge": o.MaxSurge,
		"templates": map[string]any{"previous": tmpl("v1", v1), "next": tmpl("v2", v2)},
	}}
}

// setPercent moves a PinnedDeployment's share, as skiff rollout set does.
func setPercent(ctx context.Context, c *client.Client, ref api.Ref, percent int) error {
	obj, err := c.Get(ctx, ref)
	if err != nil {
		return err
	}
	obj.Spec["nextPercent"] = percent
	_, err = c.Apply(ctx, api.Object{Kind: obj.Kind, Namespace: obj.Namespace, Name: obj.Name, Labels: obj.Labels, Spec: obj.Spec}, obj.Meta.Revision)
	return err
}

// waitComplete polls a PinnedDeployment until the pinned controller
// reports its current generation complete, or stalled (an error).
func waitComplete(ctx context.Context, c *client.Client, ref api.Ref) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		obj, err := c.Get(ctx, ref)
		if err != nil {
			return err
		}
		gen, _ := obj.Status["observedGeneration"].(float64)
		if int64(gen) == obj.Meta.Generation {
			switch obj.Status["state"] {
			case api.RolloutComplete:
				return nil
			case api.RolloutStalled:
				return fmt.Errorf("%s stalled: %v", ref, obj.Status["reason"])
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not complete after 5 minutes: %v", ref, obj.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitPods waits until only n pods exist: those being deleted are gone.
func waitPods(ctx context.Context, c *client.Client, n int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		list, err := c.List(ctx, "Pod", "default", "")
		if err != nil {
			return err
		}
		if len(list.Items) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d pods after 5 minutes, want %d", len(list.Items), n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// versionWatch counts ready pods per version label, from a watch.
type versionWatch struct {
	mu     sync.Mutex
	ready  map[string]string    // pod → version, ready pods only
	since  map[string]time.Time // pod → when it was last seen becoming ready
	want   string
	n      int
	notify chan time.Time
}

func (v *versionWatch) event(ev client.Event) {
	p := ev.Object
	ok := ev.Type != "deleted" && p.Meta.Deleting == nil && p.Status["phase"] == "Running"
	cs, _ := p.Status["containers"].([]any)
	for _, c := range cs {
		if m, _ := c.(map[string]any); m["state"] != "running" {
			ok = false
		}
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if ok {
		if _, was := v.ready[p.Name]; !was {
			v.since[p.Name] = now
		}
		v.ready[p.Name] = p.Labels["version"]
	} else {
		delete(v.ready, p.Name)
		delete(v.since, p.Name)
	}
	if v.notify != nil && v.countLocked(v.want) >= v.n {
		v.notify <- now
		v.notify = nil
	}
}

func (v *versionWatch) countLocked(version string) int {
	n := 0
	for _, ver := range v.ready {
		if ver == version {
			n++
		}
	}
	return n
}

// expect returns a channel that receives the time at which n pods of a
// version are ready.
func (v *versionWatch) expect(version string, n int) <-chan time.Time {
	ch := make(chan time.Time, 1)
	v.mu.Lock()
	v.want, v.n, v.notify = version, n, ch
	v.mu.Unlock()
	return ch
}

// readySince returns the ready pods of a version and when the watch saw
// each become ready.
func (v *versionWatch) readySince(version string) map[string]time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]time.Time{}
	for name, ver := range v.ready {
		if ver == version {
			out[name] = v.since[name]
		}
	}
	return out
}

// stageNames are the moments of a pod's way from the operator's write to
// ready, in order: the pod's up run started (the controller created it),
// then the steps' ends (and, for the node's steps, the moment the node
// took the work item), and the watch seeing it ready.
var stageNames = []string{
	"pod created (run started)",
	"admitted",
	"scheduled",
	"address",
	"netup taken by the node",
	"netup done",
	"start taken by the node",
	"start done (containers running, status written)",
	"ready seen on the watch",
}

// stageTimes collects, over every rollback, each pod's moments (offsets
// from the operator's write), to show where a rollback's time goes.
type stageTimes struct {
	at    [][]time.Duration // per stage, one offset per pod
	spans [][]time.Duration // per stage after the first, the time since the stage before
}

// add reads the up runs of the pods that became ready and records their
// moments relative to start.
func (s *stageTimes) add(ctx context.Context, c *client.Client, start time.Time, readyAt map[string]time.Time) error {
	if s.at == nil {
		s.at = make([][]time.Duration, len(stageNames))
		s.spans = make([][]time.Duration, len(stageNames))
	}
	for name, ready := range readyAt {
		runs, err := c.Runs(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err != nil {
			return fmt.Errorf("runs of pod %s: %w", name, err)
		}
		var marks []time.Time
		for _, r := range runs {
			if r.Phase != "up" || r.Generation != 1 {
				continue
			}
			step := map[string]workflow.StepRecord{}
			for _, st := range r.Steps {
				step[st.Name] = st
			}
			get := func(t *time.Time) time.Time {
				if t == nil {
					return time.Time{}
				}
				return *t
			}
			marks = []time.Time{r.Started,
				get(step["admit"].Finished), get(step["schedule"].Finished), get(step["address"].Finished),
				get(step["netup"].Started), get(step["netup"].Finished),
				get(step["start"].Started), get(step["start"].Finished), ready}
		}
		if marks == nil || slices.ContainsFunc(marks, time.Time.IsZero) {
			continue // not one run from create to started: a retry, say
		}
		for i, m := range marks {
			s.at[i] = append(s.at[i], m.Sub(start))
			if i > 0 {
				s.spans[i] = append(s.spans[i], m.Sub(marks[i-1]))
			}
		}
	}
	return nil
}

// print writes a table of the moments: when pods reached each (p10, p50,
// p90 and the last, from the operator's write) and how long the span
// before it took (p50, p90).
func (s *stageTimes) print(w io.Writer) {
	if len(s.at) == 0 || len(s.at[0]) == 0 {
		return
	}
	fmt.Fprintf(w, "\nwhere the time goes (%d pods over all rollbacks; seconds from the operator's write, and the span since the moment above)\n", len(s.at[0]))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MOMENT\tp10\tp50\tp90\tlast\tSPAN p50\tSPAN p90\t")
	for i, name := range stageNames {
		at := s.at[i]
		span50, span90 := "-", "-"
		if i > 0 {
			span50, span90 = ms(percentile(s.spans[i], 50)), ms(percentile(s.spans[i], 90))
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t\n", name, percentile(at, 10).Seconds(), percentile(at, 50).Seconds(),
			percentile(at, 90).Seconds(), percentile(at, 100).Seconds(), span50, span90)
	}
	tw.Flush()
}
