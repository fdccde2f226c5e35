package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

func whyCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "why KIND/NAME",
		Short: "show an object's newest run step by step, and what blocks it",
		Long: `Show the newest run of an object: every step and target the run pulled in,
in order, with its state, controller, duration, attempts and reason, the last
log lines of the units that hold the run up, and a summary of what blocks it.

Markers: ✓ done, ✗ failed or timed out, ● running, ○ waiting, – skipped or
cancelled. -o json prints the run's object, generation, target, state and
steps (name, controller, state, started, finished, attempts, waitingOn, log).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %s: use table or json", output)
			}
			ref, runs, err := fetchRuns(cmd, e, args[0])
			if err != nil {
				return err
			}
			if len(runs) == 0 {
				if output == "json" {
					fmt.Fprintln(e.stdout, "null")
				} else {
					fmt.Fprintf(e.stdout, "%s: no runs yet\n", ref)
				}
				return nil
			}
			if output == "json" {
				return writeJSONOut(e.stdout, whyJSONOf(runs[0]))
			}
			renderWhy(e.stdout, runs[0], time.Now())
			if c, err := e.client(); err == nil {
				if o, err := c.Get(cmd.Context(), ref); err == nil {
					warnUngranted(e.stdout, o.Status)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// fetchRuns resolves KIND/NAME and returns the object's runs, newest first.
func fetchRuns(cmd *cobra.Command, e *env, arg string) (api.Ref, []workflow.RunRecord, error) {
	ref, err := oneRef(arg, e.namespace)
	if err != nil {
		return api.Ref{}, nil, err
	}
	c, err := e.client()
	if err != nil {
		return ref, nil, err
	}
	runs, err := c.Runs(cmd.Context(), ref)
	if err != nil {
		return ref, nil, fmt.Errorf("%s: %w", ref, err)
	}
	return ref, runs, nil
}

// whyJSON is `skiff why -o json`: the newest run, steps in display order.
type whyJSON struct {
	Object     string        `json:"object"`
	Generation int64         `json:"generation"`
	Target     string        `json:"target"`
	State      string        `json:"state"`
	Cause      string        `json:"cause,omitempty"`
	Steps      []whyJSONStep `json:"steps"`
}

type whyJSONStep struct {
	Name       string             `json:"name"`
	Controller string             `json:"controller"`
	State      string             `json:"state"`
	Started    *time.Time         `json:"started"`
	Finished   *time.Time         `json:"finished"`
	Attempts   int                `json:"attempts"`
	WaitingOn  []string           `json:"waitingOn"`
	Log        []workflow.LogLine `json:"log"`
}

func whyJSONOf(run workflow.RunRecord) whyJSON {
	out := whyJSON{
		Object:     runObject(run),
		Generation: run.Generation,
		Target:     run.Target,
		State:      run.State,
		Cause:      run.Cause,
		Steps:      []whyJSONStep{},
	}
	for _, i := range unitOrder(run.Steps) {
		s := run.Steps[i]
		js := whyJSONStep{
			Name:       s.Name,
			Controller: s.Controller,
			State:      s.State,
			Started:    s.Started,
			Finished:   s.Finished,
			Attempts:   s.Attempts,
			WaitingOn:  s.WaitingOn,
			Log:        s.Log,
		}
		if js.WaitingOn == nil {
			js.WaitingOn = []string{}
		}
		if js.Log == nil {
			js.Log = []workflow.LogLine{}
		}
		out.Steps = append(out.Steps, js)
	}
	return out
}

// whyLogLines is how many log lines `skiff why` shows under a blocking unit.
const whyLogLines = 3

// renderWhy writes the human view of one run: a header, one line per unit
// in order, the last log lines of the units that hold the run up, and a
// one-line summary.
func renderWhy(w io.Writer, run workflow.RunRecord, now time.Time) {
	fmt.Fprintln(w, runHeader(run, now))
	order := unitOrder(run.Steps)
	anyRunning := false
	for _, s := range run.Steps {
		if s.State == workflow.Running {
			anyRunning = true
		}
	}
	nameW, ctrlW, durW := 0, 0, 0
	durs := make([]string, len(run.Steps))
	for i, s := range run.Steps {
		durs[i] = unitDurText(s, now)
		nameW = max(nameW, textWidth(s.Name))
		ctrlW = max(ctrlW, textWidth(unitController(s)))
		durW = max(durW, textWidth(durs[i]))
	}
	for _, i := range order {
		s := run.Steps[i]
		var extras []string
		if s.Attempts > 1 {
			extras = append(extras, fmt.Sprintf("%d attempts", s.Attempts))
		}
		if s.Optional {
			extras = append(extras, "optional")
		}
		if s.Reason != "" {
			extras = append(extras, oneLineText(s.Reason))
		}
		if len(s.WaitingOn) > 0 { // a dispatched step waits for a controller to take it
			extras = append(extras, "waiting on: "+strings.Join(s.WaitingOn, ", "))
		}
		line := "  " + stateMarker(s.State) + " " + pad(s.Name, nameW) + "  " + pad(unitController(s), ctrlW) +
			"  " + pad(durs[i], durW) + "  " + strings.Join(extras, "; ")
		fmt.Fprintln(w, strings.TrimRight(line, " "))
		if blocking(s, anyRunning) {
			logs := s.Log
			if len(logs) > whyLogLines {
				logs = logs[len(logs)-whyLogLines:]
			}
			for _, l := range logs {
				fmt.Fprintln(w, "      "+logLineText(l, s.Attempts > 1))
			}
		}
	}
	fmt.Fprintln(w, whySummary(run, now))
}

// blocking reports whether a unit holds its run up, so that `skiff why`
// shows its last log lines.
func blocking(s workflow.StepRecord, anyRunning bool) bool {
	switch s.State {
	case workflow.Running, workflow.Failed, workflow.TimedOut:
		return true
	case workflow.Waiting:
		return len(s.WaitingOn) > 0 && !anyRunning
	}
	return false
}

// runHeader is "pod/web generation 3 → running: failed (2.3s)".
func runHeader(run workflow.RunRecord, now time.Time) string {
	goal := run.Target
	if run.Phase == "down" {
		goal += " (down)"
	}
	h := fmt.Sprintf("%s generation %d → %s: %s", runObject(run), run.Generation, goal, runStateText(run, now))
	if run.Reason != "" {
		h += " — " + oneLineText(run.Reason)
	}
	if run.Cause != "" {
		h += "\n  because " + oneLineText(run.Cause)
	}
	return h
}

func runStateText(run workflow.RunRecord, now time.Time) string {
	if run.State == workflow.RunRunning || run.Finished == nil {
		if run.Started.IsZero() {
			return run.State
		}
		if run.State == workflow.RunRunning {
			return "running for " + fmtDur(now.Sub(run.Started))
		}
		return run.State
	}
	return fmt.Sprintf("%s (%s)", run.State, fmtDur(run.Finished.Sub(run.Started)))
}

// whySummary names what blocks a run that is not done.
func whySummary(run workflow.RunRecord, now time.Time) string {
	switch run.State {
	case workflow.RunDone:
		if run.Finished != nil && !run.Started.IsZero() {
			return fmt.Sprintf("reached %s in %s", run.Target, fmtDur(run.Finished.Sub(run.Started)))
		}
		return "reached " + run.Target
	case workflow.RunSuperseded:
		return "superseded by a run for a newer generation"
	}
	bs := runBlockers(run)
	if len(bs) == 0 {
		if run.State == workflow.RunFailed {
			if run.Reason != "" {
				return "failed: " + oneLineText(run.Reason)
			}
			return "failed: " + run.Target + " not reached"
		}
		return "not done: no unit is running or waiting on anything"
	}
	parts := make([]string, len(bs))
	for i, s := range bs {
		who := "target"
		if !s.Target {
			who = "controller:" + orDash(s.Controller)
		}
		parts[i] = fmt.Sprintf("%s (%s): %s", s.Name, who, blockText(s, now))
	}
	return "blocked by " + strings.Join(parts, "; ")
}

// runBlockers lists the units that hold a run up: required units that
// failed on their own (not because a dependency failed), running units, and,
// while nothing runs, waiting units that say what they wait on.
func runBlockers(run workflow.RunRecord) []workflow.StepRecord {
	var failed, depFailed, running, waiting []workflow.StepRecord
	for _, i := range unitOrder(run.Steps) {
		s := run.Steps[i]
		switch s.State {
		case workflow.Failed, workflow.TimedOut:
			if s.Optional {
				continue
			}
			if strings.HasPrefix(s.Reason, "dependency failed") {
				depFailed = append(depFailed, s)
			} else {
				failed = append(failed, s)
			}
		case workflow.Running:
			running = append(running, s)
		case workflow.Waiting:
			if len(s.WaitingOn) > 0 {
				waiting = append(waiting, s)
			}
		}
	}
	if len(failed) == 0 {
		failed = depFailed
	}
	bs := append(failed, running...)
	if len(running) == 0 && run.State == workflow.RunRunning {
		bs = append(bs, rootWaiters(run, waiting)...)
	}
	return bs
}

// rootWaiters keeps the waiting units that wait on something besides other
// unfinished units of the run (a controller to take them, a unit outside
// the run): the ones at the head of the queue. All of them if none is.
func rootWaiters(run workflow.RunRecord, waiting []workflow.StepRecord) []workflow.StepRecord {
	unfinished := map[string]bool{}
	for _, s := range run.Steps {
		if s.State == workflow.Waiting || s.State == workflow.Running {
			unfinished[s.Name] = true
		}
	}
	var roots []workflow.StepRecord
	for _, s := range waiting {
		for _, on := range s.WaitingOn {
			if !unfinished[on] {
				roots = append(roots, s)
				break
			}
		}
	}
	if len(roots) == 0 {
		return waiting
	}
	return roots
}

func blockText(s workflow.StepRecord, now time.Time) string {
	reason := oneLineText(s.Reason)
	switch s.State {
	case workflow.Running:
		t := "running"
		if s.Started != nil {
			t += " for " + fmtDur(now.Sub(*s.Started))
		}
		if len(s.WaitingOn) > 0 {
			t += ", waiting on: " + strings.Join(s.WaitingOn, ", ")
		}
		return t
	case workflow.TimedOut:
		if strings.Contains(reason, "timed out") {
			return reason
		}
		if reason != "" {
			return "timed out: " + reason
		}
		return "timed out"
	case workflow.Failed:
		if reason != "" {
			return "failed: " + reason
		}
		return "failed"
	case workflow.Waiting:
		return "waiting on: " + strings.Join(s.WaitingOn, ", ")
	}
	return s.State
}

// runObject is the run's object as users type it: "pod/web".
func runObject(run workflow.RunRecord) string {
	if run.Object != "" {
		return run.Object
	}
	return api.Ref{Kind: run.Kind, Namespace: run.Namespace, Name: run.Name}.String()
}

// unitOrder returns the indexes of a run's units in reading order:
// topological by After edges, ties broken by name. Edges to units outside
// the run are ignored; units on a cycle come out by name.
func unitOrder(steps []workflow.StepRecord) []int {
	n := len(steps)
	idx := make(map[string]int, n)
	for i, s := range steps {
		if _, dup := idx[s.Name]; !dup {
			idx[s.Name] = i
		}
	}
	indeg := make([]int, n)
	succ := make([][]int, n)
	for i, s := range steps {
		for _, a := range s.After {
			if j, ok := idx[a]; ok && j != i {
				indeg[i]++
				succ[j] = append(succ[j], i)
			}
		}
	}
	less := func(a, b int) bool {
		if steps[a].Name != steps[b].Name {
			return steps[a].Name < steps[b].Name
		}
		return a < b
	}
	done := make([]bool, n)
	order := make([]int, 0, n)
	for len(order) < n {
		pick := -1
		for i := 0; i < n; i++ {
			if !done[i] && indeg[i] == 0 && (pick < 0 || less(i, pick)) {
				pick = i
			}
		}
		if pick < 0 { // a cycle: break it at the first name
			for i := 0; i < n; i++ {
				if !done[i] && (pick < 0 || less(i, pick)) {
					pick = i
				}
			}
		}
		done[pick] = true
		order = append(order, pick)
		for _, j := range succ[pick] {
			indeg[j]--
		}
	}
	return order
}

func stateMarker(state string) string {
	switch state {
	case workflow.Done:
		return "✓"
	case workflow.Failed, workflow.TimedOut:
		return "✗"
	case workflow.Running:
		return "●"
	case workflow.Waiting:
		return "○"
	case workflow.Skipped, workflow.Cancelled:
		return "–"
	}
	return "?"
}

// unitController is the controller column: "target" for targets.
func unitController(s workflow.StepRecord) string {
	if s.Target {
		return "target"
	}
	return orDash(s.Controller)
}

// unitDurText is how long a unit ran, "running for 40s" while it runs, ""
// if it never ran. Targets are sync points: they take no time.
func unitDurText(s workflow.StepRecord, now time.Time) string {
	if s.Started == nil || s.Target {
		return ""
	}
	if s.State == workflow.Running || s.Finished == nil {
		return "running for " + fmtDur(now.Sub(*s.Started))
	}
	return fmtDur(s.Finished.Sub(*s.Started))
}

// fmtDur renders a duration short: 450ms, 2.3s, 41s, 3m5s, 2h10m (rounded
// to the unit shown).
func fmtDur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute-time.Second/2:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour-time.Second/2:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// logLineText is one log line: "15:04:05.000 [attempt 2] msg key=value".
func logLineText(l workflow.LogLine, showAttempt bool) string {
	var b strings.Builder
	b.WriteString(l.Time.Local().Format("15:04:05.000"))
	b.WriteString(" ")
	if showAttempt && l.Attempt > 0 {
		fmt.Fprintf(&b, "[attempt %d] ", l.Attempt)
	}
	b.WriteString(logMsg(l))
	return b.String()
}

// logMsg is a log line's message and its attributes, sorted by key.
func logMsg(l workflow.LogLine) string {
	msg := oneLineText(l.Msg)
	keys := make([]string, 0, len(l.Attrs))
	for k := range l.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, ok := l.Attrs[k].(string)
		if !ok || strings.ContainsAny(v, " \t\"=") {
			v = compact(l.Attrs[k])
		}
		msg += " " + k + "=" + oneLineText(v)
	}
	return msg
}

// oneLineText flattens text written by controllers onto one line.
func oneLineText(s string) string {
	s = strings.TrimSpace(s)
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "\t", " ").Replace(s)
}

func textWidth(s string) int { return len([]rune(s)) }

func pad(s string, w int) string {
	if n := textWidth(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

// warnUngranted says when a pod runs with privileges whose grant was
// removed: it keeps running, but will not be restarted with them.
func warnUngranted(w io.Writer, status map[string]any) {
	adm, _ := status["admission"].(map[string]any)
	list, _ := adm["ungranted"].([]any)
	if len(list) == 0 {
		return
	}
	var names []string
	for _, p := range list {
		names = append(names, fmt.Sprint(p))
	}
	fmt.Fprintf(w, "warning: running with privileges no longer granted: %s\n", strings.Join(names, ", "))
}
