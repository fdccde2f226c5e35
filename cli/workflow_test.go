package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/workflow"
)

// ---- fixtures ----

var t0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// at is t0 plus ms milliseconds; nil for ms < 0.
func at(ms int) *time.Time {
	if ms < 0 {
		return nil
	}
	t := t0.Add(time.Duration(ms) * time.Millisecond)
	return &t
}

func unit(name, ctrl, state string, start, fin int, after ...string) workflow.StepRecord {
	s := workflow.StepRecord{Name: name, Controller: ctrl, State: state, Started: at(start), Finished: at(fin), After: after}
	if start >= 0 {
		s.Attempts = 1
	}
	return s
}

func target(name, state string, fin int, after ...string) workflow.StepRecord {
	// The engine starts a target and reaches it in the same instant.
	return workflow.StepRecord{Name: name, Target: true, State: state, Started: at(fin), Finished: at(fin), After: after}
}

func logAt(ms, attempt int, msg string) workflow.LogLine {
	return workflow.LogLine{Time: *at(ms), Attempt: attempt, Msg: msg}
}

// bigRun is a failed run of 30 units from 5 controllers (scheduler, nfs,
// cni, runtime, monitor): mount-nfs timed out twice, which failed storage
// and everything after it; the optional mount-cache failed on its own;
// pull-image and pull-sidecar ran concurrently with storage and network.
func bigRun() workflow.RunRecord {
	const dep = "dependency failed: mount-nfs"
	steps := []workflow.StepRecord{
		target("admitted", workflow.Done, 5),
		unit("filter-nodes", "scheduler", workflow.Done, 5, 100, "admitted"),
		unit("score-nodes", "scheduler", workflow.Done, 100, 250, "filter-nodes"),
		unit("reserve-ports", "scheduler", workflow.Done, 5, 80, "admitted"),
		unit("bind", "scheduler", workflow.Done, 250, 300, "score-nodes", "reserve-ports"),
		target("scheduled", workflow.Done, 300, "bind", "reserve-ports"),

		unit("provision-volume", "nfs", workflow.Done, 300, 600, "scheduled"),
		unit("mount-nfs", "nfs", workflow.TimedOut, 600, 30600, "provision-volume"),
		unit("mount-cache", "nfs", workflow.Failed, 600, 2000, "provision-volume"),
		unit("snapshot-check", "nfs", workflow.Skipped, -1, 300, "scheduled"),
		target("storage", workflow.Failed, 30601, "mount-nfs", "mount-cache", "snapshot-check", "provision-volume"),

		unit("allocate-ip", "cni", workflow.Done, 300, 400, "scheduled"),
		unit("setup-veth", "cni", workflow.Done, 400, 700, "allocate-ip"),
		unit("dns-register", "cni", workflow.Done, 400, 500, "allocate-ip"),
		unit("firewall-rules", "cni", workflow.Done, 400, 650, "allocate-ip"),
		unit("bandwidth-limit", "cni", workflow.Done, 700, 750, "setup-veth"),
		unit("setup-routes", "cni", workflow.Done, 700, 800, "setup-veth"),
		target("network", workflow.Done, 800, "setup-routes", "dns-register", "firewall-rules", "bandwidth-limit"),

		unit("pull-image", "runtime", workflow.Done, 300, 2300, "scheduled"),
		unit("pull-sidecar", "runtime", workflow.Done, 300, 1800, "scheduled"),
		unit("prepare-rootfs", "runtime", workflow.Done, 2300, 2500, "pull-image"),
		unit("create-sandbox", "runtime", workflow.Failed, -1, 30602, "network", "storage", "pull-image", "pull-sidecar", "prepare-rootfs"),
		unit("create-containers", "runtime", workflow.Failed, -1, 30603, "create-sandbox"),
		unit("start-containers", "runtime", workflow.Failed, -1, 30604, "create-containers"),
		target("started", workflow.Failed, 30605, "start-containers"),

		unit("health-check", "monitor", workflow.Failed, -1, 30606, "started"),
		unit("readiness-probe", "monitor", workflow.Failed, -1, 30606, "started"),
		unit("register-endpoints", "monitor", workflow.Failed, -1, 30607, "readiness-probe"),
		unit("metrics-scrape", "monitor", workflow.Cancelled, -1, 30606, "started"),
		target("running", workflow.Failed, 30608, "health-check", "register-endpoints", "metrics-scrape"),
	}
	byName := map[string]*workflow.StepRecord{}
	for i := range steps {
		byName[steps[i].Name] = &steps[i]
	}
	for _, n := range []string{"storage", "create-sandbox", "create-containers", "start-containers", "started", "health-check", "readiness-probe", "register-endpoints", "running"} {
		byName[n].Reason = dep
	}
	m := byName["mount-nfs"]
	m.Attempts = 2
	m.Reason = "timed out after 15s"
	m.Requires = []string{"provision-volume"}
	m.Log = []workflow.LogLine{
		{Time: *at(600), Attempt: 1, Msg: "mounting nfs.example:/exports/web", Attrs: map[string]any{"server": "nfs.example", "port": 2049}},
		logAt(5600, 1, "retrying: server not responding"),
		logAt(15600, 2, "attempt 1 timed out after 15s, retrying"),
		logAt(20600, 2, "mounting nfs.example:/exports/web"),
		logAt(30500, 2, "mount.nfs: Connection timed out"),
	}
	c := byName["mount-cache"]
	c.Optional = true
	c.Reason = "cache server unreachable"
	c.Log = []workflow.LogLine{logAt(1990, 1, "dial cache.local:2049: connection refused")}
	byName["snapshot-check"].Reason = "reads unchanged since generation 2"
	byName["metrics-scrape"].Optional = true
	byName["metrics-scrape"].Reason = "run failed"
	st := byName["storage"]
	st.Requires = []string{"mount-nfs", "provision-volume"}
	st.Wants = []string{"mount-cache"}
	cs := byName["create-sandbox"]
	cs.Requires = []string{"network", "storage"}
	byName["running"].Wants = []string{"metrics-scrape"}
	byName["pull-image"].Log = []workflow.LogLine{logAt(310, 1, "pulling registry.example/web:1.4"), logAt(2290, 1, "pulled")}
	return workflow.RunRecord{
		ID: "run-3", Object: "pod/web", Kind: "Pod", Namespace: "default", Name: "web",
		Generation: 3, Phase: "up", Target: "running", State: workflow.RunFailed,
		Started: t0, Finished: at(30608), Steps: steps,
	}
}

