package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/ownership"
	"skiff.dev/skiff/store"
	"skiff.dev/skiff/workflow"
)

// Orchestrator wires the workflow engine to the store: it keeps the
// compiled controller registrations, feeds object changes to the engine,
// applies steps' field writes with ownership enforced, records runs in etcd
// and holds the queue remote controllers and nodes take work from.
type Orchestrator struct {
	store  *store.Store
	kv     *clientv3.Client
	prefix string
	log    *slog.Logger

	Engine *workflow.Engine
	Local  *workflow.Local
	Queue  *workflow.Queue
	rec    *runRecorder

	builtins []workflow.Registration

	addrs   addressBook  // addresses the ipam steps handed out lately
	places  *placeCache  // nodes and what pods hold on them, for the scheduler
	leases  *leaseTable  // when each node was last heard from
	life    *lifecycle   // the nodes controller
	netMu   sync.Mutex   // guards network
	network netip.Prefix // the cluster's pod prefix, once read

	pinned *pinnedController // PinnedDeployments' pods, for the pinned controller

	mu       sync.RWMutex
	compiled *workflow.Compiled // guarded by mu
	// reloading serializes reloads, so that the last to finish read the
	// store last: the watch's and an apply's (server.applyObject).
	reloading sync.Mutex

	name, apiURL string // this server, for the election; "" leads alone (SetIdentity)
	leaderState
}

// NewOrchestrator builds an orchestrator with the named built-in
// controllers (DefaultBuiltins if nil); Run runs it.
func NewOrchestrator(st *store.Store, kv *clientv3.Client, prefix string, log *slog.Logger, builtins []string) (*Orchestrator, error) {
	if builtins == nil {
		builtins = DefaultBuiltins
	}
	regs, err := Builtins(builtins)
	if err != nil {
		return nil, err
	}
	o := &Orchestrator{store: st, kv: kv, prefix: prefix, log: log, Queue: &workflow.Queue{}, builtins: regs, places: newPlaceCache()}
	o.termChanged = make(chan struct{})
	o.leaderTTL = DefaultLeaderTTL
	o.leases = newLeaseTable(kv, prefix)
	o.leases.onRenew = o.places.renewed
	o.life = newLifecycle(o)
	o.pinned = newPinnedController(o)
	o.rec = &runRecorder{kv: kv, prefix: prefix + "/runs/", marks: prefix + "/steps/", dirty: map[string]workflow.RunRecord{}, log: log, o: o}
	o.Local = &workflow.Local{Fallback: o.Queue}
	// The engine keeps no finished runs: the recorder has them (Runs). It
	// records a run once it ends, or once it has run for 5 s.
	o.Engine = workflow.NewEngine(workflow.Options{Objects: o, Dispatcher: o.Local, Recorder: recorders{o.rec, o.pinned},
		KeepRuns: -1, RecordAfter: 5 * time.Second})
	o.Local.Engine = o.Engine
	handlers := map[string]workflow.Handler{"admission": o.admit, "scheduler": o.schedule, "ipam": o.ipam, "pinned": o.pinned.step}
	for _, r := range regs {
		if h := handlers[r.Name]; h != nil {
			o.Local.Handle(r.Name, o.leaderOnly(h))
		}
	}
	c, err := workflow.Compile(regs)
	if err != nil {
		return nil, fmt.Errorf("built-in controllers do not verify: %w", err)
	}
	o.compiled = c
	o.Engine.SetGraphs(c.Graphs)
	return o, nil
}

