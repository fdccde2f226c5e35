// Package workflow_test runs skiff's workflows end to end: the real binary,
// five external controllers with thirty steps taking work over the API, and
// `skiff why`, `skiff graph` and `skiff journal` explaining what happened.
package workflow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/test/testcluster"
	"skiff.dev/skiff/workflow"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// why is the JSON shape of `skiff why -o json`.
type why struct {
	Object     string `json:"object"`
	Generation int64  `json:"generation"`
	Target     string `json:"target"`
	State      string `json:"state"`
	Steps      []struct {
		Name       string    `json:"name"`
		Controller string    `json:"controller"`
		State      string    `json:"state"`
		Started    time.Time `json:"started"`
		Finished   time.Time `json:"finished"`
		Attempts   int       `json:"attempts"`
		WaitingOn  []string  `json:"waitingOn"`
		Log        []struct {
			Msg string `json:"msg"`
		} `json:"log"`
	} `json:"steps"`
}

func (w why) step(name string) (s struct {
	Name, Controller, State string
	Attempts                int
	LastLog                 string
}) {
	for _, st := range w.Steps {
		if st.Name == name {
			s.Name, s.Controller, s.State, s.Attempts = st.Name, st.Controller, st.State, st.Attempts
			if len(st.Log) > 0 {
				s.LastLog = st.Log[len(st.Log)-1].Msg
			}
			return s
		}
	}
	s.State = "absent"
	return s
}

