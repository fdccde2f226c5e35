package workflow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
)

// Ref names an object.
type Ref struct{ Kind, Namespace, Name string }

func (r Ref) key() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// String renders "pod/web".
func (r Ref) String() string { return strings.ToLower(r.Kind) + "/" + r.Name }

// Object is what the engine knows of an object: enough to decide whether a
// run is due and what a step reads.
type Object struct {
	Ref
	Generation int64
	Deleting   bool
	// Created is when the object was created: with its Ref, it names one
	// incarnation of the object (a name deleted and used again is
	// another). Zero when unknown.
	Created time.Time
	// Body is the object's labels, spec and status as a JSON tree.
	Body map[string]any
}

// phase is the phase an object's runs are in: Down once it is being
// deleted, Up before.
func (o Object) phase() string {
	if o.Deleting {
		return Down
	}
	return Up
}

// WorkItem asks a controller to run one attempt of one step for one object.
type WorkItem struct {
	ID         string         `json:"id"`
	Run        string         `json:"run"`
	Step       string         `json:"step"`
	Controller string         `json:"controller"`
	Where      string         `json:"where"`
	Node       string         `json:"node,omitempty"` // for node steps: the object's node
	Kind       string         `json:"kind"`
	Namespace  string         `json:"namespace,omitempty"`
	Name       string         `json:"name"`
	Generation int64          `json:"generation"`
	Phase      string         `json:"phase"`
	Attempt    int            `json:"attempt"`
	Timeout    time.Duration  `json:"timeout,omitempty"`
	Object     map[string]any `json:"object"` // the body; the server strips it to the controller's fields
}

// Result is the outcome of a work item: an error, or the field writes of
// a success ("status.node": "n2").
type Result struct {
	Err    string         `json:"error,omitempty"`
	Writes map[string]any `json:"writes,omitempty"`
}

// Objects is how the engine changes objects.
type Objects interface {
	// Write applies the field writes of a successful step as changer
	// ("controller:NAME", or "node:NAME" for node steps) and returns the
	// object's new body.
	Write(ctx context.Context, ref Ref, controller, step string, writes map[string]any) (map[string]any, error)
	// Remove deletes an object whose deletion run finished.
	Remove(ctx context.Context, ref Ref) error
}

// Dispatcher hands work items to controllers. Dispatch must not block; it
// returns true when the item was taken at once (in-process controllers),
// false when it waits for a remote controller to take it (see Engine.Taken).
type Dispatcher interface {
	Dispatch(item *WorkItem) (taken bool)
	Cancel(itemID string)
}

// Recorder receives a copy of a run record after it changes. Changes to a
// running run that come close together (its steps finishing one after
// another) are handed over once, within RecordDelay of the first; the
// record of a run that ended, at once. Record is called with the engine's
// lock held, so records reach it in the order they were made: it must not
// call the engine.
type Recorder interface {
	Record(r RunRecord)
}

// Options configure an Engine.
type Options struct {
	Objects    Objects
	Dispatcher Dispatcher
	Recorder   Recorder // optional
	Now        func() time.Time
	// KeepRuns is how many finished runs are kept in memory per object;
	// default 10. Negative keeps none: Runs then returns only the run in
	// progress, and the Recorder is where finished ones are found. Either
	// way the engine remembers how the last run ended and the read hashes
	// of its steps' last successes.
	KeepRuns int
	// RecordAfter, if set, is how long a run runs before its changes go to
	// the Recorder: most runs end sooner and are recorded once, when they
	// end. Until then Runs has them. Default 0: every change is recorded.
	RecordAfter time.Duration
	// Backoff returns the delay before retry attempt n (2, 3, ...);
	// default 200ms doubling to at most 30s.
	Backoff func(attempt int) time.Duration
}

// ErrStale means a report names a work item that is no longer wanted: its
// run was superseded, it timed out, or it already finished.
var ErrStale = errors.New("work item is no longer current")

// RecordDelay bounds how long a run's change waits to be handed to the
// Recorder, so that the changes of a burst are copied once.
const RecordDelay = 20 * time.Millisecond

