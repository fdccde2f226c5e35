package workflow

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Resuming runs after a change of engine (a server restarted, or another
// server took over the lead).
//
// Runs are recorded lazily (see Options.RecordAfter), so the records an
// engine leaves may miss the last steps it finished, or a whole run. What
// closes the gap is the Completion: the engine hands one to Objects that
// implement Completer for every step that succeeds, before the run moves
// on, and the server stores it in the same etcd transaction as the step's
// writes (a step with none stores the completion alone). A completion is
// thus durable exactly when the step's effects are, and a new engine
// Seeded with an object's records and completions
//
//   - skips every step whose inputs are those of its last success, as
//     always (completions carry the read hash);
//   - continues a run that had not ended (a running record, or
//     completions of a run never recorded), under the same run ID: steps
//     with a completion in that run are done, steps whose attempt was in
//     flight are dispatched again as their next attempt, the rest wait as
//     usual. A run for a state the object no longer has is recorded as
//     superseded, so every run that started is recorded as ended.
//
// A step attempt that was in flight is attempted again: its completion
// was never durable, so neither were its writes. Node steps are done
// again on their node; agents' steps are idempotent (they bring the node
// to the pod's desired state).

// Completion is the durable mark of one step's success: the run, the
// state of the object it ran for, its attempt and the read hash of its
// inputs.
type Completion struct {
	Run        string    `json:"run"`
	Step       string    `json:"step"`
	Phase      string    `json:"phase"`
	Generation int64     `json:"gen"`
	Attempt    int       `json:"attempt"`
	ReadHash   string    `json:"hash,omitempty"`
	Writes     []string  `json:"writes,omitempty"` // field paths written
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	// Created is the object's Created: completions of an earlier object
	// of the same name are not this one's.
	Created time.Time `json:"created"`

	// What the Completer applies, not stored with the mark.
	Changer string         `json:"-"` // "controller:NAME" or "node:NAME"
	Fields  map[string]any `json:"-"` // the step's field writes
	Epoch   int64          `json:"-"` // the engine's epoch (Reset) when the step was dispatched
}

// Completer is an optional interface of Objects: Complete applies a
// successful step's field writes (c.Fields, possibly none) as c.Changer
// and stores c with them, atomically, returning the object's new body
// (nil if unchanged). An engine whose Objects implement it calls Complete
// instead of Write for every success, and moves the run on only once it
// returned without error.
type Completer interface {
	Complete(ctx context.Context, ref Ref, c *Completion) (map[string]any, error)
}

// completionLocked is the completion of an attempt, should it succeed.
func (e *Engine) completionLocked(a *attempt, writes map[string]any) *Completion {
	r := a.run
	c := &Completion{Run: r.rec.ID, Step: a.item.Step, Phase: r.rec.Phase, Generation: r.rec.Generation,
		Attempt: a.item.Attempt, ReadHash: r.units[r.idx[a.unit]].hash, Writes: sortedKeys(writes),
		Created: r.state.obj.Created, Changer: "controller:" + a.item.Controller, Fields: writes, Epoch: e.epoch}
	if a.item.Where == "node" {
		c.Changer = "node:" + a.item.Node
	}
	if sr := &r.rec.Steps[r.idx[a.unit]]; sr.Started != nil {
		c.Started = *sr.Started
	}
	return c
}

// Epoch returns how many times the engine was Reset.
func (e *Engine) Epoch() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.epoch
}

// Reset drops every object and run, as if the engine were new, and
// withdraws the work in flight (Dispatcher.Cancel), recording nothing: a
// server that stops leading leaves its runs to the next leader, which
// resumes them from their records and completions. Reports about work
// dispatched before are stale. It returns the new epoch.
func (e *Engine) Reset() int64 {
	e.mu.Lock()
	for _, st := range e.objs {
		st.active = nil // so that a completion being written is refused
	}
	e.itemsMu.Lock()
	ids := make([]string, 0, len(e.items))
	for id, a := range e.items {
		ids = append(ids, id)
		if a.timer != nil {
			a.timer.Stop()
		}
	}
	clear(e.items)
	e.itemsMu.Unlock()
	clear(e.objs)
	clear(e.failed)
	clear(e.changed)
	e.epoch++
	epoch := e.epoch
	e.mu.Unlock()
	for _, id := range ids {
		e.o.Dispatcher.Cancel(id)
	}
	return epoch
}

// resumable is a run an earlier engine left unfinished: its last record
// (or as much of one as its completions tell) and its completions.
type resumable struct {
	rec  RunRecord
	done []Completion
}