// waitRun polls `skiff why` until the run of generation gen has finished.
func waitRun(t *testing.T, c *testcluster.Cluster, obj string, gen int64) why {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var w why
	for time.Now().Before(deadline) {
		out, _, code := c.Run("", "why", obj, "-o", "json")
		if code == 0 && json.Unmarshal([]byte(out), &w) == nil && w.Generation == gen && w.State != workflow.RunRunning {
			return w
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("run of %s generation %d did not finish; last: %+v", obj, gen, w)
	return w
}

// controllers runs the five example controllers of examples/workflow.
type controllers struct {
	mu      sync.Mutex
	started map[string]chan struct{} // POD/b1, POD/c1: closed when the step starts
	calls   map[string]int
}

func (cs *controllers) step(name string) client.StepFunc {
	ctl := map[byte]string{'a': "alpha", 'b': "bravo", 'c': "charlie", 'd': "delta", 'e': "echo"}[name[0]]
	return func(ctx context.Context, it *workflow.WorkItem, log func(string, map[string]any)) (map[string]any, error) {
		cs.mu.Lock()
		cs.calls[it.Name+"/"+name]++
		cs.mu.Unlock()
		log("working on "+name, map[string]any{"attempt": it.Attempt})
		switch name {
		case "b1", "c1":
			// b1 and c1 must run at the same time: each waits for the other.
			close(cs.signal(it.Name + "/" + name))
			other := map[string]string{"b1": "c1", "c1": "b1"}[name]
			select {
			case <-cs.signal(it.Name + "/" + other):
			case <-time.After(1500 * time.Millisecond):
				return nil, fmt.Errorf("%s did not run concurrently with %s", name, other)
			}
		case "e6":
			return nil, errors.New("optional check failed: no dashboard configured")
		case "d3":
			if it.Name == "stuck" {
				log("waiting for the disk to attach", nil)
				<-ctx.Done()
				return nil, ctx.Err()
			}
		}
		return map[string]any{"status." + ctl + "." + name: "ok"}, nil
	}
}

// signal returns the channel closed when a pod's step starts.
func (cs *controllers) signal(key string) chan struct{} {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.started[key] == nil {
		cs.started[key] = make(chan struct{})
	}
	return cs.started[key]
}

func serve(t *testing.T, c *testcluster.Cluster) *controllers {
	cs := &controllers{started: map[string]chan struct{}{}, calls: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for ctl, prefix := range map[string]string{"alpha": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e"} {
		steps := map[string]client.StepFunc{}
		for i := 1; i <= 6; i++ {
			name := fmt.Sprintf("%s%d", prefix, i)
			steps[name] = cs.step(name)
		}
		cl := c.Client(c.Token("--controller", ctl))
		wg.Add(1)
		go func() { defer wg.Done(); cl.Serve(ctx, steps) }()
	}
	return cs
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestThirtyStepsFromFiveControllers(t *testing.T) {
	// Only admission of the built-in controllers: no scheduler or nodes,
	// so the run is the example's thirty steps and nothing else.
	c := testcluster.Up(t, filepath.Join(t.TempDir(), "data"), "--builtin-controllers", "admission")
	out := c.OK("", "apply", "-f", "../../examples/workflow/controllers.yaml")
	if strings.Count(out, "created") != 5 {
		t.Fatalf("registering the example controllers:\n%s", out)
	}
	// Registered once the apply returns (the server reloads them then).
	ctls := c.OK("", "controllers")
	for _, name := range []string{"admission", "alpha", "bravo", "charlie", "delta", "echo"} {
		if !strings.Contains(ctls, name) {
			t.Errorf("skiff controllers does not list %s:\n%s", name, ctls)
		}
	}
	cs := serve(t, c)

	pod := readFile(t, "../../examples/pod.yaml")
	c.OK(pod, "apply", "-f", "-")
	w := waitRun(t, c, "pod/web", 1)
	if w.State != workflow.RunDone || w.Target != "running" || w.Object != "pod/web" {
		t.Fatalf("run = %s toward %s for %s, want done toward running", w.State, w.Target, w.Object)
	}
	steps, targets := 0, 0
	for _, s := range w.Steps {
		if s.Controller == "" {
			targets++
		} else if s.Controller != "admission" {
			steps++
		}
	}
	if steps != 30 || targets != 6 {
		t.Errorf("run has %d steps from the example and %d targets, want 30 and 6", steps, targets)
	}
	for _, s := range w.Steps {
		want := workflow.Done
		if s.Name == "e6" {
			want = workflow.Failed
		}
		if s.State != want {
			t.Errorf("%s (%s) is %s, want %s (log %v)", s.Name, s.Controller, s.State, want, s.Log)
		}
	}
	b1, c1 := w.Steps[indexOf(w, "b1")], w.Steps[indexOf(w, "c1")]
	if !(b1.Started.Before(c1.Finished) && c1.Started.Before(b1.Finished)) {
		t.Errorf("b1 [%v, %v] and c1 [%v, %v] did not overlap", b1.Started, b1.Finished, c1.Started, c1.Finished)
	}
	text := c.OK("", "why", "pod/web")
	for _, want := range []string{"e6", "optional", "optional check failed: no dashboard configured", "running"} {
		if !strings.Contains(text, want) {
			t.Errorf("skiff why pod/web does not mention %q:\n%s", want, text)
		}
	}

	// Only alpha reads the containers: changing env re-runs alpha's six
	// steps; every other step's reads are unchanged, so it is skipped (e6,
	// which never succeeded, runs again).
	c.OK(strings.Replace(pod, "GREETING: hello", "GREETING: bonjour", 1), "apply", "-f", "-")
	w = waitRun(t, c, "pod/web", 2)
	for _, s := range w.Steps {
		want := workflow.Skipped
		switch {
		case s.Controller == "" || s.Controller == "admission" || s.Controller == "alpha":
			want = workflow.Done
		case s.Name == "e6":
			want = workflow.Failed
		}
		if s.State != want {
			t.Errorf("generation 2: %s is %s, want %s", s.Name, s.State, want)
		}
	}
	cs.mu.Lock()
	if cs.calls["web/a1"] != 2 || cs.calls["web/b3"] != 1 || cs.calls["web/e6"] != 2 {
		t.Errorf("calls = %v", cs.calls)
	}
	cs.mu.Unlock()

	chain := c.OK("", "graph", "pod/web", "--critical-chain")
	for _, want := range []string{"running", "started", "admitted"} {
		if !strings.Contains(chain, want) {
			t.Errorf("critical chain lacks %s:\n%s", want, chain)
		}
	}
	svg := filepath.Join(t.TempDir(), "web.svg")
	c.OK("", "graph", "pod/web", "--svg", svg)
	if s := readFile(t, svg); !strings.HasPrefix(strings.TrimSpace(s), "<") || !strings.Contains(s, "e6") {
		t.Errorf("svg timeline:\n%.300s", s)
	}
	if dot := c.OK("", "graph", "pod/web", "--dot"); !strings.Contains(dot, "digraph") || !strings.Contains(dot, `"b1"`) {
		t.Errorf("dot:\n%.300s", dot)
	}
	journal := c.OK("", "journal", "pod/web")
	if !strings.Contains(journal, "working on a1") || !strings.Contains(journal, "no dashboard configured") {
		t.Errorf("journal:\n%s", journal)
	}

	// A step that hangs past its timeout: the run fails, and why shows the
	// step timed out with its last log line.
	c.OK(strings.Replace(pod, "name: web", "name: stuck", 1), "apply", "-f", "-")
	w = waitRun(t, c, "pod/stuck", 1)
	d3 := w.step("d3")
	if w.State != workflow.RunFailed || d3.State != workflow.TimedOut || d3.LastLog != "waiting for the disk to attach" {
		t.Errorf("stuck run %s; d3 = %+v", w.State, d3)
	}
	if s := w.step("d4"); s.State != workflow.Waiting && s.State != workflow.Failed && s.State != workflow.Done {
		t.Errorf("d4 = %+v", s)
	}
	if s := w.step("started"); s.State != workflow.Failed {
		t.Errorf("started = %+v, want failed (dependency failed)", s)
	}
	text = c.OK("", "why", "pod/stuck")
	for _, want := range []string{"d3", "timed out after 2s", "waiting for the disk to attach", "dependency failed"} {
		if !strings.Contains(text, want) {
			t.Errorf("skiff why pod/stuck does not mention %q:\n%s", want, text)
		}
	}

	// Deleting runs the (empty) down phase and removes the pod.
	c.OK("", "delete", "pod/stuck")
	if _, errs, code := c.Run("", "get", "pod/stuck"); code == 0 || !strings.Contains(errs, "not found") {
		t.Errorf("pod/stuck still there after delete: %s", errs)
	}
	c.Stop()
}

func indexOf(w why, name string) int {
	for i, s := range w.Steps {
		if s.Name == name {
			return i
		}
	}
	return -1
}

const scheduler = `kind: Controller
name: scheduler
spec:
  owns: [Pod:status.node]
  reads: [Pod:spec.containers]
  steps:
    - name: schedule
      kind: Pod
      after: [admitted]
      before: [scheduled]
      requiredBy: [scheduled]
`

func TestFieldOwnership(t *testing.T) {
	// The test registers its own scheduler instead of the built-in one.
	c := testcluster.Up(t, filepath.Join(t.TempDir(), "data"), "--builtin-controllers", "admission,ipam,agent")
	c.OK(scheduler, "apply", "-f", "-")

	// A second owner of status.node is refused, naming both.
	rogue := strings.NewReplacer("name: scheduler", "name: rogue", "name: schedule\n", "name: place\n").Replace(scheduler)
	_, errs, code := c.Run(rogue, "apply", "-f", "-")
	if code == 0 || !strings.Contains(errs, "controller:rogue may not own Pod:status.node") || !strings.Contains(errs, "owned by controller:scheduler") {
		t.Errorf("second owner: exit %d: %s", code, errs)
	}
	f := filepath.Join(t.TempDir(), "rogue.yaml")
	os.WriteFile(f, []byte(rogue), 0o600)
	out, errs, code := c.Run("", "controllers", "verify", "-f", f)
	if code == 0 || !strings.Contains(out+errs, "owned by controller:scheduler") {
		t.Errorf("controllers verify: exit %d: %s%s", code, out, errs)
	}

	// A read/write cycle is refused with the cycle printed.
	x := "kind: Controller\nname: x\nspec:\n  owns: [Pod:status.x]\n  reads: [Pod:status.y]\n"
	y := "kind: Controller\nname: y\nspec:\n  owns: [Pod:status.y]\n  reads: [Pod:status.x]\n"
	c.OK(x, "apply", "-f", "-")
	_, errs, code = c.Run(y, "apply", "-f", "-")
	if code == 0 || !strings.Contains(errs, "read/write cycle: controller:x writes Pod:status.x, read by controller:y; controller:y writes Pod:status.y, read by controller:x") {
		t.Errorf("read/write cycle: exit %d: %s", code, errs)
	}
	// An unordered read-after-write is refused too.
	z := "kind: Controller\nname: z\nspec:\n  reads: [Pod:status.node]\n  steps:\n    - {name: early, kind: Pod, before: [scheduled], requiredBy: [scheduled]}\n"
	_, errs, code = c.Run(z, "apply", "-f", "-")
	if code == 0 || !strings.Contains(errs, "step early of controller:z reads Pod:status.node, which step schedule of controller:scheduler writes, but is not ordered after it") {
		t.Errorf("unordered read: exit %d: %s", code, errs)
	}

	c.OK(readFile(t, "../../examples/pod.yaml"), "apply", "-f", "-")
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: "web"}
	ctx := context.Background()
	sched := c.Client(c.Token("--controller", "scheduler"))

	// The owner may write its field; a field it does not own is 403.
	if _, err := sched.PutStatus(ctx, ref, map[string]any{"node": "n1"}, 0); err != nil {
		t.Fatalf("scheduler writing status.node: %v", err)
	}
	_, err := sched.PutStatus(ctx, ref, map[string]any{"node": "n1", "phase": "Running"}, 0)
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(ae.Message, "controller:scheduler may not write status.phase of pod/web") {
		t.Errorf("scheduler writing status.phase: %v", err)
	}
	// An operator may not write status.node: it has an owner.
	_, err = c.Client("").PutStatus(ctx, ref, map[string]any{"node": "n2"}, 0)
	if !errors.As(err, &ae) || ae.Status != 403 {
		t.Errorf("operator writing status: %v", err)
	}

	// The scheduler sees only what it reads and owns.
	got, err := sched.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status["node"] != "n1" || got.Spec["containers"] == nil {
		t.Errorf("scheduler lost its own fields: %+v", got)
	}
	if got.Labels != nil || got.Spec["restart"] != nil || got.Spec["failover"] != nil {
		t.Errorf("scheduler sees undeclared fields: labels %v, spec %v", got.Labels, got.Spec)
	}
	list, err := sched.List(ctx, "pods", "default", "")
	if err != nil || len(list.Items) != 1 || list.Items[0].Labels != nil {
		t.Errorf("scheduler's list: %+v, %v", list, err)
	}
	if full, _ := c.Client("").Get(ctx, ref); full.Labels["app"] != "web" {
		t.Errorf("operator lost labels: %+v", full)
	}
	// The scheduler's step is waiting for it to take the work.
	w := c.OK("", "why", "pod/web")
	if !strings.Contains(w, "schedule") || !strings.Contains(w, "controller:scheduler to take it") {
		t.Errorf("why pod/web while the scheduler is not taking work:\n%s", w)
	}
	c.Stop()
}
