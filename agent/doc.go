// Package agent is skiff's node agent: it registers its Node, takes the
// node steps of the pods placed on it (start, stop), runs their containers
// through the runtime, restarts them by policy, and reports their status.
//
// It keeps what it runs in a local bbolt file, so it brings every pod back
// after an agent restart or a cold boot, and keeps them running with no
// control plane at all, uploading status when the server returns.
//
//	pod lifecycle on a node:
//
//	   start step ──► containers started in spec order ──► Running
//	       ▲                 │ a container exits
//	       │ new generation  ▼
//	       │           restart policy (always, on-failure, never)
//	       │           with backoff 1s, 2s, 4s … 5m
//	       └── only containers whose config changed restart in place
//	   stop step ──► SIGTERM, grace, SIGKILL; containers and netns removed
//
// Not here: images (agent/image), the container runtime (agent/runtime),
// pod networking beyond a private network namespace (agent/podnet).
package agent
