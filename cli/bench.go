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
	cmd.AddCommand(st)
	return cmd
}