// Engine runs workflows for objects. It is safe for concurrent use.
type Engine struct {
	o      Options
	seq    atomic.Int64
	mu     sync.Mutex
	graphs map[string]*Graph // kind/phase → graph; guarded by mu
	tmpls  map[*Graph]*template
	objs   map[string]*objState
	// items maps item IDs to attempts in flight; guarded by mu and
	// itemsMu, both held to change it, either to read it (Item takes
	// only itemsMu, so servers look items up without waiting on mu).
	items   map[string]*attempt
	itemsMu sync.RWMutex
	failed  map[string]*objState // objects whose last run failed, by key
	// changed holds the runs changed since the Recorder last got them;
	// a flush is pending while it is not empty.
	changed map[*run]bool
	epoch   int64 // how many times Reset ran; guarded by mu
}

// objState is everything the engine keeps per object. Guarded by Engine.mu.
//
// Its body is kept only while the engine may need it: while a run is
// active, or when the last run failed (RetryFailed starts another from
// it). An object at rest holds none; its next Submit brings it.
type objState struct {
	obj     Object
	active  *run
	history []RunRecord       // finished runs, oldest first, at most KeepRuns
	ended   string            // how the last finished run ended ("" if none)
	success map[string]string // step → read hash of its last success
	resume  []resumable       // runs an earlier engine left unfinished, oldest first (Seed)
	last    struct {          // the state the last done or failed run was for
		gen   int64
		phase string
	}
}

// run is a run in progress.
type run struct {
	rec   RunRecord
	g     *Graph
	idx   map[string]int // unit name → index in rec.Steps; shared, read only
	state *objState
	units []unitState // beside rec.Steps
}

// unitState is what a run keeps of a unit beside its record.
type unitState struct {
	hash string // read hash computed when the step started
	// sent marks a step with an attempt handed to a dispatcher; it stays
	// Waiting (on the controller) until it is taken.
	sent bool
	item string // ID of its latest attempt
}

// template is the start of every run of a graph: its units in order, with
// their edges inside the run (shared by every run's records, never
// changed), and each unit's index.
type template struct {
	steps []StepRecord
	idx   map[string]int
	err   error
}

// attempt is one dispatched work item.
type attempt struct {
	item  *WorkItem
	run   *run
	unit  string
	timer *time.Timer
	taken bool
}

// NewEngine returns an engine with no graphs.
func NewEngine(o Options) *Engine {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.KeepRuns == 0 {
		o.KeepRuns = 10
	}
	o.KeepRuns = max(o.KeepRuns, 0)
	if o.Backoff == nil {
		o.Backoff = func(n int) time.Duration {
			d := 200 * time.Millisecond << min(n-2, 8)
			return min(d, 30*time.Second)
		}
	}
	return &Engine{o: o, graphs: map[string]*Graph{}, tmpls: map[*Graph]*template{}, objs: map[string]*objState{},
		items: map[string]*attempt{}, failed: map[string]*objState{}, changed: map[*run]bool{}}
}

// SetGraphs replaces the graphs new runs use; runs in progress keep theirs.
func (e *Engine) SetGraphs(gs []*Graph) {
	m := make(map[string]*Graph, len(gs))
	for _, g := range gs {
		m[g.Kind+"/"+g.Phase] = g
	}
	e.mu.Lock()
	e.graphs = m
	clear(e.tmpls) // runs in progress hold theirs
	e.mu.Unlock()
}

// endedLocked files a finished run of st's.
func (e *Engine) endedLocked(st *objState, r RunRecord) {
	st.ended = r.State
	if e.o.KeepRuns == 0 {
		return
	}
	st.history = append(st.history, r)
	if len(st.history) > e.o.KeepRuns {
		st.history = slices.Delete(st.history, 0, len(st.history)-e.o.KeepRuns)
	}
}

// settledLocked notes how an object without an active run rests: whether
// its last run failed (RetryFailed looks only at those), and drops its
// body if nothing will read it before its next Submit.
func (e *Engine) settledLocked(st *objState) {
	key := st.obj.Ref.key()
	if st.active != nil {
		delete(e.failed, key)
		return
	}
	if st.ended == RunFailed {
		e.failed[key] = st
		return
	}
	delete(e.failed, key)
	if st.ended != "" {
		st.obj.Body = nil
	}
}

func (e *Engine) state(ref Ref) *objState {
	st := e.objs[ref.key()]
	if st == nil {
		st = &objState{obj: Object{Ref: ref}, success: map[string]string{}}
		e.objs[ref.key()] = st
	}
	return st
}

