package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"skiff.dev/skiff/agent/netns"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

// Fencing: two copies of a pod must never run at once.
//
// The servers count a node unreachable once they have not heard from it
// for a lease, and move its `failover: fast` pods to other nodes a margin
// after that. A node cut off from every server cannot know whether that
// happened, so it assumes it did: once it has reached no server for a
// lease, counted from when it sent the last heartbeat a server took, it
// stops its fast pods (and keeps them stopped), each killed after half the
// margin at most (fenceGrace), so the old copy is gone before the new one
// is placed. The servers tell the lease and margin in every heartbeat
// answer.
// `failover: manual` pods are never fenced: they run for as long as the
// node does.
//
// When a server answers again, each fenced pod still placed on this node
// starts again; one that is gone or placed elsewhere is removed here, and
// so is any other copy the servers moved away meanwhile (settle).

// DefaultLease is how long a node counts as alive after its last
// heartbeat reached a server.
const DefaultLease = 40 * time.Second

// DefaultFailoverMargin is how long after the lease the servers wait
// before moving fast pods, until a server says (server.DefaultFailoverMargin).
const DefaultFailoverMargin = 20 * time.Second

// contact records that a heartbeat sent at sent reached a server. It is
// kept in the state file too: a node that boots with no server reachable
// knows how long ago it last had one.
func (a *Agent) contact(sent time.Time) {
	for {
		old := a.lastContact.Load()
		if old >= sent.UnixNano() {
			return
		}
		if a.lastContact.CompareAndSwap(old, sent.UnixNano()) {
			a.st.setMeta(lastContactKey, strconv.FormatInt(sent.UnixNano(), 10))
			return
		}
	}
}

const lastContactKey = "lastContact"

// loadContact restores the last contact an earlier run of the agent had.
func (a *Agent) loadContact() {
	if n, err := strconv.ParseInt(a.st.getMeta(lastContactKey), 10, 64); err == nil {
		a.lastContact.Store(n)
	}
}

// cutOff tells how long the node has reached no server, if longer than
// its lease.
func (a *Agent) cutOff(now time.Time) (time.Duration, bool) {
	last := a.lastContact.Load()
	if last == 0 {
		return 0, false // never joined, or not yet heard back: nothing to fence against
	}
	d := now.Sub(time.Unix(0, last))
	return d, d > a.leaseNow()
}

// leaseNow is the lease fencing counts with: the servers' own, as the
// last heartbeat answer said (kept for boots with no server), else
// Options.Lease.
func (a *Agent) leaseNow() time.Duration {
	return a.fromServers(&a.lease, "lease", a.o.Lease)
}

// fenceGrace is how long a fenced container gets between SIGTERM and
// SIGKILL: StopGrace, or half the servers' failover margin if shorter, so
// that it is gone before the servers move its pod.
func (a *Agent) fenceGrace() time.Duration {
	return min(StopGrace, a.fromServers(&a.margin, "failoverMargin", DefaultFailoverMargin)/2)
}

// fromServers reads a duration the servers told, from memory or the state
// file, or def if they never did.
func (a *Agent) fromServers(v *atomic.Int64, key string, def time.Duration) time.Duration {
	if d := v.Load(); d > 0 {
		return time.Duration(d)
	}
	if d, err := time.ParseDuration(a.st.getMeta(key)); err == nil && d > 0 {
		v.Store(int64(d))
		return d
	}
	return def
}

// setLease takes in what a server answered a heartbeat with, and keeps it
// for boots with no server reachable.
func (a *Agent) setLease(l client.Lease) {
	for _, x := range []struct {
		v   *atomic.Int64
		key string
		d   time.Duration
	}{{&a.lease, "lease", l.Lease}, {&a.margin, "failoverMargin", l.Margin}} {
		if x.d > 0 && x.v.Swap(int64(x.d)) != int64(x.d) {
			a.st.setMeta(x.key, x.d.String())
		}
	}
}

// fenceLoop fences as soon as the lease is over: it looks four times per
// lease (at most every second), so a fenced pod is stopped well within the
// margin the servers wait after the lease.
func (a *Agent) fenceLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Second, a.leaseNow()/4)):
		}
		if pods, err := a.st.all(); err == nil {
			a.fence(ctx, pods)
		}
	}
}

