package pinned

import (
	"sort"

	"skiff.dev/skiff/api"
)

// Pod is what the planner needs to know of one pod of a PinnedDeployment.
type Pod struct {
	Name string
	// Matches says which templates the pod's labels and spec match: both
	// when the templates are equal (after a promote), none when the pod is
	// outdated.
	MatchesPrevious, MatchesNext bool
	// InPlace says to which versions the pod can be updated in place: its
	// node keeps it (same placement, no larger request).
	InPlacePrevious, InPlaceNext bool
	// Ready: running the spec it has now, every container up.
	Ready bool
	// Stuck is why the pod cannot become ready (its run failed, a
	// container keeps exiting), "" when it is not known to be stuck.
	Stuck string
}

// Input is one observation of a PinnedDeployment.
type Input struct {
	Replicas                     int
	DesiredPrevious, DesiredNext int
	MaxSurge                     int
	// Pods are the pods it made that are not being deleted.
	Pods []Pod
}

// Update is an in-place update of a pod to a version's template.
type Update struct {
	Pod     string
	Version string // api.Previous or api.Next
}

// Plan is what to do next, and what was observed.
type Plan struct {
	Create []string // versions of the pods to create, one entry per pod
	Update []Update
	Delete []string // pod names
	// Version assigns every observed pod that matches a template to the
	// version it counts for.
	Version map[string]string
	// Previous and Next count each version's pods.
	Previous, Next api.VersionStatus
	// Outdated counts pods matching neither template.
	Outdated int
	// Waiting are the pods the rollout waits on to become ready, sorted.
	Waiting []string
	// Complete: the pods match the split and all are ready.
	Complete bool
	// Stuck names a pod the rollout waits on that will not become ready by
	// itself, with its reason, when nothing else can move.
	Stuck, StuckReason string
}

// Empty reports whether the plan makes no move.
func (p *Plan) Empty() bool { return len(p.Create)+len(p.Update)+len(p.Delete) == 0 }

// Make plans the next moves for in. See the package documentation for the
// rules.
func Make(in Input) Plan {
	pl := Plan{Version: map[string]string{}}
	pl.Previous.Desired, pl.Next.Desired = in.DesiredPrevious, in.DesiredNext
	surge := max(in.MaxSurge, 1)
	pods := append([]Pod(nil), in.Pods...)
	// Unready pods first, then by name: surplus goes in that order, so a
	// stuck pod is the first to go when its share is taken back.
	sort.SliceStable(pods, func(i, j int) bool {
		if pods[i].Ready != pods[j].Ready {
			return !pods[i].Ready
		}
		return pods[i].Name < pods[j].Name
	})

	// Assign.
	count := map[string]*api.VersionStatus{api.Previous: &pl.Previous, api.Next: &pl.Next}
	members := map[string][]Pod{}
	var either, outdated []Pod
	ready := 0
	for _, p := range pods {
		if p.Ready {
			ready++
		}
		switch {
		case p.MatchesPrevious && p.MatchesNext:
			either = append(either, p)
		case p.MatchesNext:
			members[api.Next] = append(members[api.Next], p)
		case p.MatchesPrevious:
			members[api.Previous] = append(members[api.Previous], p)
		default:
			outdated = append(outdated, p)
		}
	}
	// Pods of either version fill next first (ready ones first), the rest
	// count as previous.
	sort.SliceStable(either, func(i, j int) bool { return either[i].Ready && !either[j].Ready })
	for _, p := range either {
		if len(members[api.Next]) < in.DesiredNext {
			members[api.Next] = append(members[api.Next], p)
		} else {
			members[api.Previous] = append(members[api.Previous], p)
		}
	}
	for v, ps := range members {
		for _, p := range ps {
			pl.Version[p.Name] = v
			count[v].Current++
			if p.Ready {
				count[v].Ready++
			}
		}
	}
	pl.Outdated = len(outdated)
	need := map[string]int{
		api.Next:     max(0, in.DesiredNext-pl.Next.Current),
		api.Previous: max(0, in.DesiredPrevious-pl.Previous.Current),
	}

	// Update outdated pods in place, at most one ready pod made unready
	// at a time: ready pods stay at replicas − 1 or more.
	unavailable := max(0, in.Replicas-ready) // already missing
	var surplus []Pod
	for _, p := range outdated {
		v := ""
		for _, cand := range []string{api.Next, api.Previous} {
			if need[cand] > 0 && (cand == api.Next && p.InPlaceNext || cand == api.Previous && p.InPlacePrevious) {
				v = cand
				break
			}
		}
		switch {
		case v == "":
			surplus = append(surplus, p) // replaced: grown for below, deleted once not needed
		case !p.Ready:
			pl.Update = append(pl.Update, Update{Pod: p.Name, Version: v})
			need[v]--
		case unavailable < 1:
			pl.Update = append(pl.Update, Update{Pod: p.Name, Version: v})
			need[v]--
			unavailable++
			ready--
		default:
			need[v]-- // its turn comes when another is ready again
		}
	}

	// Grow, next first, within replicas + surge.
	total := len(pods)
	for _, v := range []string{api.Next, api.Previous} {
		for ; need[v] > 0 && total < in.Replicas+surge; need[v]-- {
			pl.Create = append(pl.Create, v)
			total++
		}
	}

	// Shrink: what is beyond each version's share, unready first.
	for _, v := range []string{api.Previous, api.Next} {
		ps := members[v]
		desired := in.DesiredPrevious
		if v == api.Next {
			desired = in.DesiredNext
		}
		if extra := len(ps) - desired; extra > 0 {
			surplus = append(surplus, ps[:extra]...)
		}
	}
	sort.SliceStable(surplus, func(i, j int) bool { return !surplus[i].Ready && surplus[j].Ready })
	// Ready surplus waits until what grows is ready: stopping pods takes
	// the CPU that starting the new ones needs, and it changes nothing for
	// the pods that serve.
	growing := len(pl.Create) + len(pl.Update)
	for v, ps := range members {
		desired := in.DesiredPrevious
		if v == api.Next {
			desired = in.DesiredNext
		}
		for _, p := range ps[max(0, len(ps)-desired):] {
			if !p.Ready {
				growing++
			}
		}
	}
	for _, p := range surplus {
		switch {
		case !p.Ready:
			pl.Delete = append(pl.Delete, p.Name)
		case growing == 0 && ready-1 >= in.Replicas:
			pl.Delete = append(pl.Delete, p.Name)
			ready--
		}
	}

	// What the rollout waits on.
	deleted := map[string]bool{}
	for _, n := range pl.Delete {
		deleted[n] = true
	}
	for _, p := range pods {
		if !p.Ready && !deleted[p.Name] {
			pl.Waiting = append(pl.Waiting, p.Name)
			if pl.Stuck == "" && p.Stuck != "" {
				pl.Stuck, pl.StuckReason = p.Name, p.Stuck
			}
		}
	}
	sort.Strings(pl.Waiting)
	if !pl.Empty() {
		pl.Stuck, pl.StuckReason = "", ""
	}
	pl.Complete = pl.Empty() && len(pl.Waiting) == 0 && len(outdated) == 0 &&
		pl.Previous.Current == in.DesiredPrevious && pl.Next.Current == in.DesiredNext
	return pl
}