// smallRun is a six-unit run of generation gen starting offset after t0:
// admitted → schedule → scheduled → {pull, network-setup} → start → running.
// Done, it took 1.81s; running, start has been running since 1.4s.
func smallRun(gen int64, offset time.Duration, done bool) workflow.RunRecord {
	sh := func(p *time.Time) *time.Time {
		if p == nil {
			return nil
		}
		t := p.Add(offset)
		return &t
	}
	steps := []workflow.StepRecord{
		target("admitted", workflow.Done, 0),
		unit("schedule", "scheduler", workflow.Done, 0, 400, "admitted"),
		target("scheduled", workflow.Done, 400, "schedule"),
		unit("pull", "runtime", workflow.Done, 400, 1400, "scheduled"),
		unit("network-setup", "cni", workflow.Done, 400, 900, "scheduled"),
		unit("start", "runtime", workflow.Done, 1400, 1810, "pull", "network-setup"),
		target("running", workflow.Done, 1810, "start"),
	}
	steps[5].Log = []workflow.LogLine{
		logAt(1400, 1, "creating container web"),
		logAt(1500, 1, "starting container web"),
		logAt(1600, 1, "waiting for pid 1"),
		logAt(1700, 1, "pid 1 is up"),
	}
	steps[5].Requires = []string{"pull"}
	run := workflow.RunRecord{
		ID: "run-" + strconv.FormatInt(gen, 10), Object: "pod/web", Kind: "Pod", Namespace: "default", Name: "web",
		Generation: gen, Phase: "up", Target: "running", State: workflow.RunDone, Started: t0, Finished: at(1810), Steps: steps,
	}
	if !done {
		run.State, run.Finished = workflow.RunRunning, nil
		steps[5].State, steps[5].Finished = workflow.Running, nil
		steps[6].State, steps[6].Started, steps[6].Finished, steps[6].WaitingOn = workflow.Waiting, nil, nil, []string{"start"}
	}
	run.Started = run.Started.Add(offset)
	run.Finished = sh(run.Finished)
	for i := range steps {
		s := &steps[i]
		s.Started, s.Finished = sh(s.Started), sh(s.Finished)
		for j := range s.Log {
			s.Log[j].Time = s.Log[j].Time.Add(offset)
		}
	}
	return run
}

// ---- helpers ----

// unitLine returns the line of `skiff why` output that shows unit name.
func unitLine(t *testing.T, out, name string) (int, string) {
	t.Helper()
	for i, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "      ") && f[1] == name {
			return i, l
		}
	}
	t.Fatalf("no line for unit %s in:\n%s", name, out)
	return 0, ""
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s: %q does not contain %q", what, s, sub)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---- why ----