// Submit tells the engine an object's current state. A new generation, or
// a deletion, starts a run; anything else only refreshes what steps read.
func (e *Engine) Submit(obj Object) {
	e.mu.Lock()
	st := e.state(obj.Ref)
	st.obj = obj
	phase := obj.phase()
	g := e.graphs[obj.Kind+"/"+phase]
	actions := e.resumeLocked(st, phase)
	switch {
	case st.active != nil && st.active.rec.Generation == obj.Generation && st.active.rec.Phase == phase:
		// This run is the one for this state.
	case st.active == nil && st.last.gen == obj.Generation && st.last.phase == phase:
		// Already ran for this state.
	default:
		if st.active != nil {
			actions = append(actions, e.supersedeLocked(st.active)...)
		}
		if g == nil {
			if obj.Deleting {
				actions = append(actions, func() { e.o.Objects.Remove(context.Background(), obj.Ref) })
			}
			break
		}
		r, err := e.newRunLocked(st, g, phase)
		if err != nil {
			break
		}
		st.active = r
		actions = append(actions, e.advanceLocked(r)...)
	}
	if st.active == nil {
		e.settledLocked(st)
	}
	e.mu.Unlock()
	for _, a := range actions {
		a()
	}
}

// RetryFailed starts a new run for every object of kind whose last run
// failed, as if its intent had changed: used when the world changed under
// it (a node joined, so a pod that fit nowhere may fit now). Steps that
// succeeded with the same inputs are skipped as usual.
func (e *Engine) RetryFailed(kind string) int {
	e.mu.Lock()
	var actions []func()
	n := 0
	for _, st := range e.failed {
		if st.obj.Kind != kind || st.active != nil || st.ended != RunFailed {
			continue
		}
		phase := st.obj.phase()
		g := e.graphs[kind+"/"+phase]
		if g == nil {
			continue
		}
		r, err := e.newRunLocked(st, g, phase)
		if err != nil {
			continue
		}
		st.active = r
		delete(e.failed, st.obj.Ref.key())
		actions = append(actions, e.advanceLocked(r)...)
		n++
	}
	e.mu.Unlock()
	for _, a := range actions {
		a()
	}
	return n
}

// Rerun starts a new run for an object whose intent did not change but
// whose world did: a pod evicted from its node must be placed again. obj
// is the object as written by whoever asked (so the run reads the change
// that caused it, even before the store's watch delivers it); a run in
// progress is superseded. cause is recorded on the run. Steps whose reads
// did not change are skipped as usual.
func (e *Engine) Rerun(obj Object, cause string) {
	e.mu.Lock()
	st := e.state(obj.Ref)
	st.obj = obj
	phase := obj.phase()
	actions := e.resumeLocked(st, phase)
	if st.active != nil {
		actions = append(actions, e.supersedeLocked(st.active)...)
	}
	if g := e.graphs[obj.Kind+"/"+phase]; g != nil {
		if r, err := e.newRunLocked(st, g, phase); err == nil {
			r.rec.Cause = cause
			st.active = r
			actions = append(actions, e.advanceLocked(r)...)
		}
	}
	if st.active == nil {
		e.settledLocked(st)
	}
	e.mu.Unlock()
	for _, a := range actions {
		a()
	}
}

// Forget drops an object that no longer exists.
func (e *Engine) Forget(ref Ref) {
	e.mu.Lock()
	st := e.objs[ref.key()]
	var actions []func()
	if st != nil && st.active != nil {
		actions = e.supersedeLocked(st.active)
	}
	delete(e.objs, ref.key())
	delete(e.failed, ref.key())
	e.mu.Unlock()
	for _, a := range actions {
		a()
	}
}

func (e *Engine) newRunLocked(st *objState, g *Graph, phase string) (*run, error) {
	t := e.templateLocked(g, phase)
	if t.err != nil {
		return nil, t.err
	}
	now := e.o.Now()
	// IDs sort by start time, as run records are stored by ID.
	id := fmt.Sprintf("%011x-%06x", now.UnixMilli(), e.seq.Add(1)&0xffffff)
	r := &run{g: g, idx: t.idx, state: st, units: make([]unitState, len(t.steps))}
	r.rec = RunRecord{ID: id, Object: st.obj.Ref.String(), Kind: st.obj.Kind, Namespace: st.obj.Namespace,
		Name: st.obj.Name, Generation: st.obj.Generation, Phase: phase, Target: Goal(g.Kind, phase), State: RunRunning, Started: now,
		Steps: slices.Clone(t.steps)}
	return r, nil
}

