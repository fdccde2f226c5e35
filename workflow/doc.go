// Package workflow is skiff's orchestration engine, modelled on systemd's
// units and jobs instead of racing control loops.
//
// Controllers register steps for a kind of object. A step is ordered against
// named targets (sync points such as scheduled, storage, network, running)
// and other steps with before/after, and pulled in with requires/wants (or
// their reverse forms requiredBy/wantedBy):
//
//	after, before        ordering only
//	requires, requiredBy pull in; if the required unit fails, this one fails
//	                     with "dependency failed: X"
//	wants, wantedBy      pull in; failure does not propagate
//
// When an object's intent changes (a new generation) or it is being deleted,
// the engine starts a run: the transaction of every unit the goal target
// (running, or stopped for deletion) pulls in, executed in order, unrelated
// units in parallel. A step whose declared reads did not change since its
// last success is skipped, so changing a pod's env re-runs the start step and
// not the scheduler. A newer generation supersedes a running run.
//
// The package is a library with no I/O of its own: Graph is the pure
// planner, and Engine runs transactions through interfaces for dispatching
// work, reading and writing objects, and recording runs. The server wires
// them to etcd and HTTP; tests and benchmarks wire them in memory.
package workflow