func TestWhyFailedRun(t *testing.T) {
	var b strings.Builder
	renderWhy(&b, bigRun(), t0.Add(time.Hour))
	out := b.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if want := "pod/web generation 3 → running: failed (31s)"; lines[0] != want {
		t.Errorf("header %q, want %q", lines[0], want)
	}

	// The timed-out step: marker, controller, duration, attempts, reason,
	// and its last three log lines beneath it, newest last.
	i, l := unitLine(t, out, "mount-nfs")
	mustContain(t, "mount-nfs", l, "✗ mount-nfs", "nfs", " 30s ", "2 attempts", "timed out after 15s")
	logs := lines[i+1 : i+4]
	for _, ll := range logs {
		if !strings.HasPrefix(ll, "      ") {
			t.Errorf("log line %q is not indented under its unit", ll)
		}
	}
	mustContain(t, "last log line", logs[2], "[attempt 2] mount.nfs: Connection timed out")
	mustContain(t, "first shown log line", logs[0], "attempt 1 timed out after 15s, retrying")
	if strings.Contains(out, "server not responding") {
		t.Errorf("why shows more than the last 3 log lines:\n%s", out)
	}
	if _, next := unitLine(t, out, "provision-volume"); strings.Contains(out, next+"\n      ") {
		t.Errorf("a done unit shows log lines:\n%s", out)
	}

	_, l = unitLine(t, out, "create-sandbox")
	mustContain(t, "create-sandbox", l, "✗ create-sandbox", "runtime", "dependency failed: mount-nfs")
	_, l = unitLine(t, out, "mount-cache")
	mustContain(t, "mount-cache", l, "✗ mount-cache", "optional", "cache server unreachable", "1.4s")
	_, l = unitLine(t, out, "snapshot-check")
	mustContain(t, "snapshot-check", l, "– snapshot-check", "reads unchanged since generation 2")
	_, l = unitLine(t, out, "metrics-scrape")
	mustContain(t, "metrics-scrape", l, "– metrics-scrape", "optional")
	_, l = unitLine(t, out, "storage")
	mustContain(t, "storage", l, "✗ storage", "target")
	_, l = unitLine(t, out, "admitted")
	mustContain(t, "admitted", l, "✓ admitted", "target")

	// Topological order, ties by name.
	order := []string{"admitted", "filter-nodes", "reserve-ports", "score-nodes", "bind", "scheduled",
		"allocate-ip", "provision-volume", "mount-nfs", "storage", "create-sandbox", "started", "running"}
	prev := -1
	for _, n := range order {
		i, _ := unitLine(t, out, n)
		if i <= prev {
			t.Errorf("%s comes before the unit listed before it in:\n%s", n, out)
		}
		prev = i
	}
	// Columns line up.
	_, a := unitLine(t, out, "bind")
	_, c := unitLine(t, out, "register-endpoints")
	if ia, ic := strings.Index(a, "scheduler"), strings.Index(c, "monitor"); len([]rune(a[:ia])) != len([]rune(c[:ic])) {
		t.Errorf("controller columns do not line up:\n%s\n%s", a, c)
	}

	// The summary names the root cause only: not the units that failed
	// because of it, not the optional failure.
	if want := "blocked by mount-nfs (controller:nfs): timed out after 15s"; lines[len(lines)-1] != want {
		t.Errorf("summary %q, want %q", lines[len(lines)-1], want)
	}
	if len(lines) != 1+30+3+1+1 { // header, units, mount-nfs logs, mount-cache log, summary
		t.Errorf("%d lines, want %d:\n%s", len(lines), 36, out)
	}
}

func TestWhyRunningRun(t *testing.T) {
	run := smallRun(1, 0, false)
	now := t0.Add(1400*time.Millisecond + 41*time.Second)
	var b strings.Builder
	renderWhy(&b, run, now)
	out := b.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if want := "pod/web generation 1 → running: running for 42s"; lines[0] != want {
		t.Errorf("header %q, want %q", lines[0], want)
	}
	i, l := unitLine(t, out, "start")
	mustContain(t, "start", l, "● start", "runtime", "running for 41s")
	if got := lines[i+1 : i+4]; !strings.Contains(got[0], "starting container web") || !strings.Contains(got[2], "pid 1 is up") {
		t.Errorf("log lines under start: %q", got)
	}
	if strings.Contains(lines[i+1], "[attempt") {
		t.Errorf("attempt shown for a single-attempt unit: %q", lines[i+1])
	}
	_, l = unitLine(t, out, "running")
	mustContain(t, "running", l, "○ running", "target", "waiting on: start")
	if want := "blocked by start (controller:runtime): running for 41s"; lines[len(lines)-1] != want {
		t.Errorf("summary %q, want %q", lines[len(lines)-1], want)
	}

	// Dispatched again after a failed attempt, not yet taken by a controller.
	retry := smallRun(1, 0, false)
	retry.Steps[5].Attempts = 2
	retry.Steps[5].Reason = "attempt 1 failed: exit status 1; retrying in 2s"
	retry.Steps[5].WaitingOn = []string{"controller:runtime to take it"}
	b.Reset()
	renderWhy(&b, retry, now)
	out = b.String()
	_, l = unitLine(t, out, "start")
	mustContain(t, "start", l, "● start", "2 attempts; attempt 1 failed: exit status 1; retrying in 2s; waiting on: controller:runtime to take it")
	mustContain(t, "retry summary", out, "\nblocked by start (controller:runtime): running for 41s, waiting on: controller:runtime to take it\n")

	// Done, the same run reads as reached.
	b.Reset()
	renderWhy(&b, smallRun(1, 0, true), now)
	out = b.String()
	mustContain(t, "done run", out, "pod/web generation 1 → running: done (1.8s)", "✓ start", "410ms", "reached running in 1.8s")
	if strings.Contains(out, "pid 1 is up") {
		t.Errorf("done run shows log lines:\n%s", out)
	}
}