// admit is the built-in admission step: the pod's spec must still be
// valid, and every privilege it requests must be granted by a Grant for
// its namespace and labels. A privilege a pod did not request it never
// gets, whatever is granted.
func (o *Orchestrator) admit(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	spec, _ := item.Object["spec"].(map[string]any)
	labels := map[string]string{}
	if l, ok := item.Object["labels"].(map[string]any); ok {
		for k, v := range l {
			labels[k], _ = v.(string)
		}
	}
	// One decode serves the whole step: the spec is validated as on
	// create, and its typed form says what privileges to look up.
	obj, typed, err := api.ValidateObject(api.Object{Kind: item.Kind, Name: item.Name, Namespace: item.Namespace, Labels: labels, Spec: spec})
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	ps, _ := typed.(*api.PodSpec)
	if ps != nil && len(ps.Privileges) == 0 {
		return workflow.Result{} // nothing to grant
	}
	missing, err := o.ungranted(ctx, &obj)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	if len(missing) > 0 {
		return workflow.Result{Err: fmt.Sprintf("privilege %s is not granted to pods in namespace %s: an operator grants it with a Grant (see docs/security.md)",
			strings.Join(missing, ", "), obj.Namespace)}
	}
	if ps != nil {
		log("privileges granted", map[string]any{"privileges": ps.Privileges})
	}
	return workflow.Result{}
}

// recheckGrants marks pods whose requested privileges are no longer all
// granted (status.admission.ungranted), and clears the mark when they are.
func (o *Orchestrator) recheckGrants(ctx context.Context) {
	pods, _, err := o.store.List(ctx, "Pod", "")
	if err != nil {
		o.log.Warn("recheck grants", "err", err)
		return
	}
	for i := range pods {
		pod := &pods[i]
		missing, err := o.ungranted(ctx, pod)
		if err != nil {
			continue
		}
		adm, _ := pod.Status["admission"].(map[string]any)
		marked := adm != nil && adm["ungranted"] != nil
		var value any
		switch {
		case len(missing) > 0:
			list := make([]any, len(missing))
			for i, m := range missing {
				list[i] = m
			}
			if marked && fmt.Sprint(adm["ungranted"]) == fmt.Sprint(list) {
				continue
			}
			value = map[string]any{"ungranted": list}
		case marked:
			value = nil
		default:
			continue
		}
		if _, err := o.Write(ctx, toRef(pod.Ref()), "controller:admission", "", map[string]any{"status.admission": value}); err != nil {
			o.log.Warn("mark ungranted privileges", "pod", pod.Ref(), "err", err)
		}
	}
}

// ungranted lists the privileges a pod requests that no Grant allows.
func (o *Orchestrator) ungranted(ctx context.Context, pod *api.Object) ([]string, error) {
	spec, err := api.DecodeSpecAs[api.PodSpec](pod)
	if err != nil || len(spec.Privileges) == 0 {
		return nil, err
	}
	grants, _, err := o.store.List(ctx, "Grant", "")
	if err != nil {
		return nil, err
	}
	var specs []*api.GrantSpec
	for i := range grants {
		if g, err := api.DecodeSpecAs[api.GrantSpec](&grants[i]); err == nil {
			specs = append(specs, g)
		}
	}
	var missing []string
	for _, p := range spec.Privileges {
		ok := false
		for _, g := range specs {
			if g.Allows(pod.Namespace, pod.Labels, p) {
				ok = true
				break
			}
		}
		if !ok {
			missing = append(missing, string(p))
		}
	}
	return missing, nil
}

// Compiled returns the current registrations.
func (o *Orchestrator) Compiled() *workflow.Compiled {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.compiled
}

// Owners returns the current field owners.
func (o *Orchestrator) Owners() *ownership.Registry { return o.Compiled().Owners }

// registrations turns Controller objects into registrations after the
// built-ins, oldest first, so that in a conflict the incumbent wins.
func (o *Orchestrator) registrations(objs []api.Object) ([]workflow.Registration, []error) {
	objs = append([]api.Object(nil), objs...)
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].Meta.Created.Before(objs[j].Meta.Created) })
	regs := append([]workflow.Registration(nil), o.builtins...)
	builtin := map[string]bool{}
	for _, r := range regs {
		builtin[r.Name] = true
	}
	var errs []error
	for _, obj := range objs {
		if builtin[obj.Name] {
			continue
		}
		spec, err := api.DecodeSpecAs[api.ControllerSpec](&obj)
		if err != nil {
			errs = append(errs, fmt.Errorf("controller/%s: %v", obj.Name, err))
			continue
		}
		regs = append(regs, workflow.Registration{Name: obj.Name, Spec: *spec})
	}
	return regs, errs
}