// templateLocked returns the template of g's runs for phase.
func (e *Engine) templateLocked(g *Graph, phase string) *template {
	if t := e.tmpls[g]; t != nil {
		return t
	}
	t := &template{idx: map[string]int{}}
	e.tmpls[g] = t
	units, optional, err := g.Transaction(Goal(g.Kind, phase))
	if err != nil {
		t.err = err
		return t
	}
	in := map[string]bool{}
	for _, u := range units {
		in[u] = true
	}
	keep := func(l []string) []string {
		var out []string
		for _, x := range l {
			if in[x] {
				out = append(out, x)
			}
		}
		return out
	}
	for _, u := range units {
		after, requires, wants := g.edges(u)
		sr := StepRecord{Name: u, State: Waiting, Optional: optional[u],
			After: keep(after), Requires: keep(requires), Wants: keep(wants)}
		if s := g.Step(u); s != nil {
			sr.Controller, sr.Where = s.Controller, s.Where
		} else {
			sr.Target = true
		}
		t.idx[u] = len(t.steps)
		t.steps = append(t.steps, sr)
	}
	return t
}

func finished(state string) bool {
	switch state {
	case Done, Skipped, Failed, TimedOut, Cancelled:
		return true
	}
	return false
}

func succeeded(state string) bool { return state == Done || state == Skipped }

// advanceLocked moves a run forward as far as it can go and returns what to
// do once the lock is released (dispatches, cancellations, records).
func (e *Engine) advanceLocked(r *run) []func() {
	var actions []func()
	// One time for every unit this advance starts or finishes; records
	// only ever replace their times, so they may share it.
	now := new(time.Time)
	*now = e.o.Now()
	for progress := true; progress; {
		progress = false
		for i := range r.rec.Steps {
			sr := &r.rec.Steps[i]
			if finished(sr.State) {
				continue
			}
			// A failed requirement fails this unit, waiting or running.
			if dep := r.failedRequirement(sr); dep != "" {
				if sr.State == Running || r.units[r.idx[sr.Name]].sent {
					actions = append(actions, e.cancelUnitLocked(r, sr.Name)...)
				}
				sr.State, sr.Reason, sr.WaitingOn = Failed, "dependency failed: "+dep, nil
				sr.Finished = now
				progress = true
				continue
			}
			if sr.State != Waiting || r.units[r.idx[sr.Name]].sent {
				continue
			}
			if r.waitingLocked(sr) {
				continue
			}
			sr.Started = now
			progress = true
			if sr.Target {
				sr.State, sr.Finished = Done, now
				continue
			}
			actions = append(actions, e.startStepLocked(r, sr)...)
		}
	}
	for i := range r.rec.Steps {
		if !finished(r.rec.Steps[i].State) {
			return append(actions, e.recordLocked(r))
		}
	}
	// Every unit has finished: the run has.
	goal := r.rec.Steps[r.idx[r.rec.Target]]
	r.rec.Finished = now
	if goal.State == Done {
		r.rec.State = RunDone
	} else {
		r.rec.State, r.rec.Reason = RunFailed, goal.Reason
	}
	actions = append(actions, e.recordLocked(r))
	st := r.state
	st.active = nil
	st.last.gen, st.last.phase = r.rec.Generation, r.rec.Phase
	e.endedLocked(st, r.rec)
	e.settledLocked(st)
	if r.rec.Phase == Down && r.rec.State == RunDone {
		ref := st.obj.Ref
		actions = append(actions, func() { e.o.Objects.Remove(context.Background(), ref) })
	}
	return actions
}

// waitingLocked sets what a waiting unit waits on, the units ordered
// before it that have not finished, and reports whether there are any. An
// unchanged list is kept as it is.
func (r *run) waitingLocked(sr *StepRecord) bool {
	n, same := 0, true
	for _, d := range sr.After {
		if !finished(r.rec.Steps[r.idx[d]].State) {
			same = same && n < len(sr.WaitingOn) && sr.WaitingOn[n] == d
			n++
		}
	}
	switch {
	case n == 0:
		sr.WaitingOn = nil
	case !same || n != len(sr.WaitingOn):
		sr.WaitingOn = make([]string, 0, n)
		for _, d := range sr.After {
			if !finished(r.rec.Steps[r.idx[d]].State) {
				sr.WaitingOn = append(sr.WaitingOn, d)
			}
		}
	}
	return n > 0
}