func TestWhyWaitingRun(t *testing.T) {
	run := smallRun(2, 0, false)
	// Nothing runs: start waits for a controller that does not take it.
	s := &run.Steps[5]
	s.State, s.Started, s.Attempts = workflow.Waiting, nil, 0
	s.WaitingOn = []string{"scheduled", "controller:runtime to take it"}
	s.Log = []workflow.LogLine{logAt(1450, 0, "no runtime agent on node n1")}
	var b strings.Builder
	renderWhy(&b, run, t0.Add(10*time.Second))
	out := b.String()
	i, l := unitLine(t, out, "start")
	mustContain(t, "start", l, "○ start", "waiting on: scheduled, controller:runtime to take it")
	mustContain(t, "log under a blocking waiting unit", strings.Split(out, "\n")[i+1], "no runtime agent on node n1")
	mustContain(t, "summary", out, "blocked by start (controller:runtime): waiting on: scheduled, controller:runtime to take it\n")
	if _, l := unitLine(t, out, "running"); strings.Contains(out, l+"\n      ") {
		t.Errorf("running target shows log lines though it has none")
	}
}

func TestWhyJSONKeys(t *testing.T) {
	var b bytes.Buffer
	if err := writeJSONOut(&b, whyJSONOf(bigRun())); err != nil {
		t.Fatal(err)
	}
	checkWhyJSON(t, b.Bytes())
}

func checkWhyJSON(t *testing.T, data []byte) {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("why -o json: %v\n%s", err, data)
	}
	if got, want := sortedKeys(top), []string{"generation", "object", "state", "steps", "target"}; !reflect.DeepEqual(got, want) {
		t.Errorf("top-level keys %v, want %v", got, want)
	}
	var hdr struct {
		Object     string
		Generation int64
		Target     string
		State      string
	}
	json.Unmarshal(data, &hdr)
	if hdr.Object != "pod/web" || hdr.Generation != 3 || hdr.Target != "running" || hdr.State != "failed" {
		t.Errorf("header %+v", hdr)
	}
	var steps []map[string]json.RawMessage
	if err := json.Unmarshal(top["steps"], &steps); err != nil {
		t.Fatal(err)
	}
	if len(steps) != 30 {
		t.Fatalf("%d steps, want 30", len(steps))
	}
	want := []string{"attempts", "controller", "finished", "log", "name", "started", "state", "waitingOn"}
	for _, s := range steps {
		if got := sortedKeys(s); !reflect.DeepEqual(got, want) {
			t.Errorf("step keys %v, want %v", got, want)
		}
		var name string
		json.Unmarshal(s["name"], &name)
		switch name {
		case "mount-nfs":
			var log []workflow.LogLine
			json.Unmarshal(s["log"], &log)
			if len(log) != 5 || log[4].Msg != "mount.nfs: Connection timed out" {
				t.Errorf("mount-nfs log %+v", log)
			}
			if string(s["state"]) != `"timed out"` || string(s["attempts"]) != "2" || string(s["controller"]) != `"nfs"` {
				t.Errorf("mount-nfs %s %s %s", s["state"], s["attempts"], s["controller"])
			}
		case "create-sandbox": // failed because of a dependency: never started
			if string(s["started"]) != "null" || string(s["finished"]) == "null" {
				t.Errorf("create-sandbox started %s finished %s, want null and a time", s["started"], s["finished"])
			}
		}
	}
	var first string
	json.Unmarshal(steps[0]["name"], &first)
	if first != "admitted" {
		t.Errorf("first step %s, want admitted (steps in display order)", first)
	}
}

// ---- graph ----

func chainNames(run workflow.RunRecord) []string {
	var n []string
	for _, i := range criticalChain(run) {
		n = append(n, run.Steps[i].Name)
	}
	return n
}

func TestCriticalChain(t *testing.T) {
	// At storage, mount-nfs (finished last) beats mount-cache (first by
	// name); at bind, score-nodes beats reserve-ports.
	want := []string{"running", "register-endpoints", "readiness-probe", "started", "start-containers",
		"create-containers", "create-sandbox", "storage", "mount-nfs", "provision-volume", "scheduled",
		"bind", "score-nodes", "filter-nodes", "admitted"}
	if got := chainNames(bigRun()); !reflect.DeepEqual(got, want) {
		t.Errorf("critical chain\n got %v\nwant %v", got, want)
	}

	var b strings.Builder
	renderCriticalChain(&b, bigRun(), t0.Add(time.Hour))
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	chain := lines[len(lines)-len(want):]
	if chain[0] != "running @30.608s [failed]" {
		t.Errorf("goal line %q", chain[0])
	}
	for d, l := range chain[1:] {
		prefix := strings.Repeat("  ", d) + "└─" + want[d+1] + " "
		if !strings.HasPrefix(l, prefix) {
			t.Errorf("line %q does not start with %q", l, prefix)
		}
	}
	mustContain(t, "mount-nfs", chain[8], "mount-nfs @30.600s +30.000s [timed out]")
	mustContain(t, "score-nodes", chain[12], "score-nodes @0.250s +0.150s")
	if last := strings.TrimSpace(chain[len(chain)-1]); last != "└─admitted @0.005s" {
		t.Errorf("chain ends with %q, want the root target admitted", last)
	}

	// A done run: pull finished after network-setup, so it is on the chain.
	b.Reset()
	renderCriticalChain(&b, smallRun(1, 0, true), t0)
	wantOut := `The time when a unit finished is printed after the "@" character.
The time a unit ran is printed after the "+" character.

running @1.810s
└─start @1.810s +0.410s
  └─pull @1.400s +1.000s
    └─scheduled @0.400s
      └─schedule @0.400s +0.400s
        └─admitted @0.000s
`
	if got := b.String(); !strings.HasSuffix(got, wantOut) {
		t.Errorf("critical chain of the small run:\n%s\nwant it to end with:\n%s", got, wantOut)
	}

	// Units that never finished are marked.
	b.Reset()
	renderCriticalChain(&b, smallRun(1, 0, false), t0.Add(1400*time.Millisecond+41*time.Second))
	mustContain(t, "unfinished chain", b.String(), "running [waiting, not finished]\n",
		"└─start [running since @1.400s, for 41.000s, not finished]\n", "  └─pull @1.400s +1.000s\n")
}

