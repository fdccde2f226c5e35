package cli

import (
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
	cmd.AddCommand(st, wf, pods)
	return cmd
}
