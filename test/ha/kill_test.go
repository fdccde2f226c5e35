package ha

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
	"skiff.dev/skiff/lab"
	"skiff.dev/skiff/workflow"
)

// The write stream of TestKillLeader: writers × writesPerWriter writes,
// each writer to pods of its own; every specEvery-th write of a writer
// changes its pod's spec (a new generation, so a new run), the others
// only a label.
const (
	writers         = 4
	podsPerWriter   = 2
	writesPerWriter = 500
	specEvery       = 50
	killAfter       = 500 // acknowledged writes before the kill
)

// ack is one write a client saw acknowledged.
type ack struct {
	pod  string
	rev  int64
	seq  string // its label seq
	gen  int    // its env GEN
	sent time.Time
	at   time.Time
}

// writeLog is what the writers saw acknowledged, and when.
type writeLog struct {
	mu     sync.Mutex
	acks   []ack
	killAt time.Time
	killed chan struct{} // closed once killAfter writes are acknowledged
}

func (w *writeLog) add(a ack) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acks = append(w.acks, a)
	if len(w.acks) == killAfter {
		close(w.killed)
	}
}

// TestKillLeader kills -9 the server leading the controllers (made the
// etcd raft leader too when it can be arranged) while four clients
// stream 2,000 writes to eight pods. The API answers writes again through
// the other servers within 5 s; every write a client saw acknowledged is
// in its object's history at the revision acknowledged, with the content
// written; and the runs the writes started are neither lost nor doubled:
// each pod's last generation has a finished run, every step of a test
// controller ran once per generation it completed, and every pod runs.
func TestKillLeader(t *testing.T) {
	l, admin := startHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	image := pushBusybox(t, l)

	// A controller of the test's own, with a cluster step in every pod's
	// run: it sees every execution of its step.
	st := serveStamp(t, ctx, l, admin)

	var names []string
	for w := range writers {
		for p := range podsPerWriter {
			name := fmt.Sprintf("ha-%d-%d", w, p)
			names = append(names, name)
			if _, err := admin.Apply(ctx, pod(name, image, 0, map[string]string{"seq": "start"}), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range names {
		waitFor(t, ctx, 2*time.Minute, "pod "+name+" running", func() error { return podDone(ctx, admin, name) })
	}

	leader := arrangeLeader(t, ctx, l)
	t.Logf("killing %s, which leads the controllers (etcd raft leader: %v)", leader.name, leader.etcd)

	log := &writeLog{killed: make(chan struct{})}
	urls := l.URLs()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		// Each writer starts at another server: some at the one killed.
		c := labClient(t, l, append(urls[w%len(urls):], urls[:w%len(urls)]...)...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := write(ctx, c, w, image, log); err != nil {
				errs <- fmt.Errorf("writer %d: %w", w, err)
			}
		}()
	}
	select {
	case <-log.killed:
	case <-ctx.Done():
		t.Fatal("the writers did not get to the kill")
	}
	log.mu.Lock()
	log.killAt = time.Now()
	log.mu.Unlock()
	if err := l.KillServer(leader.name); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// The API answered again through the others within 5 s: the first
	// write sent after the kill and acknowledged.
	var first *ack
	for i, a := range log.acks {
		if a.sent.After(log.killAt) && (first == nil || a.at.Before(first.at)) {
			first = &log.acks[i]
		}
	}
	if first == nil {
		t.Fatal("no write acknowledged after the kill")
	}
	gap := first.at.Sub(log.killAt)
	t.Logf("%d writes acknowledged; first write after the kill acknowledged %v after it (pod %s revision %d)", len(log.acks), gap.Round(time.Millisecond), first.pod, first.rev)
	if gap >= 5*time.Second {
		t.Errorf("the API answered a write %v after the kill of %s: want within 5 s", gap, leader.name)
	}

	// A new leader, of the others, once the killed one's election lease
	// (3 s) ran out: the writes may all be done before (they go through
	// any server; only the controllers wait for the election).
	waitFor(t, ctx, 15*time.Second, "a new controllers' leader", func() error {
		nctl, _, err := l.Leaders(ctx)
		switch {
		case err != nil:
			return err
		case nctl == leader.name:
			return fmt.Errorf("%s still leads the controllers after its kill", nctl)
		}
		return nil
	})

	// Every acknowledged write is in its object's history, with what
	// was written.
	checkHistory(t, ctx, admin, log.acks)

	// No run lost: each pod's last generation has a finished run and its
	// stamp, and runs. No run doubled: one run per generation, and no
	// step ran again after its completion was acknowledged.
	for _, name := range names {
		waitFor(t, ctx, 2*time.Minute, "pod "+name+"'s last generation done", func() error { return podDone(ctx, admin, name) })
	}
	for _, name := range names {
		runs, err := admin.Runs(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		per := map[int64]int{}
		for _, r := range runs {
			if r.Phase == "up" && r.Cause == "" {
				per[r.Generation]++
			}
		}
		for gen, n := range per {
			if n > 1 {
				t.Errorf("pod %s generation %d has %d runs, want one", name, gen, n)
			}
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.again) > 0 {
		t.Errorf("steps ran again after their completion was acknowledged: %s", strings.Join(st.again, ", "))
	}
	t.Logf("step stamp: %d executions, %d completions acknowledged", st.executions, len(st.acked))
}

// leaderInfo is the server the test kills.
type leaderInfo struct {
	name string
	etcd bool // also the etcd raft leader
}

// arrangeLeader finds the controllers' leader and tries to make it the
// etcd raft leader too: while they differ, it restarts the controllers'
// leader (a clean stop resigns), which hands the controllers to another
// server, up to four times.
func arrangeLeader(t *testing.T, ctx context.Context, l *lab.Lab) leaderInfo {
	t.Helper()
	for try := 0; ; try++ {
		ctl, etcd, err := l.Leaders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ctl == etcd || try == 4 {
			return leaderInfo{ctl, ctl == etcd}
		}
		if err := l.StopServer(ctl); err != nil {
			t.Fatal(err)
		}
		if err := l.StartServer(ctx, ctl); err != nil {
			t.Fatal(err)
		}
		// Wait until the restarted server has caught up with the others.
		waitFor(t, ctx, time.Minute, "servers healthy after a restart", func() error {
			st, err := l.ServersStatus(ctx)
			if err != nil {
				return err
			}
			for _, s := range st.Servers {
				if s.Health != "healthy" {
					return fmt.Errorf("server %s: %s %s", s.Name, s.Health, s.Error)
				}
			}
			return nil
		})
	}
}

// write is one writer: writesPerWriter writes with expected revisions to
// its pods, logging those acknowledged. A write that fails is not
// acknowledged: the writer reads the pod again and goes on.
func write(ctx context.Context, c *client.Client, w int, image string, log *writeLog) error {
	type state struct {
		rev int64
		gen int
	}
	pods := map[string]*state{}
	var names []string
	for p := range podsPerWriter {
		name := fmt.Sprintf("ha-%d-%d", w, p)
		names = append(names, name)
		o, err := c.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
		if err != nil {
			return err
		}
		pods[name] = &state{rev: o.Meta.Revision}
	}
	for i := 1; i <= writesPerWriter; i++ {
		name := names[i%len(names)]
		s := pods[name]
		gen := s.gen
		if i%specEvery == 0 {
			gen++
		}
		seq := fmt.Sprintf("w%d-%d", w, i)
		sent := time.Now()
		res, err := c.Apply(ctx, pod(name, image, gen, map[string]string{"seq": seq}), s.rev)
		if err == nil {
			log.add(ack{pod: name, rev: res.Object.Meta.Revision, seq: seq, gen: gen, sent: sent, at: time.Now()})
			s.rev, s.gen = res.Object.Meta.Revision, gen
			continue
		}
		if ctx.Err() != nil {
			return err
		}
		// Not acknowledged (the servers were electing, or the answer was
		// lost): read where the pod is and go on from there.
		for {
			o, gerr := c.Get(ctx, api.Ref{Kind: "Pod", Namespace: "default", Name: name})
			if gerr == nil {
				s.rev = o.Meta.Revision
				s.gen = envGen(o)
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%v; then %v", err, gerr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// envGen is a pod's env GEN.
func envGen(o api.Object) int {
	cs, _ := o.Spec["containers"].([]any)
	if len(cs) == 0 {
		return -1
	}
	c, _ := cs[0].(map[string]any)
	env, _ := c["env"].(map[string]any)
	var g int
	fmt.Sscan(str(env["GEN"]), &g)
	return g
}

// checkHistory checks every acknowledged write against the store: its
// revision is in the pod's history, and the pod at that revision holds
// what was written.
func checkHistory(t *testing.T, ctx context.Context, c *client.Client, acks []ack) {
	t.Helper()
	byPod := map[string][]ack{}
	for _, a := range acks {
		byPod[a.pod] = append(byPod[a.pod], a)
	}
	pods := make([]string, 0, len(byPod))
	for p := range byPod {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	checked := 0
	for _, p := range pods {
		ref := api.Ref{Kind: "Pod", Namespace: "default", Name: p}
		hist, err := c.History(ctx, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		revs := map[int64]bool{}
		for _, e := range hist {
			revs[e.Rev] = true
		}
		for _, a := range byPod[p] {
			if !revs[a.rev] {
				t.Errorf("pod %s: acknowledged revision %d (seq %s) is not in its history", p, a.rev, a.seq)
				continue
			}
			o, err := c.At(ctx, ref, a.rev)
			if err != nil {
				t.Errorf("pod %s at revision %d: %v", p, a.rev, err)
				continue
			}
			if o.Labels["seq"] != a.seq || envGen(o) != a.gen {
				t.Errorf("pod %s at revision %d: seq %q GEN %d, acknowledged seq %q GEN %d", p, a.rev, o.Labels["seq"], envGen(o), a.seq, a.gen)
			}
			checked++
		}
	}
	t.Logf("%d acknowledged writes found in the history with their content", checked)
}

// podDone says why a pod's last generation is not done yet: its run
// finished, the stamp step wrote its generation, and it runs.
func podDone(ctx context.Context, c *client.Client, name string) error {
	ref := api.Ref{Kind: "Pod", Namespace: "default", Name: name}
	o, err := c.Get(ctx, ref)
	if err != nil {
		return err
	}
	runs, err := c.Runs(ctx, ref)
	if err != nil {
		return err
	}
	var last *workflow.RunRecord
	for i, r := range runs {
		if r.Generation == o.Meta.Generation && r.Phase == "up" {
			last = &runs[i]
			break // newest first
		}
	}
	switch {
	case last == nil:
		return fmt.Errorf("no run of generation %d", o.Meta.Generation)
	case last.State != workflow.RunDone:
		return fmt.Errorf("run of generation %d is %s", o.Meta.Generation, last.State)
	case fmt.Sprint(o.Status["stamp"]) != fmt.Sprint(o.Meta.Generation):
		return fmt.Errorf("stamp %v, want generation %d", o.Status["stamp"], o.Meta.Generation)
	case o.Status["phase"] != "Running":
		return fmt.Errorf("phase %v", o.Status["phase"])
	}
	return nil
}

// stamp is the test's controller: its step stamp writes the pod's
// generation to status.stamp. It counts executions and notes a step
// executed again after its completion was acknowledged.
type stamp struct {
	mu         sync.Mutex
	executions int
	acked      map[string]bool // pod/generation whose completion a server took
	again      []string
}

func serveStamp(t *testing.T, ctx context.Context, l *lab.Lab, admin *client.Client) *stamp {
	t.Helper()
	reg := api.Object{Kind: "Controller", Name: "stamp", Spec: map[string]any{
		"owns": []any{"Pod:status.stamp"},
		"steps": []any{map[string]any{
			"name": "stamp", "kind": "Pod", "phase": "up", "where": "cluster",
			"after": []any{"scheduled"}, "before": []any{"storage"}, "requiredBy": []any{"storage"},
			"timeout": "30s",
		}},
	}}
	if _, err := admin.Apply(ctx, reg, 0); err != nil {
		t.Fatal(err)
	}
	tok, err := l.Skiff("token", "create", "--controller", "stamp")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := client.LoadConfig(l.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token = strings.TrimSpace(tok)
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &stamp{acked: map[string]bool{}}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		for sctx.Err() == nil {
			items, err := c.TakeWork(sctx, 5*time.Second, 64)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for _, it := range items {
				key := fmt.Sprintf("%s/%d", it.Name, it.Generation)
				s.mu.Lock()
				s.executions++
				if s.acked[key] {
					s.again = append(s.again, key)
				}
				s.mu.Unlock()
				err := c.CompleteWork(sctx, it.ID, workflow.Result{Writes: map[string]any{"status.stamp": it.Generation}})
				if err == nil {
					s.mu.Lock()
					s.acked[key] = true
					s.mu.Unlock()
				} else if !errors.Is(err, context.Canceled) {
					t.Logf("stamp %s: complete: %v", key, err)
				}
			}
		}
	}()
	return s
}
