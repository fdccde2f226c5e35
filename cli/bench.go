package cli

import (
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/bench"
)

func benchCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "measure skiff on this machine and print a table"}
	var so bench.StoreOptions
	st := &cobra.Command{
		Use:   "store",
		Short: "versioned store on embedded etcd: write throughput, list latency, history size and query time",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.Store(cmd.Context(), e.stdout, so)
		},
	}
	st.Flags().StringVar(&so.Dir, "data", "", "etcd data directory (default: a fresh temporary one)")
	st.Flags().IntVar(&so.Writes, "writes", 20000, "writes per throughput run")
	st.Flags().IntVar(&so.Writers, "writers", 16, "concurrent writers")
	st.Flags().IntVar(&so.Objects, "objects", 10000, "objects to list")
	st.Flags().IntVar(&so.HistoryLen, "history", 1000, "revisions in the queried history")
	st.Flags().IntVar(&so.Members, "members", 1, "etcd members: 1 is a lone member (skiff up); 3 or 5 form one cluster in this process, TLS peers on loopback")
	var wo bench.WorkflowOptions
	wf := &cobra.Command{
		Use:   "workflow",
		Short: "workflow engine: runs/s with in-process controllers, per-step dispatch through the API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.Workflow(cmd.Context(), e.stdout, wo)
		},
	}
	wf.Flags().IntVar(&wo.Runs, "runs", 20000, "in-process runs")
	wf.Flags().IntVar(&wo.RemoteRuns, "remote-runs", 200, "runs through the API (10 steps each)")
	var po bench.PodsOptions
	pods := &cobra.Command{
		Use:   "pods",
		Short: "pods on one node (needs root, runc, busybox-static, docker-registry): create and update latency, agent and shim memory, runc floor",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.Pods(cmd.Context(), e.stdout, po)
		},
	}
	pods.Flags().IntVar(&po.Pods, "pods", 100, "pods created, then updated in place")
	pods.Flags().IntVar(&po.Concurrency, "concurrency", 1, "creations and updates in flight at once")
	pods.Flags().IntVar(&po.RSSPods, "rss-pods", 50, "running pods when memory is read")
	pods.Flags().IntVar(&po.FloorRuns, "floor-runs", 20, "runc create+start runs outside skiff")
	var sco bench.ScheduleOptions
	var schedLog bool
	sched := &cobra.Command{
		Use:   "schedule",
		Short: "the control plane at many simulated nodes: placements/s, time until all pods run, server memory",
		Long: `Start a server (embedded etcd, TLS on loopback) and a simulator of --nodes
hollow nodes in this process, the simulator talking HTTPS to the server as
skiff agent --simulate does; once every node is ready, create --pods small
pods at once, in lists of --batch pods as skiff apply -f sends a manifest
(--batch 1: one request per pod), and follow them on a watch: placements per second (from the
status.node writes), the time until every pod is Running, API create
throughput, and this process's RSS and Go heap at the end.`,
		Example: `  skiff bench schedule --nodes 500 --pods 5000
  skiff bench schedule --profile /tmp/prof   # then: go tool pprof -top bin/skiff /tmp/prof/cpu.pprof`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if schedLog {
				sco.Log = e.stderr
			}
			return bench.Schedule(cmd.Context(), e.stdout, sco)
		},
	}
	sched.Flags().IntVar(&sco.Nodes, "nodes", 5000, "simulated nodes")
	sched.Flags().IntVar(&sco.Pods, "pods", 50000, "pods created in bulk")
	sched.Flags().IntVar(&sco.Clients, "clients", 64, "concurrent creators")
	sched.Flags().IntVar(&sco.Batch, "batch", 100, "pods per create request: lists go by POST /v1/apply/list, as skiff apply -f sends a manifest; 1 sends each pod alone with POST /v1/apply")
	sched.Flags().DurationVar(&sco.Timeout, "timeout", 30*time.Minute, "how long to wait for every pod to run, from the first create; then the figures so far are printed")
	sched.Flags().DurationVar(&sco.Heartbeat, "heartbeat", 0, "simulated nodes' heartbeat period (default 20s)")
	sched.Flags().StringVar(&sco.Profile, "profile", "", "write cpu, mutex, block and heap profiles of the process (server, etcd, simulator, bench) to this directory")
	sched.Flags().BoolVar(&schedLog, "log", false, "show the server's and the simulator's log on stderr")
	var ro bench.RollbackOptions
	var rollbackLog bool
	rollback := &cobra.Command{
		Use:   "rollback",
		Short: "a PinnedDeployment's rollback from 100% to 0% on a 3-node lab cluster (needs root): time until every previous pod is ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rollbackLog {
				ro.Log = e.stderr
			}
			return bench.Rollback(cmd.Context(), e.stdout, ro)
		},
	}
	rollback.Flags().IntVar(&ro.Replicas, "replicas", 100, "the PinnedDeployment's replicas")
	rollback.Flags().IntVar(&ro.Nodes, "nodes", 3, "lab nodes")
	rollback.Flags().IntVar(&ro.MaxSurge, "max-surge", 0, "the PinnedDeployment's maxSurge (default: replicas)")
	rollback.Flags().IntVar(&ro.Runs, "runs", 3, "rollbacks measured")
	rollback.Flags().BoolVar(&rollbackLog, "log", false, "show what the lab makes on stderr")
	cmd.AddCommand(st, wf, pods, sched, rollback)
	return cmd
}
