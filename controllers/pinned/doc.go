// Package pinned is the core of the built-in controller "pinned", which
// keeps a PinnedDeployment's pods matching its split: replicas pods in
// all, round(replicas × nextPercent / 100) of them made from the next
// template and the rest from the previous one.
//
// Plan is pure. It takes what the server observed of the
// PinnedDeployment's pods (which template each matches, whether it is
// ready, whether it is stuck and why) and returns the next moves: pods to
// create, pods to update in place, pods to delete. The server applies
// them, waits for pods to change, and plans again, until the plan is
// empty. This package does no I/O and keeps no state.
//
// The rules, in the order Plan applies them:
//
//	assign   a pod belongs to the version whose template it matches; a
//	         pod matching neither (its template was edited) is outdated
//	update   an outdated pod is updated in place to a version short of
//	         pods, when its node allows (same placement, no larger
//	         request), one unavailable pod at a time
//	grow     versions short of pods get new ones, up to replicas +
//	         maxSurge pods in all (grow before shrink)
//	shrink   surplus pods go: unready ones at once, ready ones once the
//	         pods that grow are ready, and only while replicas pods stay
//	         ready without them
//
// So ready pods never drop below replicas while share moves between
// versions, and below replicas − 1 only while one pod restarts in place.
// A version that never becomes ready (a bad command) stops the rollout
// at its first pod: nothing else can move, the other version's pods are
// untouched, and the stuck pod's reason becomes the rollout's.
//
// Nothing here decides to move share: only the operator does, by editing
// nextPercent (skiff rollout set, promote, abort).
package pinned
