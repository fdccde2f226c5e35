package workflow

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api/fieldpath"
)

// memObjects is an in-memory Objects for engine tests.
type memObjects struct {
	mu      sync.Mutex
	bodies  map[string]map[string]any
	removed []Ref
	writes  []string
}

func (m *memObjects) Write(_ context.Context, ref Ref, ctl, step string, writes map[string]any) (map[string]any, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var body any = m.bodies[ref.key()]
	for p, v := range writes {
		var err error
		if body, err = fieldpath.Apply(body, []fieldpath.Op{{Path: p, Value: v}}); err != nil {
			return nil, err
		}
		m.writes = append(m.writes, ctl+":"+p)
	}
	b, _ := body.(map[string]any)
	m.bodies[ref.key()] = b
	return b, nil
}

func (m *memObjects) Remove(_ context.Context, ref Ref) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.removed = append(m.removed, ref)
	return nil
}

// harness runs an engine with in-process handlers.
type harness struct {
	t     *testing.T
	e     *Engine
	local *Local
	objs  *memObjects
	mu    sync.Mutex
	spans map[string][2]time.Time // step → start, end as handlers saw them
	calls map[string]int
}

func newHarness(t *testing.T, steps []Step, opts ...func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, objs: &memObjects{bodies: map[string]map[string]any{}}, spans: map[string][2]time.Time{}, calls: map[string]int{}}
	h.local = &Local{}
	o := Options{Objects: h.objs, Dispatcher: h.local, Backoff: func(int) time.Duration { return time.Millisecond }}
	for _, opt := range opts {
		opt(&o)
	}
	h.e = NewEngine(o)
	h.local.Engine = h.e
	var gs []*Graph
	for _, ph := range []string{Up, Down} {
		g, err := BuildGraph("Pod", ph, PodTargets(), steps)
		if err != nil {
			t.Fatalf("BuildGraph %s: %v", ph, err)
		}
		gs = append(gs, g)
	}
	h.e.SetGraphs(gs)
	return h
}

// behave registers a handler for a controller: per step, how long to take
// and what to do.
type behaviour struct {
	sleep  time.Duration
	fail   string
	writes map[string]any
	hang   bool
	log    []string
}

func (h *harness) handle(ctl string, b map[string]behaviour) {
	h.local.Handle(ctl, func(ctx context.Context, it *WorkItem, log func(string, map[string]any)) Result {
		start := time.Now()
		bh := b[it.Step]
		h.mu.Lock()
		h.calls[it.Step]++
		h.mu.Unlock()
		for _, l := range bh.log {
			log(l, map[string]any{"step": it.Step})
		}
		if bh.hang {
			<-ctx.Done()
			return Result{Err: "cancelled"}
		}
		select {
		case <-time.After(bh.sleep):
		case <-ctx.Done():
		}
		h.mu.Lock()
		h.spans[it.Step] = [2]time.Time{start, time.Now()}
		h.mu.Unlock()
		return Result{Err: bh.fail, Writes: bh.writes}
	})
}

