package agent

import (
	"context"
	"reflect"
	"time"

	"skiff.dev/skiff/agent/runtime"
	"skiff.dev/skiff/api"
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
}

func (a *Agent) supervisePod(ctx context.Context, p *podRecord) {
	unlock := a.lockPod(p.Namespace, p.Name)
	defer unlock()
	// Re-read under the lock: a step may have changed it meanwhile.
	p, err := a.st.get(p.Namespace, p.Name)
	if err != nil || p == nil {
		return
	}
	now := time.Now()
	changed := false
	for _, c := range p.Spec.Containers {
		cr := p.Containers[string(c.Name)]
		if cr == nil || cr.ID == "" {
			continue
		}
		st, err := a.rt.State(cr.ID)
		switch {
		case err == nil && st.Status == runtime.StatusRunning:
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
		a.removeContainer(ctx, cr.ID)
		cr.Restarts++
		// After a reboot the pod's network namespace is gone too.
		netns, err := a.rt.CreatePodNetNS(podNetName(p), runtime.IDRange{HostID: p.IDBase, Size: idRangeSize})
		if err != nil {
			cr.LastError = err.Error()
			changed = true
			continue
		}
		p.NetNS = netns
		if err := a.startContainer(ctx, p, c, cr); err != nil {
			a.log.Warn("restart container", "pod", p.Namespace+"/"+p.Name, "container", c.Name, "err", err)
		}
		changed = true
	}
	st := a.status(p)
	if !reflect.DeepEqual(st, p.Status) {
		p.Status, p.Uploaded, changed = st, false, true
	}
	if !p.Uploaded && a.c != nil {
		ref := api.Ref{Kind: "Pod", Namespace: p.Namespace, Name: p.Name}
		err := a.c.PatchStatus(ctx, ref, map[string]any{
			"status.phase": st["phase"], "status.containers": st["containers"], "status.message": st["message"]})
		if err == nil {
			p.Uploaded, changed = true, true
		}
	}
	if changed {
		a.st.put(p)
	}
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