func TestDot(t *testing.T) {
	var b strings.Builder
	if err := renderDot(&b, bigRun()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, `digraph "pod/web generation 3" {`) || !strings.HasSuffix(out, "}\n") {
		t.Errorf("not a digraph:\n%s", out)
	}
	mustContain(t, "dot", out,
		`  "mount-nfs" -> "provision-volume";`,
		`  "bind" -> "score-nodes";`,
		`  "storage" -> "mount-nfs";`,
		`  "storage" -> "mount-nfs" [style=bold, label="requires"];`,
		`  "storage" -> "mount-cache" [style=dashed, label="wants"];`,
		`  "create-sandbox" -> "network" [style=bold, label="requires"];`,
		`  "running" -> "metrics-scrape" [style=dashed, label="wants"];`,
		`  "admitted" [shape=ellipse, label="admitted", tooltip="done"];`,
		`  "mount-nfs" [shape=box, label="mount-nfs\nnfs", style="rounded", color=red, fontcolor=red, tooltip="timed out: timed out after 15s"];`,
		`  "mount-cache" [shape=box, label="mount-cache\nnfs", style="rounded,dashed", color=red, fontcolor=red,`,
	)
	// One edge line per after, requires and wants edge.
	want := 0
	for _, s := range bigRun().Steps {
		want += len(s.After) + len(s.Requires) + len(s.Wants)
	}
	if got := strings.Count(out, " -> "); got != want {
		t.Errorf("%d edges, want %d", got, want)
	}
	if got := strings.Count(out, "shape="); got != 30 {
		t.Errorf("%d nodes, want 30", got)
	}

	// Deterministic, whatever order the server lists units in.
	run := bigRun()
	rand.New(rand.NewSource(1)).Shuffle(len(run.Steps), func(i, j int) { run.Steps[i], run.Steps[j] = run.Steps[j], run.Steps[i] })
	var b2 strings.Builder
	renderDot(&b2, run)
	if b2.String() != out {
		t.Errorf("dot output depends on unit order")
	}
}

type svgRect struct {
	Class, Unit string
	X, Y, W, H  float64
}

type svgText struct {
	Class string
	X, Y  float64
	Text  string
}

// parseSVG checks that data is well-formed XML and returns its rects and texts.
func parseSVG(t *testing.T, data []byte) (root xml.StartElement, rects []svgRect, texts []svgText) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	var cur *svgText
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			attr := map[string]string{}
			for _, a := range tok.Attr {
				attr[a.Name.Local] = a.Value
			}
			f := func(k string) float64 { v, _ := strconv.ParseFloat(attr[k], 64); return v }
			switch tok.Name.Local {
			case "svg":
				root = tok.Copy()
			case "rect":
				rects = append(rects, svgRect{attr["class"], attr["data-unit"], f("x"), f("y"), f("width"), f("height")})
			case "text":
				texts = append(texts, svgText{Class: attr["class"], X: f("x"), Y: f("y")})
				cur = &texts[len(texts)-1]
			}
		case xml.CharData:
			if cur != nil {
				cur.Text += string(tok)
			}
		case xml.EndElement:
			if tok.Name.Local == "text" {
				cur = nil
			}
		}
	}
	if root.Name.Local != "svg" || root.Name.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("root element %v, want svg in the SVG namespace", root.Name)
	}
	return root, rects, texts
}

