package cli

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/workflow"
)

func journalCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "journal KIND/NAME",
		Short: "show all controller activity about an object, across its runs, in time order",
		Long: `Show everything controllers did about one object, across all its recorded
runs, oldest first: runs starting and ending, steps starting, finishing,
failing, timing out or being skipped, and every log line they wrote.

-o json prints an array of {time, generation, run, step, controller, event,
msg}; event is "run started", "run done", "run failed", "run superseded",
"started", "log", or the state a unit finished in ("done", "failed",
"timed out", "skipped", "cancelled").`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %s: use table or json", output)
			}
			ref, runs, err := fetchRuns(cmd, e, args[0])
			if err != nil {
				return err
			}
			evs := journalEvents(runs)
			if output == "json" {
				return writeJSONOut(e.stdout, evs)
			}
			if len(evs) == 0 {
				fmt.Fprintf(e.stdout, "%s: no runs yet\n", ref)
				return nil
			}
			renderJournal(e.stdout, evs)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// journalEvent is one line of `skiff journal`.
type journalEvent struct {
	Time       time.Time `json:"time"`
	Generation int64     `json:"generation"`
	Run        string    `json:"run"`
	Step       string    `json:"step"`       // empty for run events
	Controller string    `json:"controller"` // empty for targets and run events
	Event      string    `json:"event"`
	Msg        string    `json:"msg"`

	target bool
}

// journalEvents derives the events of an object's runs (in any order) and
// returns them in time order. Events at the same instant keep the order in
// which they happened within a run: a unit starts, logs, then finishes.
func journalEvents(runs []workflow.RunRecord) []journalEvent {
	rs := append([]workflow.RunRecord(nil), runs...)
	// Oldest run first, so ties across runs keep run order.
	sort.SliceStable(rs, func(a, b int) bool {
		if !rs[a].Started.Equal(rs[b].Started) {
			return rs[a].Started.Before(rs[b].Started)
		}
		return rs[a].Generation < rs[b].Generation
	})
	evs := []journalEvent{}
	for _, run := range rs {
		ev := func(t time.Time, s *workflow.StepRecord, event, msg string) {
			e := journalEvent{Time: t, Generation: run.Generation, Run: run.ID, Event: event, Msg: oneLineText(msg)}
			if s != nil {
				e.Step, e.Controller, e.target = s.Name, s.Controller, s.Target
			}
			evs = append(evs, e)
		}
		if !run.Started.IsZero() {
			msg := "run started toward " + run.Target
			if run.Phase == "down" {
				msg += " (down)"
			}
			ev(run.Started, nil, "run started", msg)
		}
		for _, i := range unitOrder(run.Steps) {
			s := &run.Steps[i]
			if s.Started != nil {
				msg := "started"
				if s.Target {
					msg = "activating"
				}
				ev(*s.Started, s, "started", msg)
			}
			for _, l := range s.Log {
				msg := logMsg(l)
				if s.Attempts > 1 && l.Attempt > 0 {
					msg = fmt.Sprintf("[attempt %d] %s", l.Attempt, msg)
				}
				ev(l.Time, s, "log", msg)
			}
			if s.Finished != nil {
				msg := finishText(*s)
				if s.Attempts > 1 {
					msg += " (" + strconv.Itoa(s.Attempts) + " attempts)"
				}
				ev(*s.Finished, s, s.State, msg)
			}
		}
		if run.Finished != nil {
			msg := run.State
			switch run.State {
			case workflow.RunDone:
				msg = "reached " + run.Target
			case workflow.RunFailed:
				msg = run.Target + " not reached"
			case workflow.RunSuperseded:
				msg = "superseded by a newer generation"
			}
			if !run.Started.IsZero() {
				msg += " after " + fmtDur(run.Finished.Sub(run.Started))
			}
			if run.Reason != "" {
				msg += ": " + run.Reason
			}
			ev(*run.Finished, nil, "run "+run.State, msg)
		}
	}
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].Time.Before(evs[b].Time) })
	return evs
}

// finishText describes how a unit finished.
func finishText(s workflow.StepRecord) string {
	var msg string
	switch s.State {
	case workflow.Done:
		msg = "done"
		if s.Target {
			msg = "reached"
		}
		if s.Started != nil && !s.Target {
			msg += " in " + fmtDur(s.Finished.Sub(*s.Started))
		}
		return msg
	case workflow.TimedOut:
		if s.Reason != "" {
			return s.Reason
		}
		return "timed out"
	}
	msg = s.State
	if s.Reason != "" {
		msg += ": " + s.Reason
	}
	return msg
}

// renderJournal writes events one per line: time, generation, step,
// controller and message.
func renderJournal(w io.Writer, evs []journalEvent) {
	t := newTable(w, "TIME", "GEN", "STEP", "CONTROLLER", "MESSAGE")
	for _, e := range evs {
		step, ctrl := orDash(e.Step), orDash(e.Controller)
		if e.target {
			ctrl = "target"
		}
		t.row(e.Time.Local().Format("15:04:05.000"), strconv.FormatInt(e.Generation, 10), step, ctrl, e.Msg)
	}
	t.flush()
}
