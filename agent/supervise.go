package agent

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"time"

	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

// supervise walks every pod this node runs: records containers that
// exited (their exit codes survive any agent restart: the shim wrote
// them), restarts them as their restart policy says, starts pods whose
// containers vanished (a cold boot), and uploads status that changed.
func (a *Agent) supervise(ctx context.Context) {
	pods, err := a.st.all()
	if err != nil {
		a.log.Error("read agent state", "err", err)
		return
	}
	for _, p := range pods {
		if ctx.Err() != nil {
			return
		}
		a.supervisePod(ctx, p)
	}
	// Uploads come after the local work of the round, so that a server
	// that does not answer never holds up a restart.
	a.uploadStatus(ctx, pods)
	if time.Since(a.grantsChecked) > grantCheckEvery {
		a.grantsChecked = time.Now()
		a.checkGrants(ctx, pods)
	}
}

// grantCheckEvery is how often the agent asks whether the privileges its
// pods run with are still granted.
const grantCheckEvery = 10 * time.Second

// checkGrants learns, for pods that run with privileges, which of them
// are no longer granted (the server marks them in status.admission); such
// pods keep running, but their containers are not restarted.
func (a *Agent) checkGrants(ctx context.Context, pods []*podRecord) {
	if a.c == nil {
		return
	}
	for _, p := range pods {
		if len(p.Spec.Privileges) == 0 {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, uploadTimeout)
		o, err := a.c.Get(gctx, api.Ref{Kind: "Pod", Namespace: p.Namespace, Name: p.Name})
		cancel()
		if err != nil {
			return // keep what was last known
		}
		var ungranted []string
		adm, _ := o.Status["admission"].(map[string]any)
		list, _ := adm["ungranted"].([]any)
		for _, x := range list {
			if s, ok := x.(string); ok {
				ungranted = append(ungranted, s)
			}
		}
		unlock := a.lockPod(p.Namespace, p.Name)
		if cur, err := a.st.get(p.Namespace, p.Name); err == nil && cur != nil && !reflect.DeepEqual(cur.Ungranted, ungranted) {
			cur.Ungranted = ungranted
			a.st.put(cur)
		}
		unlock()
	}
}

// uploadTimeout bounds one status upload: a server that accepts
// connections but does not answer (hung, or behind half a partition) must
// not stall supervision.
const uploadTimeout = 5 * time.Second

// uploadStatus sends the server the pods' status it does not have yet. It
// stops at the first upload no server answered: the others would wait
// for nothing too, and the next round tries again.
func (a *Agent) uploadStatus(ctx context.Context, pods []*podRecord) {
	if a.c == nil {
		return
	}
	for _, p := range pods {
		if ctx.Err() != nil || !a.uploadPod(ctx, p.Namespace, p.Name) {
			return
		}
	}
}

// uploadPod uploads one pod's status if the server lacks it, without
// holding the pod's lock meanwhile. It returns false when no server
// answered.
func (a *Agent) uploadPod(ctx context.Context, ns, name string) bool {
	unlock := a.lockPod(ns, name)
	p, err := a.st.get(ns, name)
	unlock()
	if err != nil || p == nil || p.Uploaded || p.Status == nil {
		return true
	}
	st := p.Status
	uctx, cancel := context.WithTimeout(ctx, uploadTimeout)
	err = a.c.PatchStatus(uctx, api.Ref{Kind: "Pod", Namespace: ns, Name: name}, map[string]any{
		"status.phase": st["phase"], "status.containers": st["containers"], "status.message": st["message"]})
	cancel()
	if err != nil {
		var apiErr *client.Error
		if errors.As(err, &apiErr) {
			a.log.Debug("upload pod status", "pod", ns+"/"+name, "err", err)
			return true // the server answered (say, the pod is gone there): go on with the others
		}
		return false
	}
	unlock = a.lockPod(ns, name)
	defer unlock()
	// Uploaded only if the status did not change while it was on its way.
	if p, err := a.st.get(ns, name); err == nil && p != nil && reflect.DeepEqual(p.Status, st) && !p.Uploaded {
		p.Uploaded = true
		a.st.put(p)
	}
	return true
}

