// Package scheduler places pods on nodes: the core of the built-in
// controller "scheduler", whose step schedule runs between the targets
// admitted and scheduled and writes a pod's status.node.
//
// Place is pure. It takes a read-only view of the cluster (the nodes, what
// pods already hold on each, and how many pods of the placed pod's group
// each runs) and returns a node or an error that says, per class of node,
// why none fits. The view and its upkeep (watches, reservations made ahead
// of the store) live in the server; this package does no I/O and keeps no
// state.
//
// A placement goes in three stages:
//
//	filter   ready (heartbeat, network) → not cordoned → node selector →
//	         taints tolerated → pod slots → memory → cpu
//	rank     spread label (fewest pods of the group on the label's value) →
//	         score (spread: least allocated; binpack: most allocated) →
//	         pod count → node name
//	explain  when nothing fits: "no node fits: 3 nodes: insufficient memory
//	         (needs 2Gi, max free 1Gi); 2 nodes: region=cloud does not match home"
//
// A pod that already has a node keeps it, and its reservation, whatever the
// node's state: Place only checks that what changed in the pod still fits
// there, and otherwise fails saying so; it never moves a pod. Moving pods
// off failed nodes (failover) is not the scheduler's business.
package scheduler
