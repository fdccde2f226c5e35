package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/controllers/pinned"
	"skiff.dev/skiff/store"
	"skiff.dev/skiff/workflow"
)

// The built-in controller "pinned" keeps each PinnedDeployment's pods
// matching its split (controllers/pinned plans the moves).
//
// Its step rollout runs for a PinnedDeployment when its spec changes (the
// operator moved nextPercent or edited a template): it creates, updates
// in place and deletes the PinnedDeployment's pods, waits for them to
// become ready, and plans again, until the pods match (the step succeeds,
// status.state complete) or a pod it waits on is stuck (the step fails
// with that pod's reason, status.state stalled). The pods it makes carry
// meta.owner pinneddeployment/NAME: their labels and spec are its own,
// and operators are told to edit the PinnedDeployment instead.
//
// When pods change under a PinnedDeployment whose rollout is not running
// (one is deleted, loses its node, stops being ready), its workflow runs
// again (Engine.Rerun), at most once a second, with the same spec. That is
// why rollout declares no reads of PinnedDeployment: a step with declared
// reads is skipped while they are unchanged.
//
// Pods are seen through the orchestrator's pod watch (podEvent, podList),
// and the pinned controller's own writes enter that view at once, so a
// plan never counts a pod twice or misses one it just made.
type pinnedController struct {
	o *Orchestrator

	mu        sync.Mutex
	pods      map[string]map[string]*pinnedPod // namespace → name → pod; guarded by mu
	wake      map[string]chan struct{}         // PinnedDeployment key → closed when its pods change; guarded by mu
	active    map[string]int                   // PinnedDeployment key → rollout steps running; guarded by mu
	confirmed map[string]string                // pod key → spec hash its run finished with; guarded by mu
	ends      map[string]runEnd                // pod key → how its last finished run ended; guarded by mu
	rerunAt   map[string]*time.Timer           // PinnedDeployment key → pending rerun; guarded by mu
}

// pinnedPod is what the controller keeps of a pod.
type pinnedPod struct {
	obj api.Object
}

func newPinnedController(o *Orchestrator) *pinnedController {
	return &pinnedController{o: o, pods: map[string]map[string]*pinnedPod{}, wake: map[string]chan struct{}{},
		active: map[string]int{}, confirmed: map[string]string{}, ends: map[string]runEnd{}, rerunAt: map[string]*time.Timer{}}
}

// runEnd is how a pod's last finished run ended.
type runEnd struct {
	gen    int64
	done   bool
	reason string // why it failed
}

// recorders hands run records to several recorders.
type recorders []workflow.Recorder

func (rs recorders) Record(rec workflow.RunRecord) {
	for _, r := range rs {
		r.Record(rec)
	}
}