// fence stops the fast pods of a node cut off for longer than its lease.
func (a *Agent) fence(ctx context.Context, pods []*podRecord) {
	off, cut := a.cutOff(time.Now())
	if !cut {
		return
	}
	var wg sync.WaitGroup
	for _, p := range pods {
		if p.Spec.Failover != api.FailoverFast || p.Fenced || p.Generation == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := a.lockPod(p.Namespace, p.Name)
			defer unlock()
			p, err := a.st.get(p.Namespace, p.Name)
			if err != nil || p == nil || p.Fenced {
				return
			}
			a.log.Warn("fencing pod: no server reached for longer than the lease", "pod", p.Namespace+"/"+p.Name,
				"cutOff", off.Round(time.Millisecond), "lease", a.leaseNow())
			for _, cr := range p.Containers {
				if cr.ID != "" {
					a.removeContainerWithin(ctx, cr.ID, a.fenceGrace())
					cr.ID = ""
				}
			}
			p.Fenced = true
			p.FencedAt = time.Now().UTC()
			st := asStored(a.status(p))
			p.Status, p.Uploaded = st, false
			a.st.put(p)
		}()
	}
	wg.Wait()
}

// settle squares this node's pods with the servers' view once a server
// answers: a pod that is gone, being deleted, or placed on another node
// is a stale copy (the node was cut off, or forgotten, while the servers
// moved it) and is stopped and removed here; a fenced pod still placed
// here starts again. With all false only fenced pods are looked at.
func (a *Agent) settle(ctx context.Context, all bool) {
	pods, err := a.st.all()
	if err != nil {
		return
	}
	for _, p := range pods {
		if !p.Fenced && !all {
			continue
		}
		ref := api.Ref{Kind: "Pod", Namespace: p.Namespace, Name: p.Name}
		gctx, cancel := context.WithTimeout(ctx, uploadTimeout)
		obj, err := a.c.Get(gctx, ref)
		cancel()
		// A node may read only the pods placed on it: a refusal means the
		// pod was placed elsewhere.
		var apiErr *client.Error
		gone := errors.As(err, &apiErr) && apiErr.Status == 404
		moved := errors.As(err, &apiErr) && apiErr.Status == 403
		if err != nil && !gone && !moved {
			continue // ask again next time
		}
		unlock := a.lockPod(p.Namespace, p.Name)
		p, err := a.st.get(p.Namespace, p.Name)
		if err != nil || p == nil || (!p.Fenced && !all) {
			unlock()
			continue
		}
		node, _ := obj.Status["node"].(string)
		if gone || moved || node != a.o.Name || obj.Meta.Deleting != nil {
			where := "deleted"
			switch {
			case moved:
				where = "placed on another node"
			case !gone && node != a.o.Name:
				where = "placed on " + node
			}
			a.log.Info("removing stale copy of pod: it is "+where+" now", "pod", p.Namespace+"/"+p.Name, "fenced", p.Fenced)
			if err := a.release(ctx, p); err != nil {
				a.log.Warn("remove stale pod", "pod", p.Namespace+"/"+p.Name, "err", err)
			}
			unlock()
			continue
		}
		if !p.Fenced {
			unlock()
			continue
		}
		a.log.Info("unfencing pod: a server answers and the pod is still on this node", "pod", p.Namespace+"/"+p.Name)
		p.Fenced, p.FencedAt = false, time.Time{}
		err = a.ensure(ctx, p)
		st := asStored(a.status(p))
		p.Status, p.Uploaded = st, false
		a.st.put(p)
		unlock()
		if err != nil {
			a.log.Warn("restart unfenced pod", "pod", p.Namespace+"/"+p.Name, "err", err)
		}
	}
}

// release stops a pod, removes its network and forgets it. The caller
// holds the pod's lock.
func (a *Agent) release(ctx context.Context, p *podRecord) error {
	if a.net != nil {
		if err := a.net.TeardownPod(netns.VethName(p.Namespace, p.Name)); err != nil {
			return err
		}
	}
	return a.stopPod(ctx, p)
}

// fencedMessage is the status message of a fenced pod.
func fencedMessage(p *podRecord) string {
	return fmt.Sprintf("fenced at %s: the node reached no server for longer than its lease, so this fast-failover copy was stopped (another may run elsewhere)",
		p.FencedAt.Format(time.RFC3339))
}

// anyFenced tells whether some pod is fenced.
func (a *Agent) anyFenced() bool {
	pods, _ := a.st.all()
	for _, p := range pods {
		if p.Fenced {
			return true
		}
	}
	return false
}