func TestSVG(t *testing.T) {
	run := bigRun()
	var b bytes.Buffer
	if err := renderSVG(&b, run, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	root, rects, texts := parseSVG(t, b.Bytes())

	var bars []svgRect
	for _, r := range rects {
		if strings.HasPrefix(r.Class, "bar ") {
			bars = append(bars, r)
		}
	}
	var labels []svgText
	for _, tx := range texts {
		if tx.Class == "label" {
			labels = append(labels, tx)
		}
	}
	if len(bars) != 30 || len(labels) != 30 {
		t.Fatalf("%d bars and %d labels, want one of each per unit (30)", len(bars), len(labels))
	}
	seen := map[string]bool{}
	for _, r := range bars {
		seen[r.Unit] = true
	}
	for _, s := range run.Steps {
		if !seen[s.Name] {
			t.Errorf("no bar for %s", s.Name)
		}
	}
	if bars[0].Unit != "admitted" {
		t.Errorf("first row %s, want admitted", bars[0].Unit)
	}
	for i := 1; i < len(bars); i++ {
		if bars[i].X < bars[i-1].X {
			t.Errorf("rows not sorted by start: %s (x=%v) after %s (x=%v)", bars[i].Unit, bars[i].X, bars[i-1].Unit, bars[i-1].X)
		}
		if labels[i].Y-labels[i-1].Y < 16 {
			t.Errorf("row text %q at y=%v is too close to %q at y=%v", labels[i].Text, labels[i].Y, labels[i-1].Text, labels[i-1].Y)
		}
		// Text (baseline, ~3px descent, ~9px ascent at 11px) stays clear of
		// the bars of the rows above and below.
		if labels[i-1].Y+3 > bars[i].Y || labels[i].Y-9 < bars[i-1].Y+bars[i-1].H {
			t.Errorf("row text %q overlaps a neighbouring bar", labels[i].Text)
		}
	}
	width, _ := strconv.ParseFloat(attrOf(root, "width"), 64)
	for i, r := range bars {
		if r.X < 0 || r.X+r.W > width {
			t.Errorf("bar %s (%v..%v) outside the picture (width %v)", r.Unit, r.X, r.X+r.W, width)
		}
		if !strings.HasPrefix(labels[i].Text, r.Unit+" (") {
			t.Errorf("row %d: label %q is not about %s", i, labels[i].Text, r.Unit)
		}
		if est := float64(len([]rune(labels[i].Text))) * svgCharW; labels[i].X+est > width+1 && labels[i].X-est < -1 {
			t.Errorf("label %q runs out of the picture", labels[i].Text)
		}
	}
	var mount svgRect
	for i, r := range bars {
		if r.Unit == "mount-nfs" {
			mount = r
			mustContain(t, "mount-nfs label", labels[i].Text, "mount-nfs (nfs) 30s [timed out]")
		}
	}
	if mount.Class != "bar timed-out" || mount.W < 0.9*width*0.5 {
		t.Errorf("mount-nfs bar %+v: want a long timed-out bar (picture width %v)", mount, width)
	}
	var ticks int
	for _, tx := range texts {
		if strings.HasSuffix(tx.Text, "s") && tx.Class == "" && tx.Y < labels[0].Y {
			ticks++
		}
	}
	if ticks < 5 {
		t.Errorf("%d time axis labels, want several", ticks)
	}

	// Names are escaped; an unfinished run's bar reaches now.
	small := smallRun(1, 0, false)
	small.Steps[4].Controller = `c<n>&"i"`
	now := t0.Add(5 * time.Second)
	b.Reset()
	if err := renderSVG(&b, small, now); err != nil {
		t.Fatal(err)
	}
	_, rects, texts = parseSVG(t, b.Bytes())
	found := false
	for _, tx := range texts {
		if strings.HasPrefix(tx.Text, `network-setup (c<n>&"i")`) {
			found = true
		}
	}
	if !found {
		t.Errorf("escaped controller name not found in SVG text")
	}
	for _, r := range rects {
		if r.Unit == "start" && r.Class != "bar running" {
			t.Errorf("start bar class %q", r.Class)
		}
	}
}

func attrOf(e xml.StartElement, name string) string {
	for _, a := range e.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// ---- journal ----

func TestJournal(t *testing.T) {
	older := smallRun(2, -time.Hour, true)
	runs := []workflow.RunRecord{bigRun(), older} // newest first, as the server lists them
	evs := journalEvents(runs)
	for i := 1; i < len(evs); i++ {
		if evs[i].Time.Before(evs[i-1].Time) {
			t.Fatalf("event %d (%s %s) is before event %d (%s %s)", i, evs[i].Time, evs[i].Msg, i-1, evs[i-1].Time, evs[i-1].Msg)
		}
	}
	if evs[0].Event != "run started" || evs[0].Generation != 2 || evs[len(evs)-1].Event != "run failed" || evs[len(evs)-1].Generation != 3 {
		t.Errorf("journal runs from %+v to %+v", evs[0], evs[len(evs)-1])
	}
	logs := 0
	for _, r := range runs {
		for _, s := range r.Steps {
			logs += len(s.Log)
		}
	}
	find := func(step, event string) journalEvent {
		t.Helper()
		for _, e := range evs {
			if e.Generation == 3 && e.Step == step && e.Event == event {
				return e
			}
		}
		t.Fatalf("no %s event for %s", event, step)
		return journalEvent{}
	}
	n := 0
	for _, e := range evs {
		if e.Event == "log" {
			n++
		}
	}
	if n != logs {
		t.Errorf("%d log events, want every log line (%d)", n, logs)
	}
	if e := find("mount-nfs", workflow.TimedOut); e.Msg != "timed out after 15s (2 attempts)" || e.Controller != "nfs" || !e.Time.Equal(*at(30600)) {
		t.Errorf("mount-nfs timed out: %+v", e)
	}
	if e := find("create-sandbox", workflow.Failed); e.Msg != "failed: dependency failed: mount-nfs" {
		t.Errorf("create-sandbox failed: %+v", e)
	}
	if e := find("snapshot-check", workflow.Skipped); e.Msg != "skipped: reads unchanged since generation 2" {
		t.Errorf("snapshot-check skipped: %+v", e)
	}
	if e := find("mount-nfs", "started"); e.Msg != "started" {
		t.Errorf("mount-nfs started: %+v", e)
	}
	if e := find("pull-image", workflow.Done); e.Msg != "done in 2.0s" {
		t.Errorf("pull-image done: %+v", e)
	}
	// Same instant: a unit starts before it logs.
	var order []string
	for _, e := range evs {
		if e.Generation == 3 && e.Step == "mount-nfs" {
			order = append(order, e.Event)
		}
	}
	if order[0] != "started" || order[len(order)-1] != workflow.TimedOut || len(order) != 7 {
		t.Errorf("mount-nfs events %v", order)
	}

	var b strings.Builder
	renderJournal(&b, evs)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != len(evs)+1 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("%d lines for %d events:\n%s", len(lines), len(evs), b.String())
	}
	for i, e := range evs {
		l := lines[i+1]
		if !strings.HasPrefix(l, e.Time.Local().Format("15:04:05.000")+"  ") || !strings.HasSuffix(l, e.Msg) {
			t.Errorf("line %q does not show event %+v", l, e)
		}
	}
	var last string
	for _, l := range lines {
		if strings.Contains(l, "mount.nfs: Connection timed out") {
			last = l
		}
	}
	if f := strings.Fields(last); len(f) < 4 || f[1] != "3" || f[2] != "mount-nfs" || f[3] != "nfs" {
		t.Errorf("log line %q: want time, generation 3, mount-nfs, nfs", last)
	}

	var jb bytes.Buffer
	writeJSONOut(&jb, evs)
	var arr []map[string]json.RawMessage
	if err := json.Unmarshal(jb.Bytes(), &arr); err != nil {
		t.Fatal(err)
	}
	want := []string{"controller", "event", "generation", "msg", "run", "step", "time"}
	for _, m := range arr {
		if got := sortedKeys(m); !reflect.DeepEqual(got, want) {
			t.Fatalf("journal json keys %v, want %v", got, want)
		}
	}
}

// ---- through the command line, against a fake API server ----

// fakeServer answers the workflow endpoints the commands use and returns a
// client config file that points at it.
func fakeServer(t *testing.T, runs []workflow.RunRecord) string {
	t.Helper()
	ctrls := []client.ControllerInfo{
		{Name: "scheduler", Builtin: true, Spec: api.ControllerSpec{
			Owns:  []api.FieldRef{"Pod:status.node"},
			Reads: []api.FieldRef{"Pod:spec.resources", "Node:status.capacity"},
			Steps: []api.Step{{Name: "filter-nodes", Kind: "Pod"}, {Name: "bind", Kind: "Pod"}},
		}},
		{Name: "nfs", Spec: api.ControllerSpec{Owns: []api.FieldRef{"Pod:status.volumes"}, Steps: []api.Step{{Name: "mount-nfs", Kind: "Pod"}}}},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/objects/pods/default/web/runs", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(runs)
	})
	mux.HandleFunc("GET /v1/objects/pods/default/new/runs", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("[]"))
	})
	mux.HandleFunc("GET /v1/controllers", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(ctrls)
	})
	mux.HandleFunc("POST /v1/controllers/verify", func(w http.ResponseWriter, r *http.Request) {
		var o api.Object
		if err := json.NewDecoder(r.Body).Decode(&o); err != nil || o.Kind != "Controller" {
			w.WriteHeader(400)
			w.Write([]byte(`{"error":"not a controller","code":"invalid"}`))
			return
		}
		if o.Name == "cni" {
			w.Write([]byte(`{"errors":["step setup-veth is ordered after itself","owns Pod:status.ip, which controller ipam owns"]}`))
			return
		}
		w.Write([]byte(`{}`))
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	cfg := client.Config{
		Servers: []string{srv.URL},
		Token:   "test-token",
		CA:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})),
	}
	path := filepath.Join(t.TempDir(), "config")
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCLI(t *testing.T, cfg, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), append([]string{"--config", cfg}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestWorkflowCommands(t *testing.T) {
	cfg := fakeServer(t, []workflow.RunRecord{bigRun(), smallRun(2, -time.Hour, true)})

	out, errs, code := runCLI(t, cfg, "", "why", "pod/web")
	if code != 0 {
		t.Fatalf("why: exit %d: %s", code, errs)
	}
	mustContain(t, "why", out, "pod/web generation 3 → running: failed (31s)\n", "blocked by mount-nfs (controller:nfs): timed out after 15s\n")

	out, errs, code = runCLI(t, cfg, "", "why", "po/web", "-o", "json")
	if code != 0 {
		t.Fatalf("why -o json: exit %d: %s", code, errs)
	}
	checkWhyJSON(t, []byte(out))

	out, _, code = runCLI(t, cfg, "", "why", "pod/new")
	if code != 0 || out != "pod/new: no runs yet\n" {
		t.Errorf("why pod/new: exit %d, %q", code, out)
	}

	out, errs, code = runCLI(t, cfg, "", "graph", "pod/web")
	if code != 0 || !strings.Contains(out, "\nrunning @30.608s [failed]\n└─register-endpoints") {
		t.Errorf("graph: exit %d %s\n%s", code, errs, out)
	}
	out, _, code = runCLI(t, cfg, "", "graph", "pod/web", "--dot")
	if code != 0 || !strings.HasPrefix(out, "digraph ") {
		t.Errorf("graph --dot: exit %d\n%s", code, out)
	}
	svg := filepath.Join(t.TempDir(), "web.svg")
	out, errs, code = runCLI(t, cfg, "", "graph", "pod/web", "--svg", svg)
	if code != 0 || out != "wrote "+svg+" (30 units, 31s)\n" {
		t.Errorf("graph --svg: exit %d %q %s", code, out, errs)
	}
	data, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	parseSVG(t, data)
	if _, errs, code = runCLI(t, cfg, "", "graph", "pod/web", "--dot", "--svg", svg); code == 0 || !strings.Contains(errs, "one of") {
		t.Errorf("graph --dot --svg: exit %d %s", code, errs)
	}

	out, errs, code = runCLI(t, cfg, "", "journal", "pod/web")
	if code != 0 {
		t.Fatalf("journal: exit %d: %s", code, errs)
	}
	mustContain(t, "journal", out, "run started toward running", "mount.nfs: Connection timed out", "timed out after 15s")
	out, _, _ = runCLI(t, cfg, "", "journal", "pod/web", "-o", "json")
	var evs []journalEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil || len(evs) < 50 {
		t.Errorf("journal -o json: %v, %d events", err, len(evs))
	}

	out, errs, code = runCLI(t, cfg, "", "controllers")
	if code != 0 {
		t.Fatalf("controllers: exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NAME BUILTIN STEPS OWNS READS" {
		t.Fatalf("controllers:\n%s", out)
	}
	if got := strings.Fields(lines[1]); !reflect.DeepEqual(got, []string{"nfs", "no", "mount-nfs", "Pod:status.volumes", "-"}) {
		t.Errorf("nfs row %q", got)
	}
	if got := strings.Fields(lines[2]); !reflect.DeepEqual(got, []string{"scheduler", "yes", "filter-nodes,bind", "Pod:status.node", "Pod:spec.resources,Node:status.capacity"}) {
		t.Errorf("scheduler row %q", got)
	}
	out, _, _ = runCLI(t, cfg, "", "controllers", "-o", "json")
	var infos []client.ControllerInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 2 || !infos[1].Builtin {
		t.Errorf("controllers -o json: %v %+v", err, infos)
	}

	out, errs, code = runCLI(t, cfg, "", "controllers", "verify", "-f", filepath.Join("testdata", "controllers.yaml"))
	want := "controller/nfs: ok\n" +
		"controller/cni: step setup-veth is ordered after itself\n" +
		"controller/cni: owns Pod:status.ip, which controller ipam owns\n"
	if code == 0 || out != want {
		t.Errorf("verify: exit %d\n got %q\nwant %q", code, out, want)
	}
	mustContain(t, "verify stderr", errs, "grant/ops: skipped, not a Controller", "1 of 2 controllers did not verify")
	manifest, _ := os.ReadFile(filepath.Join("testdata", "controllers.yaml"))
	first := strings.SplitN(string(manifest), "\n---\n", 2)[0]
	out, errs, code = runCLI(t, cfg, first, "controllers", "verify", "-f", "-")
	if code != 0 || out != "controller/nfs: ok\n" {
		t.Errorf("verify -f -: exit %d %q %s", code, out, errs)
	}
}

func TestCyclesAndEmptyRuns(t *testing.T) {
	// A malformed record with an ordering cycle still renders, in full.
	run := workflow.RunRecord{Object: "pod/web", Target: "b", State: workflow.RunRunning, Started: t0, Steps: []workflow.StepRecord{
		unit("b", "x", workflow.Waiting, -1, -1, "a"),
		unit("a", "x", workflow.Waiting, -1, -1, "b"),
		unit("c", "x", workflow.Done, 0, 10),
	}}
	if got := len(unitOrder(run.Steps)); got != 3 {
		t.Errorf("unitOrder kept %d of 3 units", got)
	}
	if got := chainNames(run); !reflect.DeepEqual(got, []string{"b", "a"}) {
		t.Errorf("chain %v", got)
	}
	var b bytes.Buffer
	renderWhy(&b, run, t0)
	renderCriticalChain(&b, run, t0)
	renderDot(&b, run)
	renderSVG(&b, workflow.RunRecord{Object: "pod/web", State: workflow.RunRunning, Started: t0}, t0)
	renderWhy(&b, workflow.RunRecord{Object: "pod/web", State: workflow.RunFailed, Started: t0}, t0)
	renderJournal(&b, journalEvents(nil))
}