func (r *run) failedRequirement(sr *StepRecord) string {
	for _, d := range sr.Requires {
		ds := r.rec.Steps[r.idx[d]].State
		if finished(ds) && !succeeded(ds) {
			return d
		}
	}
	return ""
}

// readHash hashes the values of the fields a step reads; "" if it declares
// none (such a step runs every time).
func readHash(s *Step, body map[string]any) string {
	if len(s.Reads) == 0 {
		return ""
	}
	h := sha256.New()
	var b []byte
	for _, rp := range s.Reads {
		h.Write([]byte(rp.String()))
		h.Write([]byte{1})
		for _, p := range fieldpath.Expand(body, rp) {
			v, _ := fieldpath.Get(body, p)
			b, _ = api.AppendTree(b[:0], v)
			// The hashes are stored (completion marks): json.Marshal's bytes.
			b = api.EscapeHTML(b, 0)
			h.Write([]byte(p.String()))
			h.Write([]byte{0})
			h.Write(b)
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func (e *Engine) startStepLocked(r *run, sr *StepRecord) []func() {
	s := r.g.Step(sr.Name)
	h := readHash(s, r.state.obj.Body)
	if h != "" && r.state.success[sr.Name] == h {
		sr.State, sr.Reason, sr.ReadHash = Skipped, "inputs unchanged since its last success", h
		sr.Finished = sr.Started
		return nil
	}
	r.units[r.idx[sr.Name]].hash = h
	if s.Where == "node" && nodeOf(r.state.obj) == "" {
		// A node step needs the object's node. Going down, an object that
		// never had one has nothing to undo there.
		t := e.o.Now()
		sr.Finished = &t
		if r.rec.Phase == Down {
			sr.State, sr.Reason = Skipped, "no node: nothing to undo"
		} else {
			sr.State, sr.Reason = Failed, "the object has no node (status.node is empty)"
		}
		return nil
	}
	return e.dispatchLocked(r, sr, s)
}

// nodeOf returns the node an object's node steps run on: a node's own
// steps run on it, others' on their status.node.
func nodeOf(obj Object) string {
	if obj.Kind == "Node" {
		return obj.Name
	}
	st, _ := obj.Body["status"].(map[string]any)
	n, _ := st["node"].(string)
	return n
}

func (e *Engine) dispatchLocked(r *run, sr *StepRecord, s *Step) []func() {
	sr.Attempts++
	sr.State = Waiting
	r.units[r.idx[sr.Name]].sent = true
	sr.Reason = ""
	obj := r.state.obj
	item := &WorkItem{
		ID: r.rec.ID + "." + sr.Name + "." + strconv.Itoa(sr.Attempts), Run: r.rec.ID, Step: sr.Name,
		Controller: s.Controller, Where: s.Where, Kind: obj.Kind, Namespace: obj.Namespace, Name: obj.Name,
		Generation: obj.Generation, Phase: r.rec.Phase, Attempt: sr.Attempts, Timeout: s.Timeout,
		Object: obj.Body,
	}
	if s.Where == "node" {
		item.Node = nodeOf(obj)
	}
	a := &attempt{item: item, run: r, unit: sr.Name}
	e.setItemLocked(item.ID, a)
	r.units[r.idx[sr.Name]].item = item.ID
	sr.WaitingOn = []string{"controller:" + s.Controller + " to take it"}
	if s.Where == "node" {
		sr.WaitingOn = []string{"node:" + item.Node + " to take it"}
	}
	return []func(){func() {
		if e.o.Dispatcher.Dispatch(item) {
			e.Taken(item.ID)
		}
	}}
}

// Taken records that a controller took a work item: its timeout starts.
func (e *Engine) Taken(itemID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.items[itemID]
	if a == nil {
		return ErrStale
	}
	if a.taken {
		return nil
	}
	a.taken = true
	sr := &a.run.rec.Steps[a.run.idx[a.unit]]
	sr.State = Running
	sr.WaitingOn = nil
	t := e.o.Now()
	sr.Started = &t
	if a.item.Timeout > 0 {
		a.timer = time.AfterFunc(a.item.Timeout, func() { e.timeout(itemID) })
	}
	return nil
}

// Log appends a structured log line to a work item's step.
func (e *Engine) Log(itemID, msg string, attrs map[string]any) error {
	e.mu.Lock()
	a := e.items[itemID]
	if a == nil {
		e.mu.Unlock()
		return ErrStale
	}
	sr := &a.run.rec.Steps[a.run.idx[a.unit]]
	sr.Log = append(sr.Log, LogLine{Time: e.o.Now(), Attempt: a.item.Attempt, Msg: msg, Attrs: attrs})
	if len(sr.Log) > MaxLogLines {
		sr.Log = sr.Log[len(sr.Log)-MaxLogLines:]
	}
	rec := e.recordLocked(a.run)
	e.mu.Unlock()
	rec()
	return nil
}

// Complete reports the outcome of a work item.
func (e *Engine) Complete(itemID string, res Result) error {
	e.mu.Lock()
	a := e.items[itemID]
	if a == nil {
		e.mu.Unlock()
		return ErrStale
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	e.setItemLocked(itemID, nil)
	ref := a.run.state.obj.Ref
	c := e.completionLocked(a, res.Writes)
	e.mu.Unlock()

	var writeErr error
	var body map[string]any
	if res.Err == "" {
		if cp, ok := e.o.Objects.(Completer); ok {
			c.Finished = e.o.Now()
			body, writeErr = cp.Complete(context.Background(), ref, c)
		} else if len(res.Writes) > 0 {
			body, writeErr = e.o.Objects.Write(context.Background(), ref, c.Changer, c.Step, res.Writes)
		}
	}

	e.mu.Lock()
	r := a.run
	if r.state.active != r {
		e.mu.Unlock()
		return ErrStale // superseded while writing
	}
	sr := &r.rec.Steps[r.idx[a.unit]]
	var actions []func()
	switch {
	case res.Err != "":
		actions = e.failLocked(r, sr, Failed, res.Err)
	case writeErr != nil:
		actions = e.failLocked(r, sr, Failed, "its writes were refused: "+writeErr.Error())
	default:
		if body != nil {
			r.state.obj.Body = body
		}
		t := c.Finished
		if t.IsZero() {
			t = e.o.Now()
		}
		sr.State, sr.Finished, sr.WaitingOn = Done, &t, nil
		sr.Writes = sortedKeys(res.Writes)
		if h := r.units[r.idx[sr.Name]].hash; h != "" {
			sr.ReadHash = h
			r.state.success[sr.Name] = h
		}
		actions = e.advanceLocked(r)
	}
	e.mu.Unlock()
	for _, act := range actions {
		act()
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// failLocked ends an attempt that failed or timed out: retry if the step
// has attempts left, else finish it in that state.
func (e *Engine) failLocked(r *run, sr *StepRecord, state, reason string) []func() {
	s := r.g.Step(sr.Name)
	if sr.Attempts <= s.Retry {
		delay := e.o.Backoff(sr.Attempts + 1)
		if state == TimedOut {
			sr.Reason = fmt.Sprintf("attempt %d %s; retrying in %s", sr.Attempts, reason, delay)
		} else {
			sr.Reason = fmt.Sprintf("attempt %d failed: %s; retrying in %s", sr.Attempts, reason, delay)
		}
		sr.State = Waiting
		sr.WaitingOn = []string{"retry in " + delay.String()}
		gen := r.rec.ID
		name := sr.Name
		return []func(){func() {
			time.AfterFunc(delay, func() {
				e.mu.Lock()
				if r.state.active != r || r.rec.ID != gen {
					e.mu.Unlock()
					return
				}
				sr := &r.rec.Steps[r.idx[name]]
				if finished(sr.State) {
					e.mu.Unlock()
					return
				}
				actions := e.dispatchLocked(r, sr, s)
				actions = append(actions, e.recordLocked(r))
				e.mu.Unlock()
				for _, a := range actions {
					a()
				}
			})
		}, e.recordLocked(r)}
	}
	t := e.o.Now()
	sr.State, sr.Reason, sr.Finished, sr.WaitingOn = state, reason, &t, nil
	return e.advanceLocked(r)
}

func (e *Engine) timeout(itemID string) {
	e.mu.Lock()
	a := e.items[itemID]
	if a == nil {
		e.mu.Unlock()
		return
	}
	e.setItemLocked(itemID, nil)
	r := a.run
	sr := &r.rec.Steps[r.idx[a.unit]]
	actions := []func(){func() { e.o.Dispatcher.Cancel(itemID) }}
	actions = append(actions, e.failLocked(r, sr, TimedOut, "timed out after "+a.item.Timeout.String())...)
	e.mu.Unlock()
	for _, act := range actions {
		act()
	}
}

// cancelUnitLocked withdraws a unit's attempt in flight.
func (e *Engine) cancelUnitLocked(r *run, unit string) []func() {
	id := r.units[r.idx[unit]].item
	a := e.items[id]
	if a == nil || a.run != r {
		return nil
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	e.setItemLocked(id, nil)
	return []func(){func() { e.o.Dispatcher.Cancel(id) }}
}

// setItemLocked records an attempt in flight, or with a nil one, that it
// is no longer.
func (e *Engine) setItemLocked(id string, a *attempt) {
	e.itemsMu.Lock()
	defer e.itemsMu.Unlock()
	if a == nil {
		delete(e.items, id)
		return
	}
	e.items[id] = a
}

// supersedeLocked ends a run that a newer state replaced.
func (e *Engine) supersedeLocked(r *run) []func() {
	var actions []func()
	t := e.o.Now()
	for i := range r.rec.Steps {
		sr := &r.rec.Steps[i]
		if finished(sr.State) {
			continue
		}
		if sr.State == Running || r.units[r.idx[sr.Name]].sent {
			actions = append(actions, e.cancelUnitLocked(r, sr.Name)...)
		}
		sr.State, sr.Reason, sr.Finished, sr.WaitingOn = Cancelled, "superseded by a newer run", &t, nil
	}
	r.rec.State, r.rec.Reason, r.rec.Finished = RunSuperseded, "superseded by a newer run", &t
	st := r.state
	st.active = nil
	e.endedLocked(st, r.rec)
	return append(actions, e.recordLocked(r))
}

// recordLocked notes that r's record changed and returns an action that
// schedules handing it to the recorder, if none is scheduled yet. The
// record of a run that ended is handed over at once.
func (e *Engine) recordLocked(r *run) func() {
	if e.o.Recorder == nil {
		return noAction
	}
	if r.rec.State != RunRunning {
		delete(e.changed, r)
		e.o.Recorder.Record(copyRecord(r.rec))
		return noAction
	}
	if e.o.RecordAfter > 0 && e.o.Now().Sub(r.rec.Started) < e.o.RecordAfter {
		return noAction
	}
	first := len(e.changed) == 0
	e.changed[r] = true
	if !first {
		return noAction
	}
	return func() { time.AfterFunc(RecordDelay, e.flushRecords) }
}

func noAction() {}

// flushRecords hands a copy of each changed run's record to the recorder.
func (e *Engine) flushRecords() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for r := range e.changed {
		e.o.Recorder.Record(copyRecord(r.rec))
	}
	clear(e.changed)
}

func copyRecord(r RunRecord) RunRecord {
	c := r
	c.Steps = make([]StepRecord, len(r.Steps))
	copy(c.Steps, r.Steps)
	for i := range c.Steps {
		c.Steps[i].Log = append([]LogLine(nil), r.Steps[i].Log...)
		c.Steps[i].WaitingOn = append([]string(nil), r.Steps[i].WaitingOn...)
	}
	return c
}

// Runs returns an object's runs, newest first: the active one, then the
// finished ones the engine keeps.
func (e *Engine) Runs(ref Ref) []RunRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.objs[ref.key()]
	if st == nil {
		return nil
	}
	var out []RunRecord
	if st.active != nil {
		out = append(out, copyRecord(st.active.rec))
	}
	for i := len(st.history) - 1; i >= 0; i-- {
		out = append(out, copyRecord(st.history[i]))
	}
	return out
}

// Item returns a work item in flight, for servers that deliver them.
func (e *Engine) Item(itemID string) (*WorkItem, bool) {
	e.itemsMu.RLock()
	defer e.itemsMu.RUnlock()
	a := e.items[itemID]
	if a == nil {
		return nil, false
	}
	return a.item, true
}