// Seed restores what an earlier engine knew of an object: its recorded
// runs (oldest first) and the completions of its steps, the newest of
// each step. Steps that succeeded are not repeated, and a run that had
// not ended is resumed by the object's next Submit.
func (e *Engine) Seed(ref Ref, runs []RunRecord, done []Completion) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.state(ref)
	var lastEnded string // ID of the newest run that ended
	open := map[string]*resumable{}
	for _, r := range runs {
		for _, s := range r.Steps {
			if s.State == Done && s.ReadHash != "" {
				st.success[s.Name] = s.ReadHash
			}
		}
		if r.State == RunRunning {
			open[r.ID] = &resumable{rec: r}
			continue
		}
		e.endedLocked(st, r)
		if r.State == RunDone || r.State == RunFailed {
			st.last.gen, st.last.phase = r.Generation, r.Phase
		}
		lastEnded = max(lastEnded, r.ID)
	}
	for _, c := range done {
		if c.ReadHash != "" {
			st.success[c.Step] = c.ReadHash
		}
		if c.Run <= lastEnded {
			continue // of a run that ended (its record may be trimmed)
		}
		o := open[c.Run]
		if o == nil {
			// A run never recorded: what its completions tell.
			o = &resumable{rec: RunRecord{ID: c.Run, Generation: c.Generation, Phase: c.Phase, State: RunRunning, Started: runStart(c)}}
			open[c.Run] = o
		}
		o.done = append(o.done, c)
	}
	st.resume = st.resume[:0]
	for id, o := range open {
		if id > lastEnded {
			st.resume = append(st.resume, *o)
		}
	}
	slices.SortFunc(st.resume, func(a, b resumable) int { return strings.Compare(a.rec.ID, b.rec.ID) })
	e.settledLocked(st)
}

// runStart is when the run of a completion started, as its ID says (IDs
// begin with the start in hex milliseconds), or its step's start.
func runStart(c Completion) time.Time {
	hex, _, _ := strings.Cut(c.Run, "-")
	if ms, err := strconv.ParseInt(hex, 16, 64); err == nil {
		return time.UnixMilli(ms)
	}
	return c.Started
}

// resumeLocked continues the runs an earlier engine left unfinished, when
// the object is first submitted: the newest, if it is for the object's
// current state (phase and st.obj's generation), becomes the active run;
// the others are recorded as superseded.
func (e *Engine) resumeLocked(st *objState, phase string) []func() {
	if len(st.resume) == 0 {
		return nil
	}
	var actions []func()
	open := st.resume
	st.resume = nil
	for i, o := range open {
		g := e.graphs[st.obj.Kind+"/"+o.rec.Phase]
		if g == nil {
			continue
		}
		r := e.runFromRecordLocked(st, g, o)
		if r == nil {
			continue
		}
		if st.active != nil {
			actions = append(actions, e.supersedeLocked(st.active)...)
		}
		st.active = r
		if i < len(open)-1 || o.rec.Generation != st.obj.Generation || o.rec.Phase != phase {
			actions = append(actions, e.supersedeLocked(r)...)
			continue
		}
		actions = append(actions, e.advanceLocked(r)...)
	}
	return actions
}

// runFromRecordLocked rebuilds a run from its record and completions,
// with the units of g: finished units stay as recorded, units with a
// completion are done, and every other unit waits (one that was in flight
// is dispatched again as its next attempt). Targets are reached anew.
func (e *Engine) runFromRecordLocked(st *objState, g *Graph, o resumable) *run {
	t := e.templateLocked(g, o.rec.Phase)
	if t.err != nil {
		return nil
	}
	r := &run{g: g, idx: t.idx, state: st, units: make([]unitState, len(t.steps))}
	r.rec = RunRecord{ID: o.rec.ID, Object: st.obj.Ref.String(), Kind: st.obj.Kind, Namespace: st.obj.Namespace,
		Name: st.obj.Name, Generation: o.rec.Generation, Phase: o.rec.Phase, Target: Goal(g.Kind, o.rec.Phase),
		State: RunRunning, Cause: o.rec.Cause, Started: o.rec.Started, Steps: slices.Clone(t.steps)}
	now := e.o.Now()
	for _, old := range o.rec.Steps {
		i, ok := t.idx[old.Name]
		if !ok || old.Target {
			continue
		}
		sr := &r.rec.Steps[i]
		sr.Attempts, sr.Log = old.Attempts, old.Log
		if !finished(old.State) {
			if old.State == Running || old.Attempts > 0 {
				sr.Log = append(sr.Log, LogLine{Time: now, Attempt: old.Attempts,
					Msg: "the server leading the cluster changed while this step was in flight: trying again"})
			}
			continue
		}
		sr.State, sr.Reason, sr.Started, sr.Finished = old.State, old.Reason, old.Started, old.Finished
		sr.Writes, sr.ReadHash = old.Writes, old.ReadHash
	}
	for _, c := range o.done {
		i, ok := t.idx[c.Step]
		if !ok || r.rec.Steps[i].Target {
			continue
		}
		sr := &r.rec.Steps[i]
		started, fin := c.Started, c.Finished
		sr.State, sr.Reason, sr.Started, sr.Finished = Done, "", &started, &fin
		sr.Attempts = max(sr.Attempts, c.Attempt)
		sr.Writes, sr.ReadHash = c.Writes, c.ReadHash
	}
	return r
}
