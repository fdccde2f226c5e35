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
// In a large cluster a placement does not look at every node. Search
// filters the nodes from Cluster.Start on, going round, until it has found
// FeasibleToFind(len(Nodes)) that fit, as kube-scheduler does by default:
// all of them up to 100 nodes, 42% of 1,000, 10% of 5,000, never below 5%
// nor 100 nodes; it ranks those and stops. Result.Next is where the next
// search should start; the server passes it back, so that every node gets
// its turn. The node name thus breaks ties only among the nodes a search
// looked at (the least name of those), and which of equal nodes wins
// depends on where the search started (kube-scheduler picks one at
// random). Two kinds of search still look at every node:
//
//   - one that finds fewer nodes that fit than it looks for, and so one
//     that finds none: explain counts every node;
//   - a spread request, until its best node is on a value of the spread
//     label with no pods of the group. A sample can miss the value with
//     the fewest (nodes in name order often go zone by zone, and values
//     with none of the group are not among the domains counted), and the
//     spread label ranks first: correct spreading is worth the full scan.
//
// A pod that already has a node keeps it, and its reservation, whatever the
// node's state: Place only checks that what changed in the pod still fits
// there, and otherwise fails saying so; it never moves a pod. Moving pods
// off failed nodes (failover) is not the scheduler's business.
package scheduler