func (a *Agent) supervisePod(ctx context.Context, p *podRecord) {
	unlock := a.lockPod(p.Namespace, p.Name)
	defer unlock()
	// Re-read under the lock: a step may have changed it meanwhile.
	p, err := a.st.get(p.Namespace, p.Name)
	if err != nil || p == nil {
		return
	}
	if p.Generation == 0 || p.Fenced {
		// Only its network is made so far (netup): there is nothing to
		// supervise, and no status to tell, before its start step. Or it
		// is fenced: stopped until a server says it is still here.
		return
	}
	now := time.Now()
	changed := false
	// In start order, as the start step: after a cold boot a container
	// comes back after those it names in after and requires, and only once
	// those it requires run.
	up := map[api.Name]bool{}
	for _, c := range p.Spec.StartOrder() {
		cr := p.Containers[string(c.Name)]
		if cr == nil || cr.ID == "" {
			continue
		}
		st, err := a.rt.State(cr.ID)
		switch {
		case err == nil && st.Status == runtime.StatusRunning:
			up[c.Name] = true
			if cr.Failures > 0 && now.Sub(cr.StartedAt) > 10*time.Minute {
				cr.Failures, changed = 0, true
			}
			continue
		case err == nil && st.Status == runtime.StatusExited:
			if cr.ExitCode == nil || !cr.EndedAt.Equal(st.FinishedAt.UTC()) {
				code := st.ExitCode
				cr.ExitCode, cr.EndedAt = &code, st.FinishedAt.UTC()
				cr.Failures++
				cr.NextStart = now.Add(backoff(cr.Failures))
				changed = true
				a.log.Info("container exited", "pod", p.Namespace+"/"+p.Name, "container", c.Name, "exitCode", code)
			}
		default:
			// Gone or unknown: the node rebooted or the shim was killed.
			if cr.ExitCode == nil {
				unknown := -1
				cr.ExitCode, cr.EndedAt, changed = &unknown, now.UTC(), true
			}
		}
		if !restartWanted(p.Spec.Restart, *cr.ExitCode) || now.Before(cr.NextStart) {
			continue
		}
		if len(p.Ungranted) > 0 {
			msg := "not restarted: it runs with privileges no longer granted: " + strings.Join(p.Ungranted, ", ")
			if cr.LastError != msg {
				cr.LastError, changed = msg, true
			}
			continue
		}
		if !allUp(c.Requires, up) {
			continue // next round
		}
		a.removeContainer(ctx, cr.ID)
		cr.Restarts++
		// After a reboot the pod's network namespace is gone too.
		netns, err := a.podNetNS(p)
		if err != nil {
			// Back off like a failed start: without it this would retry,
			// and count a restart, every round.
			cr.LastError = err.Error()
			cr.Failures++
			cr.NextStart = now.Add(backoff(cr.Failures))
			changed = true
			continue
		}
		p.NetNS = netns
		if err := a.startContainer(ctx, p, c, cr); err != nil {
			a.log.Warn("restart container", "pod", p.Namespace+"/"+p.Name, "container", c.Name, "err", err)
		} else {
			up[c.Name] = true
		}
		changed = true
	}
	st := asStored(a.status(p))
	if !reflect.DeepEqual(st, p.Status) {
		p.Status, p.Uploaded, changed = st, false, true
	}
	if changed {
		a.st.put(p)
	}
}

func allUp(names []api.Name, up map[api.Name]bool) bool {
	for _, n := range names {
		if !up[n] {
			return false
		}
	}
	return true
}

// asStored returns a status as the state file gives it back (numbers as
// float64): compared with the one kept, an unchanged status is equal, and
// is neither written nor uploaded again.
func asStored(st map[string]any) map[string]any {
	b, err := json.Marshal(st)
	if err != nil {
		return st
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return st
	}
	return out
}

// restartWanted applies a restart policy to an exit code.
func restartWanted(policy string, code int) bool {
	switch policy {
	case api.RestartNever:
		return false
	case api.RestartOnFailure:
		return code != 0
	default:
		return true
	}
}