// Verify checks a Controller object against every other registration, as
// if it replaced the one of the same name.
func (o *Orchestrator) Verify(ctx context.Context, obj api.Object) error {
	for _, r := range o.builtins {
		if r.Name == obj.Name {
			return &statusError{kind: errForbidden, msg: fmt.Sprintf("controller/%s is built in and cannot be registered again", obj.Name)}
		}
	}
	objs, _, err := o.store.List(ctx, "Controller", "")
	if err != nil {
		return err
	}
	others := objs[:0]
	for _, x := range objs {
		if x.Name != obj.Name {
			others = append(others, x)
		}
	}
	regs, _ := o.registrations(others)
	newcomer, errs := o.registrations([]api.Object{obj})
	if len(errs) > 0 {
		return errs[0]
	}
	regs = append(regs, newcomer[len(o.builtins):]...)
	if _, err := workflow.Compile(regs); err != nil {
		var ve *workflow.VerifyError
		if errors.As(err, &ve) {
			return &VerifyFailed{Problems: ve.Problems}
		}
		return err
	}
	return nil
}

// VerifyFailed lists why a registration was refused.
type VerifyFailed struct{ Problems []string }

func (e *VerifyFailed) Error() string {
	return "registration refused: " + strings.Join(e.Problems, "; ")
}
func (e *VerifyFailed) Is(t error) bool { return t == api.ErrInvalid }

// reload compiles the stored registrations and hands the graphs to the
// engine. A registration that no longer compiles with the others is left
// out and logged; the API refuses such writes, so this means damage.
func (o *Orchestrator) reload(ctx context.Context) error {
	o.reloading.Lock()
	defer o.reloading.Unlock()
	objs, _, err := o.store.List(ctx, "Controller", "")
	if err != nil {
		return err
	}
	regs, errs := o.registrations(objs)
	for _, e := range errs {
		o.log.Error("controller registration ignored", "err", e)
	}
	c, err := workflow.Compile(regs)
	for err != nil && len(regs) > len(o.builtins) {
		o.log.Error("controller registrations do not verify together; dropping the newest", "err", err)
		regs = regs[:len(regs)-1]
		c, err = workflow.Compile(regs)
	}
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.compiled = c
	o.mu.Unlock()
	o.Engine.SetGraphs(c.Graphs)
	return nil
}

// RetryFailedEvery is how often failed pod runs are tried again.
const RetryFailedEvery = time.Minute

// Run runs the orchestrator until ctx ends: on every server, the watches
// that keep what the API needs (registrations, the placement cache, node
// leases); on the leader (see leader.go), the engine, fed with every
// object of a kind with workflows and then their changes, and the cluster
// controllers.
func (o *Orchestrator) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	var lone *term
	if o.name == "" {
		// No election: the follows feed the engine from their first list.
		lone = &term{ctx: ctx}
		o.begin(lone)
		o.cur.Store(lone)
	} else {
		run(func() { o.followLeader(ctx) })
	}
	run(func() { o.leases.run(ctx) })
	// Nodes coming, going or changing can make a failed placement work:
	// failed pod runs are retried a second after a burst of node changes.
	var pending atomic.Bool
	retry := func(t *term) {
		if o.leading(t) && pending.CompareAndSwap(false, true) {
			time.AfterFunc(time.Second, func() {
				pending.Store(false)
				if o.leading(t) {
					o.Engine.RetryFailed("Pod")
				}
			})
		}
	}
	run(func() {
		// Nodes have workflows of their own (readiness).
		o.follow(ctx, "Node", func(ev store.Event, t *term) {
			o.places.event(ev)
			o.life.nodeEvent(ev)
			o.feed(ev, t)
			retry(t)
		}, func(objs []api.Object, t *term) {
			o.places.list("Node", objs)
			o.life.nodeList(objs)
			o.submitAll(ctx, objs, t)
			retry(t)
		})
	})
	run(func() {
		o.follow(ctx, "Controller", func(store.Event, *term) {
			if err := o.reload(ctx); err != nil {
				o.log.Error("reload controllers", "err", err)
			}
		}, func([]api.Object, *term) {
			if err := o.reload(ctx); err != nil {
				o.log.Error("load controllers", "err", err)
			}
		})
	})
	// The scheduler's cache takes in each change before the engine, so a
	// placement never sees an older pod or node than the run it is part of.
	run(func() {
		o.follow(ctx, "Pod", func(ev store.Event, t *term) {
			o.places.event(ev)
			o.pinned.podEvent(ev)
			o.feed(ev, t)
		}, func(objs []api.Object, t *term) {
			o.places.list("Pod", objs)
			o.pinned.podList(objs)
			o.submitAll(ctx, objs, t)
		})
	})
	o.lead(ctx, lone)
}

