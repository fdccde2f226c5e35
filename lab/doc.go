// Package lab builds a real multi-node skiff cluster on one machine out of
// network namespaces: one `skiff server` (or three or five) and one `skiff
// agent` per node, each node a network namespace acting as a host. The
// end-to-end tests use it, and so do people, through `skiff dev cluster
// --nodes 3 [--servers 3]`.
//
// It is for trying skiff's multi-node behaviour (scheduling, node
// networking, nodes joining and leaving) on a laptop or in CI. It is not a
// machine emulator: nodes share the host's kernel, file systems, mount
// namespace, cgroups, host name and clock; only their network is their own.
// It needs root.
//
// # What a lab makes
//
// Every lab picks a short prefix, "sk" and 4 hex digits (say sk1a2b), and
// names everything it makes with it (one server; see "Several servers"
// for three):
//
//	root namespace                     node namespace sk1a2b-n1 (one per node)
//	──────────────                     ─────────────────────────────────────
//	bridge sk1a2bbr                    lo up
//	  fdXX:XXXX:XXXX:1::1/64           eth0 (veth peer of sk1a2bv1 on the bridge)
//	  skiff server on [::1]:PORT         fdXX:XXXX:XXXX:1::11/64  (the underlay)
//	  docker-registry on [::1]:PORT2     192.0.2.11/24, default via 192.0.2.1
//	                                   skiff agent --address fdXX:...:1::11,
//	outside namespace sk1a2b-out         its node API on :7444
//	  eth0 192.0.2.1/24 only (the
//	  IPv4 internet; no IPv6 at all)
//
// Node i (n1, n2, ...; numbers are never reused in a lab) has the underlay
// address ...:1::(10+i) written in decimal digits, so that it reads like its
// IPv4 address 192.0.2.(10+i). All addresses are added without duplicate
// address detection (IFA_F_NODAD, and accept_dad=0 in the node namespaces),
// so nothing waits for DAD. The underlay prefix is a random unique local
// /64 per lab, so that labs do not collide.
//
// The server listens on the bridge address only; nodes reach it over the
// underlay, as they would reach a real control plane. The lab's client
// config is written to Dir/config (never to ~/.config/skiff/config): use it
// with SKIFF_CONFIG=Dir/config, or (*Lab).Skiff and (*Lab).Command.
//
// # Several servers
//
// With Config.Servers of 3 (or 5), the control plane is highly available,
// as in production: each server runs in a namespace of its own, like a node,
// and the root namespace keeps only the bridge, the registry and the
// lab's clients:
//
//	server namespace sk1a2b-s1 (s1, s2, ...; veth sk1a2bs1 on the bridge)
//	  eth0 fdXX:XXXX:XXXX:1::2/64      (server i: ::(1+i), below the nodes)
//	  skiff server --name s1 --listen [::2]:7443 --peer-listen [::2]:2380
//	    --initial-cluster s1=https://[::2]:2380,s2=...,s3=...
//	    --peer-bundle Dir/pki/s1.bundle
//
// Start runs `skiff server pki` for the cluster (the CA and one peer bundle
// per member, in Dir/pki), starts every server at once (a member waits for
// a quorum of its peers) and waits until each says it is up. Servers keep
// their data in Dir/servers/NAME. The lab's client config lists every
// server's URL (Lab.URLs), and so does every agent's join command: clients
// and agents fail over between them (see package client). A one-server lab
// (Servers 0 or 1) is the layout above, exactly: its server, named
// "server", runs in the root namespace on the bridge address.
//
// Faults for servers: KillServer (SIGKILL, as a crash), StopServer
// (SIGTERM), StartServer (again, on its data directory and address; a
// member catches up on its own), Partition (its link down: cut off from
// everyone, clients included), and PartitionPeers (blackhole routes between
// it and the other servers, both ways: its member loses the majority while
// clients and nodes still reach its API, which then answers 503). Heal
// undoes either. ServersStatus is what `skiff servers` shows; Leaders
// waits for the controllers' leader and the etcd raft leader and names
// them.
//
// # Lifecycle
//
//	Start ──► running ──Close──► closed (Close again: no-op)
//	  │        │   ▲
//	  │        └───┘ AddNode, RemoveNode
//	  └─ fails: everything made so far is torn down, the error carries
//	     the tails of the processes' logs
//
//	owner dies (kill -9, test timeout) ──► processes die (Pdeathsig);
//	  shims, containers, mounts, namespaces and links stay until the next
//	  Start (or CleanupStale) finds the lab's owner dead and removes them.
//
// # Processes and namespaces
//
// A process is started inside a node namespace without `ip netns exec`:
// a goroutine locks its OS thread, setns(2)es into the namespace, starts
// the process (fork copies the thread's network namespace), and setns(2)es
// back. Every process the lab starts gets Pdeathsig SIGKILL, which the
// kernel ties to the parent *thread*, not the parent process: if Go ended
// that thread the child would be killed. Go ends a thread only when a
// goroutine exits while locked to it, so the goroutine that started a
// process stays locked to its thread and waits for the process on it; it
// unlocks once the process has exited and only if the thread is back in
// the root namespace (a thread that could not get back dies with its
// goroutine, as it must). The cost is one parked OS thread per process,
// a handful per lab. Pdeathsig reaches the lab's own processes only:
// shims and containers (which agents start in their own sessions, so that
// they outlive agent restarts) are cleaned up by Close or CleanupStale.
//
// Every process also gets its own process group, so Ctrl-C in a terminal
// reaches `skiff dev cluster` alone, which then stops the rest in order.
// Logs of each process go to Dir/logs/NAME.log; (*Lab).Logs returns their
// tails for test failure messages.
//
// # Cleaning up
//
// A lab records itself in /run/skiff-lab/PREFIX/: owner (the owner's pid
// and start time) and lab.json (what it made, written before making it).
// Close and CleanupStale undo it in this order: stop the agents (SIGTERM,
// then SIGKILL after 5 s), the registry and the servers; kill every
// process left in the lab's network namespaces (servers' and nodes':
// shims, pod namespace holders); `runc delete --force` every container under each agent's
// runc root (DATA/runtime/runc), which removes its cgroup too; kill
// whatever is left in the pods' namespaces (pinned under the agents'
// data directories); lazily unmount everything under Dir (overlay roots,
// pinned pod namespaces); delete the namespaces, the veths and the
// bridge; remove the data directories and the record. Start calls
// CleanupStale first; it touches only labs whose owner is dead.
//
// # Caveats
//
// Processes on a node switch only their network namespace: /sys is still
// the host's, so /sys/class/net lists the host's devices, not the node's
// (netlink and /proc/sys/net are the node's; `ip netns exec` remounts
// /sys). Registry image references start with '[' and must be quoted in
// YAML. An agent reports its API URL (status.agentURL) with its
// heartbeats, and its first one may go out before its API serves: `skiff
// logs` and `skiff exec` may then not reach a node that shows ready until
// its next heartbeat, up to about 30 s later.
//
// Containers' cgroups are named /skiff/ID by the runtime, and IDs are
// namespace_pod_container_N: the same pod in two labs (or a lab and
// `skiff up`) at once on one machine would collide. With br_netfilter
// loaded (bridge-nf-call-iptables=1), frames crossing the lab's bridge pass
// the root namespace's iptables FORWARD chain: a host firewall that drops
// forwarded traffic (Docker's does) cuts the nodes off from each other.
package lab