// Record learns how pods' runs end, from the engine: a pod is ready once
// its run for its spec is done.
func (c *pinnedController) Record(rec workflow.RunRecord) {
	if rec.Kind != "Pod" || rec.Phase != workflow.Up || (rec.State != workflow.RunDone && rec.State != workflow.RunFailed) {
		return
	}
	key := pdKey(rec.Namespace, rec.Name)
	end := runEnd{gen: rec.Generation, done: rec.State == workflow.RunDone}
	if !end.done {
		end.reason = failedStep(rec)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.ends[key]; ok && cur.gen > end.gen {
		return
	}
	c.ends[key] = end
	if p := c.pods[rec.Namespace][rec.Name]; p != nil {
		if name, ok := api.PinnedOwnerName(p.obj.Meta.Owner); ok {
			c.wakeLocked(pdKey(rec.Namespace, name))
		}
	}
}

// lastEnd returns how a pod's last run ended; ok is false when none is
// known. What the engine did not report since this server started (runs
// that ended before) is read once from the recorded runs.
func (c *pinnedController) lastEnd(pod *api.Object) (runEnd, bool) {
	key := pdKey(pod.Namespace, pod.Name)
	c.mu.Lock()
	end, ok := c.ends[key]
	c.mu.Unlock()
	if ok {
		return end, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	runs, err := c.o.Runs(ctx, pod.Ref())
	if err != nil {
		return runEnd{}, false
	}
	end = runEnd{gen: -1}
	for _, r := range runs {
		if r.Phase == workflow.Up && (r.State == workflow.RunDone || r.State == workflow.RunFailed) {
			end = runEnd{gen: r.Generation, done: r.State == workflow.RunDone}
			if !end.done {
				end.reason = failedStep(r)
			}
			break
		}
	}
	c.mu.Lock()
	if _, raced := c.ends[key]; !raced {
		c.ends[key] = end
	}
	c.mu.Unlock()
	return end, true
}

const pinnedChanger = "controller:pinned"

func pdKey(ns, name string) string { return ns + "/" + name }

// podList replaces the view with a fresh list of every pod.
func (c *pinnedController) podList(objs []api.Object) {
	c.mu.Lock()
	c.pods = map[string]map[string]*pinnedPod{}
	owners := map[string]bool{}
	for i := range objs {
		c.putLocked(objs[i])
		if name, ok := api.PinnedOwnerName(objs[i].Meta.Owner); ok {
			owners[pdKey(objs[i].Namespace, name)] = true
		}
	}
	for k := range owners {
		c.wakeLocked(k)
	}
	c.mu.Unlock()
}

// podEvent takes in a change of a pod seen by the orchestrator's watch.
func (c *pinnedController) podEvent(ev store.Event) {
	pod := ev.Object
	name, owned := api.PinnedOwnerName(pod.Meta.Owner)
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Type == store.Deleted {
		if ns := c.pods[pod.Namespace]; ns != nil {
			delete(ns, pod.Name)
		}
		delete(c.confirmed, pdKey(pod.Namespace, pod.Name))
		delete(c.ends, pdKey(pod.Namespace, pod.Name))
	} else if !c.putLocked(pod) {
		return // older than what the controller wrote itself
	}
	if !owned {
		return
	}
	key := pdKey(pod.Namespace, name)
	c.wakeLocked(key)
	if c.active[key] == 0 {
		c.maybeRerunLocked(pod.Namespace, name)
	}
}

// putLocked stores a pod unless the view has a newer revision of it.
func (c *pinnedController) putLocked(pod api.Object) bool {
	ns := c.pods[pod.Namespace]
	if ns == nil {
		ns = map[string]*pinnedPod{}
		c.pods[pod.Namespace] = ns
	}
	if cur := ns[pod.Name]; cur != nil && cur.obj.Meta.Revision > pod.Meta.Revision {
		return false
	}
	ns[pod.Name] = &pinnedPod{obj: pod}
	return true
}

// put records a pod the controller itself just wrote.
func (c *pinnedController) put(pod api.Object) {
	c.mu.Lock()
	c.putLocked(pod)
	c.mu.Unlock()
}

func (c *pinnedController) wakeLocked(key string) {
	if ch := c.wake[key]; ch != nil {
		close(ch)
		delete(c.wake, key)
	}
}

// changed returns a channel closed at the next change of key's pods.
func (c *pinnedController) changed(key string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.wake[key]
	if ch == nil {
		ch = make(chan struct{})
		c.wake[key] = ch
	}
	return ch
}

// maybeRerunLocked starts the PinnedDeployment's workflow again, a second
// from now, if its pods no longer match its last spec.
func (c *pinnedController) maybeRerunLocked(ns, name string) {
	key := pdKey(ns, name)
	if c.rerunAt[key] != nil {
		return
	}
	c.rerunAt[key] = time.AfterFunc(time.Second, func() {
		c.mu.Lock()
		delete(c.rerunAt, key)
		busy := c.active[key] > 0
		c.mu.Unlock()
		t := c.o.term()
		if busy || t == nil {
			return // only the leader runs workflows
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ref := api.Ref{Kind: "PinnedDeployment", Namespace: ns, Name: name}
		pd, err := c.o.store.Get(ctx, ref)
		if err != nil || pd.Meta.Deleting != nil {
			return
		}
		spec, err := api.DecodeSpecAs[api.PinnedDeploymentSpec](&pd)
		if err != nil {
			return
		}
		if obs := c.observe(ref, spec); !obs.complete() && c.o.leading(t) {
			c.o.Engine.Rerun(toObject(pd), "pods changed: "+obs.summary())
		}
	})
}

// observation is one look at a PinnedDeployment's pods and the plan made
// from it.
type observation struct {
	plan    pinned.Plan
	pods    map[string]api.Object // its pods not being deleted, by name
	gone    []string              // its pods being deleted
	strays  []string              // pods its selector matches that it did not make
	refresh []string              // its pods whose spec.keepImages is not their template's
	targets map[string]*api.Object
}

func (ob *observation) summary() string {
	return fmt.Sprintf("previous %d/%d ready, next %d/%d ready",
		ob.plan.Previous.Ready, ob.plan.Previous.Desired, ob.plan.Next.Ready, ob.plan.Next.Desired)
}

// observe looks at a PinnedDeployment's pods and plans.
func (c *pinnedController) observe(ref api.Ref, spec *api.PinnedDeploymentSpec) *observation {
	ob := &observation{pods: map[string]api.Object{}, targets: map[string]*api.Object{}}
	for _, v := range []string{api.Previous, api.Next} {
		t := podFromTemplate(ref, spec, v, "template")
		ob.targets[v] = &t
	}
	owner := api.PinnedOwner(ref.Name)
	sel := spec.Selector()
	c.mu.Lock()
	var mine []api.Object
	for _, p := range c.pods[ref.Namespace] {
		switch {
		case p.obj.Meta.Owner == owner && p.obj.Meta.Deleting != nil:
			ob.gone = append(ob.gone, p.obj.Name)
		case p.obj.Meta.Owner == owner:
			mine = append(mine, p.obj)
		case p.obj.Meta.Deleting == nil && matchesAll(p.obj.Labels, sel):
			ob.strays = append(ob.strays, p.obj.Name)
		}
	}
	c.mu.Unlock()
	sort.Strings(ob.gone)
	sort.Strings(ob.strays)
	prev, next := spec.Split()
	in := pinned.Input{Replicas: spec.Replicas, DesiredPrevious: prev, DesiredNext: next, MaxSurge: spec.Surge()}
	for _, pod := range mine {
		ob.pods[pod.Name] = pod
		ready, stuck := c.readiness(&pod)
		in.Pods = append(in.Pods, pinned.Pod{Name: pod.Name,
			MatchesPrevious: sameTemplate(&pod, ob.targets[api.Previous]), MatchesNext: sameTemplate(&pod, ob.targets[api.Next]),
			InPlacePrevious: fitsInPlace(&pod, ob.targets[api.Previous]), InPlaceNext: fitsInPlace(&pod, ob.targets[api.Next]),
			Ready: ready, Stuck: stuck})
	}
	ob.plan = pinned.Make(in)
	for name, v := range ob.plan.Version {
		if !reflect.DeepEqual(ob.pods[name].Spec["keepImages"], ob.targets[v].Spec["keepImages"]) {
			ob.refresh = append(ob.refresh, name)
		}
	}
	sort.Strings(ob.refresh)
	return ob
}

// complete: the pods match the split, are ready, and keep both versions'
// images.
func (ob *observation) complete() bool { return ob.plan.Complete && len(ob.refresh) == 0 }

func matchesAll(l, sel map[string]string) bool {
	for k, v := range sel {
		if l[k] != v {
			return false
		}
	}
	return true
}

// podFromTemplate is the pod a version's template makes, spec defaulted
// as the store keeps it. Its spec.keepImages names the other version's
// images, so that its node keeps them (agent/gc.go): moving the share
// back then never waits on a pull.
func podFromTemplate(pd api.Ref, spec *api.PinnedDeploymentSpec, version, name string) api.Object {
	t := spec.Template(version)
	typed := t.Spec
	typed.KeepImages = nil
	own := map[string]bool{}
	for _, c := range typed.Containers {
		own[c.Image] = true
	}
	for _, img := range spec.Images() {
		if !own[img] {
			typed.KeepImages = append(typed.KeepImages, img)
		}
	}
	pod := api.Object{Kind: "Pod", Namespace: pd.Namespace, Name: name, Labels: map[string]string{}}
	for k, v := range t.Labels {
		pod.Labels[k] = v
	}
	b, _ := json.Marshal(&typed)
	json.Unmarshal(b, &pod.Spec)
	if n, err := api.Normalize(pod); err == nil {
		pod = n
	}
	pod.Meta.Owner = api.PinnedOwner(pd.Name)
	return pod
}

// sameTemplate reports whether a pod has a template's labels and spec,
// whatever images it keeps.
func sameTemplate(pod, t *api.Object) bool {
	return reflect.DeepEqual(pod.Labels, t.Labels) && reflect.DeepEqual(withoutKeep(pod.Spec), withoutKeep(t.Spec))
}

// withoutKeep is a pod spec without keepImages, which changes no container.
func withoutKeep(spec map[string]any) map[string]any {
	if _, ok := spec["keepImages"]; !ok {
		return spec
	}
	out := make(map[string]any, len(spec))
	for k, v := range spec {
		if k != "keepImages" {
			out[k] = v
		}
	}
	return out
}

// fitsInPlace reports whether a pod can become the template's in place:
// the scheduler keeps a pod on its node when its placement is the same and
// it asks for no more cpu or memory; otherwise it is replaced.
func fitsInPlace(pod, t *api.Object) bool {
	ps, err1 := api.DecodeSpecAs[api.PodSpec](pod)
	ts, err2 := api.DecodeSpecAs[api.PodSpec](t)
	if err1 != nil || err2 != nil {
		return false
	}
	if !reflect.DeepEqual(ps.Placement, ts.Placement) {
		return false
	}
	pr, tr := podRequest(ps), podRequest(ts)
	return tr.CPUMilli <= pr.CPUMilli && tr.MemoryBytes <= pr.MemoryBytes
}

// readiness says whether a pod runs its current spec with every container
// up, and, if not, whether it is stuck and why: its run for this spec
// failed, or a container it started keeps exiting.
func (c *pinnedController) readiness(pod *api.Object) (ready bool, stuck string) {
	key := pdKey(pod.Namespace, pod.Name)
	hash := specHash(pod)
	up := containersUp(pod)
	c.mu.Lock()
	confirmed := c.confirmed[key] == hash
	c.mu.Unlock()
	if confirmed {
		if up {
			return true, ""
		}
		return false, crashReason(pod)
	}
	end, ok := c.lastEnd(pod)
	switch {
	case !ok || end.gen != pod.Meta.Generation:
		return false, ""
	case end.done:
		c.mu.Lock()
		c.confirmed[key] = hash
		c.mu.Unlock()
		if up {
			return true, ""
		}
		return false, crashReason(pod)
	}
	return false, pod.Ref().String() + ": " + end.reason
}

// specHash identifies a pod's spec, for readiness: a pod is ready once a
// run finished with it. Images it keeps do not count: changing them
// restarts nothing.
func specHash(pod *api.Object) string {
	b, _ := json.Marshal(withoutKeep(pod.Spec))
	return string(b)
}

// containersUp reports whether the pod's node says every container runs.
func containersUp(pod *api.Object) bool {
	if phase, _ := pod.Status["phase"].(string); phase != "Running" {
		return false
	}
	list, _ := pod.Status["containers"].([]any)
	cs, _ := pod.Spec["containers"].([]any)
	if len(list) != len(cs) {
		return false
	}
	for _, e := range list {
		m, _ := e.(map[string]any)
		if m["state"] != "running" {
			return false
		}
	}
	return true
}

// crashReason says why a pod whose containers started is not running
// them, when a container exited or failed; "" while it just starts.
func crashReason(pod *api.Object) string {
	list, _ := pod.Status["containers"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		if m["state"] == "running" {
			continue
		}
		name, _ := m["name"].(string)
		if msg, _ := m["error"].(string); msg != "" {
			return fmt.Sprintf("%s: container %s: %s", pod.Ref(), name, msg)
		}
		if code, ok := m["exitCode"].(float64); ok {
			restarts, _ := m["restarts"].(float64)
			return fmt.Sprintf("%s: container %s exited with code %d (%d restarts): see skiff logs %s -c %s", pod.Ref(), name, int(code), int(restarts), pod.Name, name)
		}
	}
	return ""
}

// failedStep says which step of a failed run failed and why.
func failedStep(run workflow.RunRecord) string {
	for _, s := range run.Steps {
		if s.Target || !(s.State == workflow.Failed || s.State == workflow.TimedOut) || strings.HasPrefix(s.Reason, "dependency failed") {
			continue
		}
		return s.Name + " " + s.State + ": " + s.Reason
	}
	return run.Reason
}

// statusUpdateEvery bounds how often a rollout in progress writes its
// status (each write is a revision); state changes are written at once.
const statusUpdateEvery = 250 * time.Millisecond

// rollout is the pinned controller's step: move the PinnedDeployment's
// pods to its split, and report.
func (c *pinnedController) rollout(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	ref := api.Ref{Kind: "PinnedDeployment", Namespace: item.Namespace, Name: item.Name}
	pd := api.Object{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
	setBody(&pd, item.Object)
	spec, err := api.DecodeSpecAs[api.PinnedDeploymentSpec](&pd)
	if err != nil {
		return workflow.Result{Err: err.Error()}
	}
	key := pdKey(ref.Namespace, ref.Name)
	c.mu.Lock()
	c.active[key]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.active[key]--; c.active[key] <= 0 {
			delete(c.active, key)
		}
		c.mu.Unlock()
	}()
	prev, next := spec.Split()
	log("rolling out", map[string]any{"previous": prev, "next": next, "nextPercent": spec.NextPercent})
	var lastWrite time.Time
	var lastStatus *api.PinnedStatus
	report := func(st api.PinnedStatus, force bool) {
		if lastStatus != nil && reflect.DeepEqual(*lastStatus, st) {
			return
		}
		if !force && lastStatus != nil && lastStatus.State == st.State && time.Since(lastWrite) < statusUpdateEvery {
			return
		}
		if err := c.writeStatus(ctx, ref, st); err != nil {
			if ctx.Err() == nil {
				log("status not written", map[string]any{"err": err.Error()})
			}
			return
		}
		lastWrite, lastStatus = time.Now(), &st
	}
	reportedStrays := ""
	tick := time.NewTicker(time.Second) // a safety net: pod events and run ends wake it
	defer tick.Stop()
	for {
		changed := c.changed(key)
		ob := c.observe(ref, spec)
		if s := strings.Join(ob.strays, ", "); s != reportedStrays && s != "" {
			log("stray pods: they match the selector but neither template; delete them or change their labels", map[string]any{"pods": s, "selector": api.SelectorString(spec.Selector())})
			reportedStrays = s
		}
		st := pinnedStatus(item.Generation, spec, ob)
		switch {
		case ob.complete():
			report(st, true)
			log("complete", map[string]any{"previous": prev, "next": next})
			return workflow.Result{}
		case ob.plan.Empty() && ob.plan.Stuck != "":
			report(st, true)
			return workflow.Result{Err: "stalled: " + ob.plan.StuckReason + " (skiff why pod/" + ob.plan.Stuck + ")"}
		}
		report(st, false)
		if err := c.apply(ctx, ref, spec, ob, log); err != nil {
			if ctx.Err() != nil {
				return workflow.Result{Err: "cancelled"}
			}
			log("move failed; trying again", map[string]any{"err": err.Error()})
		}
		select {
		case <-ctx.Done():
			return workflow.Result{Err: "cancelled: " + context.Cause(ctx).Error()}
		case <-changed:
		case <-tick.C:
		}
	}
}

// pinnedStatus is the status an observation reports.
func pinnedStatus(gen int64, spec *api.PinnedDeploymentSpec, ob *observation) api.PinnedStatus {
	st := api.PinnedStatus{ObservedGeneration: gen, Previous: ob.plan.Previous, Next: ob.plan.Next,
		State: api.RolloutProgressing, Selector: api.SelectorString(spec.Selector()), Strays: ob.strays}
	switch {
	case ob.complete():
		st.State = api.RolloutComplete
	case ob.plan.Empty() && ob.plan.Stuck != "":
		st.State, st.Reason, st.StalledPod = api.RolloutStalled, ob.plan.StuckReason, ob.plan.Stuck
	}
	return st
}

// writeStatus writes a PinnedDeployment's status as the pinned controller.
func (c *pinnedController) writeStatus(ctx context.Context, ref api.Ref, st api.PinnedStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var tree map[string]any
	if err := json.Unmarshal(b, &tree); err != nil {
		return err
	}
	_, err = c.o.Write(ctx, toRef(ref), pinnedChanger, "rollout", map[string]any{"status": tree})
	return err
}

// createConcurrency bounds the pod writes a rollout has in flight.
const createConcurrency = 16

// apply carries out a plan: updates first, then creates, then deletes.
func (c *pinnedController) apply(ctx context.Context, ref api.Ref, spec *api.PinnedDeploymentSpec, ob *observation, log func(string, map[string]any)) error {
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
		sem   = make(chan struct{}, createConcurrency)
	)
	do := func(fn func() error) {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(); err != nil {
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
			}
		}()
	}
	for _, u := range ob.plan.Update {
		u := u
		do(func() error {
			if err := c.updatePod(ctx, ob.pods[u.Pod], ob.targets[u.Version]); err != nil {
				return err
			}
			log("updated in place", map[string]any{"pod": u.Pod, "version": u.Version})
			return nil
		})
	}
	for _, v := range ob.plan.Create {
		v := v
		do(func() error {
			name, err := c.createPod(ctx, ref, spec, v)
			if err != nil {
				return err
			}
			log("created", map[string]any{"pod": name, "version": v})
			return nil
		})
	}
	// Pods whose images to keep changed (a template's image did) are told
	// at once: that restarts nothing.
	for _, name := range ob.refresh {
		pod := ob.pods[name]
		do(func() error { return c.keepImages(ctx, pod, ob.targets[ob.plan.Version[name]].Spec["keepImages"]) })
	}
	for _, name := range ob.plan.Delete {
		name := name
		do(func() error {
			if err := c.deletePod(ctx, api.Ref{Kind: "Pod", Namespace: ref.Namespace, Name: name}); err != nil {
				return err
			}
			log("deleted", map[string]any{"pod": name, "version": ob.plan.Version[name]})
			return nil
		})
	}
	wg.Wait()
	return first
}

// createPod makes a new pod of a version, named after the
// PinnedDeployment with a random suffix.
func (c *pinnedController) createPod(ctx context.Context, ref api.Ref, spec *api.PinnedDeploymentSpec, version string) (string, error) {
	for attempt := 0; ; attempt++ {
		name := podName(ref.Name)
		pod := podFromTemplate(ref, spec, version, name)
		res, err := c.o.store.Mutate(ctx, pod.Ref(), c.o.asLeader(ctx, store.Write{Changer: pinnedChanger, Cause: "step rollout"}),
			func(cur *api.Object) (*api.Object, error) {
				if cur != nil {
					return nil, errNameTaken
				}
				if err := c.checkWrite(&pod, nil, &pod); err != nil {
					return nil, err
				}
				next := pod.DeepCopy()
				return &next, nil
			})
		if errors.Is(err, errNameTaken) && attempt < 5 {
			continue
		}
		if err != nil {
			return "", err
		}
		c.put(res.Object)
		return name, nil
	}
}

var errNameTaken = errors.New("pod name taken")

// podName is NAME-xxxxx, cut so that it stays a DNS label.
func podName(pd string) string {
	const letters = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	if len(pd) > 57 {
		pd = strings.TrimRight(pd[:57], "-")
	}
	return pd + "-" + string(b[:])
}

// updatePod writes a template's labels and spec into a pod: its node
// restarts the containers whose config changed, in place.
func (c *pinnedController) updatePod(ctx context.Context, pod api.Object, t *api.Object) error {
	return c.rewritePod(ctx, pod, func(next *api.Object) {
		next.Labels, next.Spec = t.DeepCopy().Labels, t.DeepCopy().Spec
	})
}

// keepImages writes the images a pod's node keeps for it.
func (c *pinnedController) keepImages(ctx context.Context, pod api.Object, images any) error {
	return c.rewritePod(ctx, pod, func(next *api.Object) {
		if images == nil {
			delete(next.Spec, "keepImages")
		} else {
			next.Spec["keepImages"] = images
		}
	})
}

// rewritePod changes a pod the PinnedDeployment still has, with field
// ownership checked; a pod gone or going meanwhile is left alone.
func (c *pinnedController) rewritePod(ctx context.Context, pod api.Object, change func(next *api.Object)) error {
	res, err := c.o.store.Mutate(ctx, pod.Ref(), c.o.asLeader(ctx, store.Write{Changer: pinnedChanger, Cause: "step rollout"}),
		func(cur *api.Object) (*api.Object, error) {
			if cur == nil || cur.Meta.Deleting != nil || cur.Meta.Owner != pod.Meta.Owner {
				return nil, nil
			}
			next := cur.DeepCopy()
			change(&next)
			if err := c.checkWrite(cur, cur, &next); err != nil {
				return nil, err
			}
			return &next, nil
		})
	if store.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	c.put(res.Object)
	return nil
}

// deletePod asks for a pod's deletion: its down workflow stops it.
func (c *pinnedController) deletePod(ctx context.Context, ref api.Ref) error {
	res, err := c.o.store.RequestDeletion(ctx, ref, c.o.asLeader(ctx, store.Write{Changer: pinnedChanger, Cause: "step rollout"}))
	if store.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	c.put(res.Object)
	return nil
}

// checkWrite enforces field ownership on the controller's pod writes, as
// the API does for everyone: it writes only pods it manages.
func (c *pinnedController) checkWrite(pod, cur, next *api.Object) error {
	var old map[string]any
	if cur != nil {
		old = bodyOf(cur)
	}
	id, _ := identity.Parse(pinnedChanger)
	return c.o.Owners().CheckWrite("Pod", pod.Ref().String(), id, next.Meta.Owner, pinnedChanger, old, bodyOf(next))
}

// scaleDown is the pinned controller's down step: a PinnedDeployment
// being deleted takes its pods with it, and goes once they are gone.
func (c *pinnedController) scaleDown(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	ref := api.Ref{Kind: "PinnedDeployment", Namespace: item.Namespace, Name: item.Name}
	owner := api.PinnedOwner(ref.Name)
	key := pdKey(ref.Namespace, ref.Name)
	for {
		changed := c.changed(key)
		var live, going []string
		c.mu.Lock()
		for _, p := range c.pods[ref.Namespace] {
			if p.obj.Meta.Owner != owner {
				continue
			}
			if p.obj.Meta.Deleting == nil {
				live = append(live, p.obj.Name)
			} else {
				going = append(going, p.obj.Name)
			}
		}
		c.mu.Unlock()
		if len(live)+len(going) == 0 {
			return workflow.Result{}
		}
		for _, name := range live {
			if err := c.deletePod(ctx, api.Ref{Kind: "Pod", Namespace: ref.Namespace, Name: name}); err != nil {
				return workflow.Result{Err: fmt.Sprintf("delete pod/%s: %v", name, err)}
			}
		}
		if len(live) > 0 {
			log("deleting pods", map[string]any{"pods": len(live)})
		}
		select {
		case <-ctx.Done():
			return workflow.Result{Err: "cancelled"}
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// step is the pinned controller's handler: its two steps.
func (c *pinnedController) step(ctx context.Context, item *workflow.WorkItem, log func(string, map[string]any)) workflow.Result {
	if item.Step == "scale-down" {
		return c.scaleDown(ctx, item, log)
	}
	return c.rollout(ctx, item, log)
}

// follow feeds PinnedDeployments to the engine until ctx ends
// (the leader's: ctx is its term's).
func (c *pinnedController) follow(ctx context.Context) {
	c.o.follow(ctx, "PinnedDeployment", c.o.feed, func(objs []api.Object, t *term) { c.o.submitAll(ctx, objs, t) })
}