// feed gives the engine a change, if t leads still.
func (o *Orchestrator) feed(ev store.Event, t *term) {
	if !o.leading(t) {
		return
	}
	if ev.Type == store.Deleted {
		o.Engine.Forget(toRef(ev.Object.Ref()))
		o.rec.forget(toRef(ev.Object.Ref()))
		return
	}
	o.Engine.Submit(toObject(ev.Object))
}

// submitAll gives the engine a listed kind, if t leads still, with the
// runs recorded and the step completions stored for each object, so that
// steps that succeeded before are not repeated and runs in progress are
// resumed.
func (o *Orchestrator) submitAll(ctx context.Context, objs []api.Object, t *term) {
	if !o.leading(t) {
		return
	}
	for _, obj := range objs {
		if runs, done, err := o.rec.loadAll(ctx, &obj); err == nil && len(runs)+len(done) > 0 {
			o.Engine.Seed(toRef(obj.Ref()), runs, done)
		}
		o.Engine.Submit(toObject(obj))
	}
}

// follow lists a kind, then watches it, listing again when the watch
// falls behind or fails, or when a term of this server's starts or ends.
// The callbacks get the term the list was made in (nil if none): the
// engine is fed only with a list and the changes after it, in one term.
func (o *Orchestrator) follow(ctx context.Context, kind string, onEvent func(store.Event, *term), onList func([]api.Object, *term)) {
	for ctx.Err() == nil {
		changed := o.termChange()
		t := o.term()
		objs, rev, err := o.store.List(ctx, kind, "")
		if err != nil {
			o.log.Error("list for workflows", "kind", kind, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		onList(objs, t)
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-wctx.Done():
			}
		}()
		// The engine, the scheduler's cache and the pinned controller
		// modify no object (store/shared.go): they take them shared.
		for ev := range o.store.WatchShared(wctx, kind, "", rev) {
			if ev.Err != nil {
				o.log.Warn("watch for workflows ended; listing again", "kind", kind, "err", ev.Err)
				break
			}
			onEvent(ev, t)
		}
		cancel()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

func toRef(r api.Ref) workflow.Ref {
	return workflow.Ref{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
}

func fromRef(r workflow.Ref) api.Ref {
	return api.Ref{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
}

func toObject(obj api.Object) workflow.Object {
	return workflow.Object{Ref: toRef(obj.Ref()), Generation: obj.Meta.Generation,
		Deleting: obj.Meta.Deleting != nil, Created: obj.Meta.Created, Body: bodyOf(&obj)}
}

// bodyOf is the part of an object fields are owned and read in.
func bodyOf(o *api.Object) map[string]any { return o.Body() }

// setBody writes a body's labels, spec and status back into an object.
func setBody(o *api.Object, b map[string]any) { o.SetBody(b) }

// Write applies a successful step's field writes, as its changer, with
// field ownership enforced. It implements workflow.Objects.
func (o *Orchestrator) Write(ctx context.Context, ref workflow.Ref, changer, step string, writes map[string]any) (map[string]any, error) {
	cause := "step " + step
	if step == "" {
		cause = "status"
	}
	return o.writeAs(ctx, ref, changer, cause, writes)
}

// writeAs applies field writes as changer, for cause, with field
// ownership enforced, and returns the object's new body. Leader work
// (ctx in a term) writes with the term's guard.
func (o *Orchestrator) writeAs(ctx context.Context, ref workflow.Ref, changer, cause string, writes map[string]any) (map[string]any, error) {
	body, _, err := o.writeFields(ctx, ref, o.asLeader(ctx, store.Write{Changer: changer, Cause: cause}), writes)
	return body, err
}

// asLeader adds to w the guard of the term leader work runs in (ctx's):
// the write is applied only while that term lasts. Other writes (the
// API's, on any server) are returned as they are.
func (o *Orchestrator) asLeader(ctx context.Context, w store.Write) store.Write {
	if t := termOf(ctx); t != nil {
		w.Guard = t.guard
	}
	return w
}

// writeFields applies field writes as w.Changer with field ownership
// enforced, and returns the object's new body and what the store did.
func (o *Orchestrator) writeFields(ctx context.Context, ref workflow.Ref, w store.Write, writes map[string]any) (map[string]any, store.Op, error) {
	id, err := identity.Parse(w.Changer)
	if err != nil {
		return nil, "", err
	}
	edits := make([]fieldpath.Edit, 0, len(writes))
	for p, v := range writes {
		at, err := fieldpath.Parse(p)
		if err != nil {
			return nil, "", fmt.Errorf("write %q: %v", p, err)
		}
		edits = append(edits, fieldpath.Edit{Op: fieldpath.Op{Path: p, Value: v, Delete: v == nil}, At: at})
	}
	slices.SortFunc(edits, func(a, b fieldpath.Edit) int { return strings.Compare(a.Path, b.Path) })
	var body map[string]any
	// The new body shares all the writes leave alone with cur, which is
	// the store's own (MutateShared): nothing here may modify it.
	res, err := o.store.MutateShared(ctx, fromRef(ref), w,
		func(cur *api.Object) (*api.Object, error) {
			if cur == nil {
				return nil, fmt.Errorf("%s: %w", ref, store.ErrNotFound)
			}
			old := bodyOf(cur)
			next, err := fieldpath.ApplyEdits(old, edits) // copy on write: old stays as it was
			if err != nil {
				return nil, err
			}
			nb, _ := next.(map[string]any)
			if err := o.Owners().CheckWrite(ref.Kind, ref.String(), id, cur.Meta.Owner, "", old, nb); err != nil {
				return nil, err
			}
			n := *cur
			setBody(&n, nb)
			body = nb
			return &n, nil
		})
	return body, res.Op, err
}

// Complete applies a successful step's writes and stores its completion
// with them, in one transaction guarded by the term the step was
// dispatched in; a step that writes nothing (or nothing new) has its
// completion stored alone. It implements workflow.Completer.
func (o *Orchestrator) Complete(ctx context.Context, ref workflow.Ref, c *workflow.Completion) (map[string]any, error) {
	t := o.term()
	if t == nil || t.epoch != c.Epoch {
		return nil, errNotLeader
	}
	ctx, cancel := inTerm(ctx, t)
	defer cancel()
	mark := o.rec.markOp(ref, c)
	if len(c.Fields) > 0 {
		w := store.Write{Changer: c.Changer, Cause: "step " + c.Step, Guard: t.guard, Also: []clientv3.Op{mark}}
		body, op, err := o.writeFields(ctx, ref, w, c.Fields)
		if err != nil || op != store.Unchanged {
			return body, err
		}
	}
	return nil, t.marks.put(ctx, mark)
}

// leaderOnly runs an in-process controller's step in the current term:
// its writes are guarded, and it is cancelled when the term ends.
func (o *Orchestrator) leaderOnly(h workflow.Handler) workflow.Handler {
	return func(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
		t := o.term()
		if t == nil {
			return workflow.Result{Err: errNotLeader.Error()}
		}
		ctx, cancel := inTerm(ctx, t)
		defer cancel()
		return h(ctx, item, log)
	}
}

// Remove deletes an object whose down run finished, with the completions
// of its steps. It implements workflow.Objects.
func (o *Orchestrator) Remove(ctx context.Context, ref workflow.Ref) error {
	t := o.term()
	if t == nil {
		return errNotLeader
	}
	_, err := o.store.Delete(ctx, fromRef(ref), store.Write{Changer: "controller:workflow", Cause: "delete: stopped",
		Guard: t.guard, Also: []clientv3.Op{o.rec.dropMarksOp(ref)}})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		o.log.Error("remove after deletion run", "object", ref, "err", err)
	}
	return err
}

// HasDown reports whether deleting objects of kind goes through a run.
func (o *Orchestrator) HasDown(kind string) bool {
	for _, g := range o.Compiled().Graphs {
		if g.Kind == kind && g.Phase == workflow.Down {
			return true
		}
	}
	return false
}

// Runs returns an object's runs, newest first: the one in progress from
// the engine, the finished ones from the recorder (the engine keeps none).
func (o *Orchestrator) Runs(ctx context.Context, ref api.Ref) ([]workflow.RunRecord, error) {
	active := o.Engine.Runs(toRef(ref))
	runs, err := o.rec.load(ctx, ref)
	if err != nil {
		return nil, err
	}
	out := active
	for i := len(runs) - 1; i >= 0; i-- {
		if !slices.ContainsFunc(active, func(a workflow.RunRecord) bool { return a.ID == runs[i].ID }) {
			out = append(out, runs[i])
		}
	}
	return out, nil
}

// runRecorder writes run records to etcd, coalescing changes to one write
// per run every flush interval, in transactions of many runs, and keeps
// the newest keepRuns per object.
type runRecorder struct {
	kv       *clientv3.Client
	prefix   string // of run records: PREFIX/runs/
	marks    string // of step completions: PREFIX/steps/
	log      *slog.Logger
	o        *Orchestrator // whose term guards the writes
	mu       sync.Mutex
	dirty    map[string]workflow.RunRecord // key → newest copy; guarded by mu
	flushing map[string]workflow.RunRecord // what flush is writing; guarded by mu
	gone     []string                      // objects deleted, to forget (runIndex); guarded by mu
	enc      runEncoder                    // used by flush only
	idx      runIndex
}

const keepRuns = 10

// recordOps bounds the operations of one transaction of the recorder
// (etcd's default limit is 128).
const recordOps = 64

func (r *runRecorder) objPrefix(kind, ns, name string) string {
	if ns == "" {
		ns = "_"
	}
	return r.prefix + kind + "/" + ns + "/" + name + "/"
}

// Record takes a run's record to write; a server that does not lead
// records nothing (its engine is being reset).
func (r *runRecorder) Record(rec workflow.RunRecord) {
	if !r.o.IsLeader() {
		return
	}
	r.mu.Lock()
	r.dirty[r.objPrefix(rec.Kind, rec.Namespace, rec.Name)+rec.ID] = rec
	r.mu.Unlock()
}

// run writes records until ctx (a term's) ends, then what is left, if
// the term's guard still holds (a leader that steps down), and drops the
// rest, and what it knew of the runs stored.
func (r *runRecorder) run(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			r.flush(fctx)
			cancel()
			r.mu.Lock()
			clear(r.dirty)
			r.gone = nil
			r.mu.Unlock()
			r.idx.mu.Lock()
			r.idx.reset()
			r.idx.mu.Unlock()
			return
		case <-t.C:
			r.flush(ctx)
		}
	}
}

// objWrite is what flush wrote of an object's runs.
type objWrite struct {
	ids    []string // the runs written
	ended  bool     // one of them ended: drop the runs beyond keepRuns
	rev    int64    // the etcd revision of the write
	failed bool     // a write of them failed
}

// runDrop is a run to delete, of an object.
type runDrop struct{ obj, id string }

// flush writes the runs recorded since the last flush, guarded by the
// term of ctx.
func (r *runRecorder) flush(ctx context.Context) {
	var guard []clientv3.Cmp
	t := termOf(ctx)
	if t != nil {
		guard = t.guard
	}
	r.mu.Lock()
	dirty, gone := r.dirty, r.gone
	r.dirty, r.flushing, r.gone = map[string]workflow.RunRecord{}, dirty, nil
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.flushing = nil
		r.mu.Unlock()
	}()
	r.scan(ctx, t)
	objs := map[string]*objWrite{} // by key under r.prefix
	var puts []clientv3.Op
	var putObjs []*objWrite // of each put
	for key, rec := range dirty {
		b, err := r.enc.encode(&rec)
		if err != nil {
			continue
		}
		obj := key[len(r.prefix) : len(key)-len(rec.ID)]
		w := objs[obj]
		if w == nil {
			w = &objWrite{}
			objs[obj] = w
		}
		w.ids = append(w.ids, rec.ID)
		w.ended = w.ended || rec.State != workflow.RunRunning
		puts = append(puts, clientv3.OpPut(key, b))
		putObjs = append(putObjs, w)
	}
	for i := 0; i < len(puts); i += recordOps {
		j := min(i+recordOps, len(puts))
		resp, err := r.kv.Txn(ctx).If(guard...).Then(puts[i:j]...).Commit()
		if err = guarded(resp, err); err != nil {
			r.log.Warn("record runs", "runs", j-i, "err", err)
		}
		for _, w := range putObjs[i:j] {
			if err != nil {
				w.failed = true
			} else {
				w.rev = resp.Header.Revision
			}
		}
	}
	drops, unknown := r.noteWrites(t, objs)
	drops = append(drops, r.readRuns(ctx, t, unknown)...)
	r.dropRuns(ctx, t, guard, drops)
	r.idx.mu.Lock()
	if r.idx.use(t) {
		for _, obj := range gone {
			if ids, ok := r.idx.ids[obj]; ok && ids == "" {
				delete(r.idx.ids, obj) // no runs: it need not be noted
				continue
			}
			r.idx.drop(obj)
			// A read of obj before now may lack writes of its runs.
			r.idx.floor = max(r.idx.floor, r.idx.wrote)
		}
	}
	r.idx.mu.Unlock()
}