func (h *harness) wait(ref Ref, gen int64, phase ...string) RunRecord {
	h.t.Helper()
	ph := Up
	if len(phase) > 0 {
		ph = phase[0]
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range h.e.Runs(ref) {
			if r.Generation == gen && r.Phase == ph && r.State != RunRunning && r.State != RunSuperseded {
				return r
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	h.t.Fatalf("run of %s generation %d did not finish: %+v", ref, gen, h.e.Runs(ref))
	return RunRecord{}
}

func stepOf(r RunRecord, name string) StepRecord {
	for _, s := range r.Steps {
		if s.Name == name {
			return s
		}
	}
	return StepRecord{Name: name, State: "absent"}
}

func paths(ps ...string) []fieldpath.Path {
	out := make([]fieldpath.Path, len(ps))
	for i, p := range ps {
		out[i], _ = fieldpath.Parse(p)
	}
	return out
}

var podRef = Ref{Kind: "Pod", Namespace: "default", Name: "web"}

func podBody(env string) map[string]any {
	return map[string]any{"spec": map[string]any{
		"resources":  map[string]any{"cpu": "250m"},
		"containers": []any{map[string]any{"name": "app", "env": map[string]any{"A": env}}},
	}}
}

func TestRunOrderSkipAndRerun(t *testing.T) {
	steps := []Step{
		{Name: "admit", Controller: "admission", Kind: "Pod", Phase: Up, Before: []string{"admitted"}, RequiredBy: []string{"admitted"}, Reads: paths("spec")},
		{Name: "schedule", Controller: "scheduler", Kind: "Pod", Phase: Up, After: []string{"admitted"}, Before: []string{"scheduled"}, RequiredBy: []string{"scheduled"}, Reads: paths("spec.resources")},
		{Name: "volume", Controller: "nfs", Kind: "Pod", Phase: Up, After: []string{"scheduled"}, Before: []string{"storage"}, RequiredBy: []string{"storage"}, Reads: paths("status.node")},
		{Name: "addr", Controller: "ipam", Kind: "Pod", Phase: Up, After: []string{"scheduled"}, Before: []string{"network"}, RequiredBy: []string{"network"}, Reads: paths("status.node")},
		{Name: "start", Controller: "agent", Kind: "Pod", Phase: Up, After: []string{"storage", "network"}, Before: []string{"started"}, RequiredBy: []string{"started"}, Reads: paths("spec.containers", "status.node")},
		{Name: "metrics", Controller: "agent", Kind: "Pod", Phase: Up, After: []string{"started"}, WantedBy: []string{"running"}},
		{Name: "stop", Controller: "agent", Kind: "Pod", Phase: Down, Before: []string{"stopped"}, RequiredBy: []string{"stopped"}},
	}
	h := newHarness(t, steps)
	h.handle("admission", map[string]behaviour{"admit": {}})
	h.handle("scheduler", map[string]behaviour{"schedule": {writes: map[string]any{"status.node": "n1"}}})
	h.handle("nfs", map[string]behaviour{"volume": {sleep: 30 * time.Millisecond}})
	h.handle("ipam", map[string]behaviour{"addr": {sleep: 30 * time.Millisecond}})
	h.handle("agent", map[string]behaviour{"start": {}, "metrics": {fail: "no metrics endpoint", log: []string{"scraping"}}, "stop": {}})

	h.objs.bodies[podRef.key()] = podBody("1")
	h.e.Submit(Object{Ref: podRef, Generation: 1, Body: podBody("1")})
	r := h.wait(podRef, 1)
	if r.State != RunDone {
		t.Fatalf("run 1 = %s (%s), want done", r.State, r.Reason)
	}
	// volume and addr run concurrently: neither is ordered after the other.
	v, a := h.spans["volume"], h.spans["addr"]
	if !(v[0].Before(a[1]) && a[0].Before(v[1])) {
		t.Errorf("volume %v and addr %v did not overlap", v, a)
	}
	// Order: schedule finished before volume started; start after both.
	if s, st := stepOf(r, "schedule"), stepOf(r, "start"); !s.Finished.Before(*stepOf(r, "volume").Started) || st.Started.Before(*stepOf(r, "addr").Finished) {
		t.Errorf("ordering violated: %+v", r.Steps)
	}
	if m := stepOf(r, "metrics"); m.State != Failed || !m.Optional || m.Reason != "no metrics endpoint" || len(m.Log) != 1 {
		t.Errorf("optional metrics = %+v", m)
	}
	if s := stepOf(r, "schedule"); len(s.Writes) != 1 || s.Writes[0] != "status.node" {
		t.Errorf("schedule writes = %v", s.Writes)
	}
	if stepOf(r, "stop").State != "absent" {
		t.Error("a down step is in an up run")
	}

	// Generation 2 changes only env: schedule, volume, addr are skipped;
	// admit (reads spec) and start (reads containers) run again.
	h.e.Submit(Object{Ref: podRef, Generation: 2, Body: mergeStatus(podBody("2"), h.objs.bodies[podRef.key()])})
	r = h.wait(podRef, 2)
	for name, want := range map[string]string{"admit": Done, "schedule": Skipped, "volume": Skipped, "addr": Skipped, "start": Done, "running": Done} {
		if got := stepOf(r, name).State; got != want {
			t.Errorf("generation 2: %s is %s, want %s", name, got, want)
		}
	}
	if h.calls["schedule"] != 1 || h.calls["start"] != 2 {
		t.Errorf("calls = %v", h.calls)
	}

	// The same generation again starts nothing.
	h.e.Submit(Object{Ref: podRef, Generation: 2, Body: h.objs.bodies[podRef.key()]})
	if n := len(h.e.Runs(podRef)); n != 2 {
		t.Errorf("%d runs after resubmitting the same generation, want 2", n)
	}

	// Deletion runs the down phase and removes the object.
	h.e.Submit(Object{Ref: podRef, Generation: 2, Deleting: true, Body: h.objs.bodies[podRef.key()]})
	r = h.wait(podRef, 2, Down)
	if r.Phase != Down || r.State != RunDone || stepOf(r, "stop").State != Done {
		t.Fatalf("deletion run = %+v", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.objs.mu.Lock()
		n := len(h.objs.removed)
		h.objs.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("object not removed after its down run")
		}
		time.Sleep(time.Millisecond)
	}
}

func mergeStatus(body, from map[string]any) map[string]any {
	if st, ok := from["status"]; ok {
		body["status"] = st
	}
	return body
}

func TestTimeoutRequiresAndRetry(t *testing.T) {
	steps := []Step{
		{Name: "mount", Controller: "nfs", Kind: "Pod", Phase: Up, Before: []string{"storage"}, RequiredBy: []string{"storage"}, Timeout: 50 * time.Millisecond},
		{Name: "flaky", Controller: "ipam", Kind: "Pod", Phase: Up, Before: []string{"network"}, RequiredBy: []string{"network"}, Retry: 2},
		{Name: "start", Controller: "agent", Kind: "Pod", Phase: Up, After: []string{"storage", "network"}, Requires: []string{"storage", "network"}, RequiredBy: []string{"started"}, Before: []string{"started"}},
		// Ordered after storage but not requiring it: runs anyway, as in systemd.
		{Name: "report", Controller: "agent", Kind: "Pod", Phase: Up, After: []string{"storage"}, WantedBy: []string{"running"}},
	}
	h := newHarness(t, steps)
	h.handle("nfs", map[string]behaviour{"mount": {hang: true, log: []string{"connecting to nfs.example:2049"}}})
	var flakyCalls int
	var mu sync.Mutex
	h.local.Handle("ipam", func(ctx context.Context, it *WorkItem, log func(string, map[string]any)) Result {
		mu.Lock()
		defer mu.Unlock()
		flakyCalls++
		if flakyCalls < 3 {
			return Result{Err: fmt.Sprintf("pool busy (%d)", flakyCalls)}
		}
		return Result{}
	})
	h.handle("agent", map[string]behaviour{"start": {}, "report": {}})
	h.e.Submit(Object{Ref: podRef, Generation: 1, Body: podBody("1")})
	r := h.wait(podRef, 1)
	if r.State != RunFailed {
		t.Fatalf("run = %s, want failed", r.State)
	}
	m := stepOf(r, "mount")
	if m.State != TimedOut || m.Reason != "timed out after 50ms" || len(m.Log) == 0 || m.Log[len(m.Log)-1].Msg != "connecting to nfs.example:2049" {
		t.Errorf("mount = %+v", m)
	}
	if f := stepOf(r, "flaky"); f.State != Done || f.Attempts != 3 {
		t.Errorf("flaky = %+v, want done after 3 attempts", f)
	}
	if s := stepOf(r, "storage"); s.State != Failed || s.Reason != "dependency failed: mount" {
		t.Errorf("storage = %+v", s)
	}
	if s := stepOf(r, "start"); s.State != Failed || !strings.HasPrefix(s.Reason, "dependency failed: ") {
		t.Errorf("start = %+v", s)
	}
	if h.calls["start"] != 0 {
		t.Error("start ran although its requirement failed")
	}
	if rep := stepOf(r, "report"); rep.State != Done || h.calls["report"] != 1 {
		t.Errorf("report (after storage, not requiring it) = %+v", rep)
	}
	if r.Reason == "" {
		t.Error("failed run has no reason")
	}
}

func TestSupersede(t *testing.T) {
	steps := []Step{
		{Name: "slow", Controller: "c", Kind: "Pod", Phase: Up, Before: []string{"started"}, RequiredBy: []string{"started"}, Reads: paths("spec")},
	}
	h := newHarness(t, steps)
	started := make(chan int64, 4)
	h.local.Handle("c", func(ctx context.Context, it *WorkItem, log func(string, map[string]any)) Result {
		started <- it.Generation
		if it.Generation == 1 {
			<-ctx.Done()
			return Result{Err: "cancelled"}
		}
		return Result{}
	})
	h.e.Submit(Object{Ref: podRef, Generation: 1, Body: podBody("1")})
	if g := <-started; g != 1 {
		t.Fatalf("first attempt for generation %d", g)
	}
	h.e.Submit(Object{Ref: podRef, Generation: 2, Body: podBody("2")})
	r := h.wait(podRef, 2)
	if r.State != RunDone {
		t.Fatalf("run 2 = %+v", r)
	}
	runs := h.e.Runs(podRef)
	if len(runs) != 2 || runs[1].State != RunSuperseded || stepOf(runs[1], "slow").State != Cancelled {
		t.Errorf("runs = %+v", runs)
	}
}

func TestBuildGraphErrors(t *testing.T) {
	tests := []struct {
		name  string
		steps []Step
		want  string
	}{
		{"cycle", []Step{
			{Name: "a", Controller: "x", Kind: "Pod", Phase: Up, After: []string{"b"}, RequiredBy: []string{"running"}},
			{Name: "b", Controller: "y", Kind: "Pod", Phase: Up, After: []string{"a"}, RequiredBy: []string{"running"}},
		}, "ordering cycle: "},
		{"cycle through targets", []Step{
			{Name: "a", Controller: "x", Kind: "Pod", Phase: Up, After: []string{"running"}, Before: []string{"admitted"}, RequiredBy: []string{"running"}},
		}, "ordering cycle: "},
		{"unknown target", []Step{
			{Name: "a", Controller: "x", Kind: "Pod", Phase: Up, Before: []string{"storrage"}, RequiredBy: []string{"storage"}},
		}, "step a of controller:x: before storrage: no such target or step for Pod (up phase)"},
		{"not pulled in", []Step{
			{Name: "a", Controller: "x", Kind: "Pod", Phase: Up, Before: []string{"storage"}},
		}, "step a of controller:x is pulled in by nothing and would never run: add requiredBy or wantedBy (for example requiredBy: [storage])"},
		{"name clash", []Step{
			{Name: "storage", Controller: "x", Kind: "Pod", Phase: Up, RequiredBy: []string{"running"}},
		}, "step storage of controller:x: the name is already a target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BuildGraph("Pod", Up, PodTargets(), tt.steps)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	_, err := BuildGraph("Pod", Up, PodTargets(), []Step{
		{Name: "a", Controller: "x", Kind: "Pod", Phase: Up, After: []string{"b"}, RequiredBy: []string{"running"}},
		{Name: "b", Controller: "y", Kind: "Pod", Phase: Up, After: []string{"c"}, RequiredBy: []string{"running"}},
		{Name: "c", Controller: "z", Kind: "Pod", Phase: Up, After: []string{"a"}, RequiredBy: []string{"running"}},
	})
	if err == nil || !strings.Contains(err.Error(), "a (controller:x) → b (controller:y) → c (controller:z) → a (controller:x)") &&
		!strings.Contains(err.Error(), "→") {
		t.Errorf("3-cycle: %v", err)
	}
}

func TestTransactionOptional(t *testing.T) {
	g, err := BuildGraph("Pod", Up, PodTargets(), []Step{
		{Name: "w", Controller: "x", Kind: "Pod", Phase: Up, WantedBy: []string{"running"}, Requires: []string{"helper"}},
		{Name: "helper", Controller: "x", Kind: "Pod", Phase: Up, WantedBy: []string{"running"}},
		{Name: "r", Controller: "x", Kind: "Pod", Phase: Up, RequiredBy: []string{"network"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	units, opt, err := g.Transaction("running")
	if err != nil {
		t.Fatal(err)
	}
	if len(units) != 9 {
		t.Errorf("units = %v", units)
	}
	if !opt["w"] || !opt["helper"] || opt["r"] || opt["admitted"] {
		t.Errorf("optional = %v", opt)
	}
}

// TestRerunAfterEviction: the same generation runs again when asked, with
// its cause recorded; steps that read what changed run, the others skip.
func TestRerunAfterEviction(t *testing.T) {
	steps := []Step{
		{Name: "schedule", Controller: "scheduler", Kind: "Pod", Phase: Up, Before: []string{"scheduled"}, RequiredBy: []string{"scheduled"}, Reads: paths("spec.resources", "status.evicted")},
		{Name: "start", Controller: "agent", Kind: "Pod", Phase: Up, After: []string{"scheduled"}, Before: []string{"started"}, RequiredBy: []string{"started"}, Reads: paths("spec.resources", "status.node")},
	}
	h := newHarness(t, steps)
	h.handle("scheduler", map[string]behaviour{"schedule": {}})
	h.handle("agent", map[string]behaviour{"start": {}})
	h.e.Submit(Object{Ref: podRef, Generation: 1, Body: podBody("1")})
	if r := h.wait(podRef, 1); r.State != RunDone || r.Cause != "" {
		t.Fatalf("run 1 = %s cause %q", r.State, r.Cause)
	}
	evicted := podBody("1")
	evicted["status"] = map[string]any{"evicted": map[string]any{"node": "n1"}}
	h.e.Rerun(Object{Ref: podRef, Generation: 1, Body: evicted}, "evicted from n1")
	var r RunRecord
	deadline := time.Now().Add(5 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		runs := h.e.Runs(podRef)
		if r = runs[0]; len(runs) == 2 && r.State == RunDone {
			break
		}
	}
	if r.Cause != "evicted from n1" || r.State != RunDone {
		t.Fatalf("rerun = %s cause %q, want done with its cause", r.State, r.Cause)
	}
	if got := stepOf(r, "schedule").State; got != Done {
		t.Errorf("schedule after eviction is %s, want done (its reads changed)", got)
	}
	if got := stepOf(r, "start").State; got != Skipped {
		t.Errorf("start is %s, want skipped (status.node did not change)", got)
	}
	if h.calls["schedule"] != 2 {
		t.Errorf("schedule called %d times, want 2", h.calls["schedule"])
	}
}

// memRecorder keeps the newest copy of each run record.
type memRecorder struct {
	mu   sync.Mutex
	runs map[string]RunRecord
}

func (m *memRecorder) Record(r RunRecord) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs[r.ID] = r
}

// runs returns the recorded runs of a generation that ended.
func (m *memRecorder) ended(gen int64) []RunRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []RunRecord
	for _, r := range m.runs {
		if r.Generation == gen && r.State != RunRunning {
			out = append(out, r)
		}
	}
	return out
}

// An engine that keeps no finished runs in memory (the recorder has them)
// still skips steps whose reads did not change and retries failed runs.
func TestKeepNoRuns(t *testing.T) {
	steps := []Step{
		{Name: "admit", Controller: "admission", Kind: "Pod", Phase: Up, Before: []string{"admitted"}, RequiredBy: []string{"admitted"}, Reads: paths("spec")},
		{Name: "schedule", Controller: "scheduler", Kind: "Pod", Phase: Up, After: []string{"admitted"}, Before: []string{"scheduled"}, RequiredBy: []string{"scheduled"}, Reads: paths("spec.resources")},
		{Name: "start", Controller: "agent", Kind: "Pod", Phase: Up, After: []string{"scheduled"}, Before: []string{"started"}, RequiredBy: []string{"started"}, Reads: paths("spec.containers", "status.node")},
	}
	rec := &memRecorder{runs: map[string]RunRecord{}}
	h := newHarness(t, steps, func(o *Options) { o.KeepRuns, o.Recorder = -1, rec })
	place := behaviour{fail: "no node fits"}
	var mu sync.Mutex
	h.handle("admission", map[string]behaviour{"admit": {}})
	h.local.Handle("scheduler", func(ctx context.Context, it *WorkItem, log func(string, map[string]any)) Result {
		mu.Lock()
		defer mu.Unlock()
		return Result{Err: place.fail, Writes: place.writes}
	})
	h.handle("agent", map[string]behaviour{"start": {}})
	ended := func(gen int64, n int) RunRecord {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if runs := rec.ended(gen); len(runs) == n {
				if active := h.e.Runs(podRef); len(active) != 0 {
					t.Errorf("runs in memory after generation %d ended: %+v", gen, active)
				}
				last := runs[0]
				for _, r := range runs {
					if r.ID > last.ID {
						last = r
					}
				}
				return last
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("generation %d: %d runs ended, want %d", gen, len(rec.ended(gen)), n)
		return RunRecord{}
	}

	h.objs.bodies[podRef.key()] = podBody("1")
	h.e.Submit(Object{Ref: podRef, Generation: 1, Body: podBody("1")})
	if r := ended(1, 1); r.State != RunFailed || stepOf(r, "schedule").Reason != "no node fits" {
		t.Fatalf("generation 1 = %s, schedule %+v; want failed on no node fits", r.State, stepOf(r, "schedule"))
	}
	mu.Lock()
	place = behaviour{writes: map[string]any{"status.node": "n1"}}
	mu.Unlock()
	if n := h.e.RetryFailed("Pod"); n != 1 {
		t.Fatalf("RetryFailed started %d runs, want 1", n)
	}
	r := ended(1, 2)
	if r.State != RunDone || stepOf(r, "admit").State != Skipped || stepOf(r, "schedule").State != Done {
		t.Fatalf("retry = %s: admit %s, schedule %s; want done, admit skipped", r.State, stepOf(r, "admit").State, stepOf(r, "schedule").State)
	}
	if n := h.e.RetryFailed("Pod"); n != 0 {
		t.Errorf("RetryFailed after a done run started %d runs", n)
	}

	// A new generation that changes only env skips schedule.
	h.e.Submit(Object{Ref: podRef, Generation: 2, Body: mergeStatus(podBody("2"), h.objs.bodies[podRef.key()])})
	r = ended(2, 1)
	if r.State != RunDone || stepOf(r, "schedule").State != Skipped || stepOf(r, "start").State != Done {
		t.Errorf("generation 2 = %s: schedule %s, start %s; want schedule skipped, start done", r.State, stepOf(r, "schedule").State, stepOf(r, "start").State)
	}
}