// noteWrites notes in the index the runs flush wrote, and returns the runs
// to drop of the objects it knows one of whose runs ended, and those of
// such objects it does not know (to read).
func (r *runRecorder) noteWrites(t *term, objs map[string]*objWrite) (drops []runDrop, unknown []string) {
	x := &r.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	use := x.use(t)
	for obj, w := range objs {
		if !use {
			if w.ended {
				unknown = append(unknown, obj)
			}
			continue
		}
		x.wrote = max(x.wrote, w.rev)
		ids, ok := x.known(obj)
		if w.failed {
			// It may have been written or not: read it.
			x.drop(obj)
			x.floor = math.MaxInt64
			ok = false
		}
		for _, id := range w.ids {
			if ok {
				ids, ok = ids.with(id)
			}
		}
		if !ok {
			// A read of obj from before w lacks it.
			x.drop(obj)
			x.floor = max(x.floor, w.rev)
			if w.ended {
				unknown = append(unknown, obj)
			}
			continue
		}
		if n := ids.count() - keepRuns; w.ended && n > 0 {
			// Run IDs sort by start time: drop the oldest.
			for i := range n {
				drops = append(drops, runDrop{obj, ids.at(i)})
			}
			ids = ids[n*idLen:]
		}
		x.put(obj, ids)
	}
	return drops, unknown
}

// readRuns reads the runs of objects the index does not know, notes them
// and returns those beyond the newest keepRuns.
func (r *runRecorder) readRuns(ctx context.Context, t *term, objs []string) []runDrop {
	var drops []runDrop
	slices.Sort(objs)
	for chunk := range slices.Chunk(objs, recordOps) {
		gets := make([]clientv3.Op, len(chunk))
		for i, obj := range chunk {
			gets[i] = clientv3.OpGet(r.prefix+obj, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		}
		resp, err := r.kv.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			r.log.Warn("read recorded runs", "err", err)
			continue
		}
		r.idx.mu.Lock()
		use := r.idx.use(t)
		for i, rr := range resp.Responses {
			kvs := rr.GetResponseRange().GetKvs()
			ids := make([]string, len(kvs))
			for j, kv := range kvs {
				ids[j] = string(kv.Key[len(r.prefix)+len(chunk[i]):])
			}
			// Run IDs sort by start time, as etcd returns keys: drop the
			// oldest.
			n := max(len(ids)-keepRuns, 0)
			for _, id := range ids[:n] {
				drops = append(drops, runDrop{chunk[i], id})
			}
			if use {
				r.idx.set(chunk[i], ids[n:])
			}
		}
		r.idx.mu.Unlock()
	}
	return drops
}

// dropRuns deletes runs. The index holds already the runs kept; an
// object whose runs were not all deleted becomes unknown.
func (r *runRecorder) dropRuns(ctx context.Context, t *term, guard []clientv3.Cmp, drops []runDrop) {
	for chunk := range slices.Chunk(drops, recordOps) {
		dels := make([]clientv3.Op, len(chunk))
		for i, d := range chunk {
			dels[i] = clientv3.OpDelete(r.prefix + d.obj + d.id)
		}
		resp, err := r.kv.Txn(ctx).If(guard...).Then(dels...).Commit()
		err = guarded(resp, err)
		r.idx.mu.Lock()
		switch {
		case !r.idx.use(t):
		case err != nil:
			for _, d := range chunk {
				r.idx.drop(d.obj)
			}
			r.idx.floor = math.MaxInt64
		default:
			r.idx.wrote = max(r.idx.wrote, resp.Header.Revision)
		}
		r.idx.mu.Unlock()
		if err != nil {
			r.log.Warn("drop old runs", "err", err)
		}
	}
}

// load reads an object's recorded runs, oldest first, with those not
// yet written.
func (r *runRecorder) load(ctx context.Context, ref api.Ref) ([]workflow.RunRecord, error) {
	p := r.objPrefix(ref.Kind, ref.Namespace, ref.Name)
	t := r.o.term()
	resp, err := r.kv.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	r.seed(t, p[len(r.prefix):], resp.Header.Revision, resp.Kvs)
	return r.withUnwritten(ref, resp.Kvs), nil
}

// withUnwritten decodes an object's stored runs and adds those not yet
// written, oldest first.
func (r *runRecorder) withUnwritten(ref api.Ref, kvs []*mvccpb.KeyValue) []workflow.RunRecord {
	p := r.objPrefix(ref.Kind, ref.Namespace, ref.Name)
	byID := map[string]workflow.RunRecord{}
	for _, kv := range kvs {
		var rec workflow.RunRecord
		if decodeRun(kv.Value, &rec) == nil {
			byID[rec.ID] = rec
		}
	}
	r.mu.Lock()
	for _, m := range []map[string]workflow.RunRecord{r.flushing, r.dirty} {
		for key, rec := range m {
			if strings.HasPrefix(key, p) {
				byID[rec.ID] = rec
			}
		}
	}
	r.mu.Unlock()
	out := make([]workflow.RunRecord, 0, len(byID))
	for _, rec := range byID {
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out[max(len(out)-keepRuns, 0):]
}
