package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/client"
	"skiff.dev/skiff/daemon"
	"skiff.dev/skiff/server"
)

// defaultDataDir is /var/lib/skiff for root, else ~/.local/share/skiff.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/skiff"
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "skiff")
}

func upCmd(e *env) *cobra.Command {
	var o daemon.Options
	var ao daemon.AgentOptions
	withAgent := true
	cmd := &cobra.Command{
		Use:   "up [--data DIR] [--listen ADDR]",
		Short: "run skiff on this machine: API server and embedded etcd, in the foreground",
		Long: `Run the whole of skiff on this machine in one foreground process. The data
directory keeps etcd's data, certificates and the admin token; restarting on
the same directory keeps every object and its history. The client config is
written to DIR/config and, unless one for another cluster exists, to
~/.config/skiff/config. Ctrl-C stops it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.UserConfig = client.DefaultConfigPath()
			if withAgent {
				if os.Geteuid() != 0 {
					fmt.Fprintln(e.stderr, "note: not root, so no local agent runs (pods will not start here); run as root, or --agent=false to silence this")
				} else {
					o.Agent = &ao
				}
			}
			return runDaemon(cmd, e, o)
		},
	}
	cmd.Flags().StringVar(&o.DataDir, "data", defaultDataDir(), "data directory")
	cmd.Flags().StringVar(&o.Listen, "listen", daemon.DefaultListen, "API address (HOST:PORT)")
	clusterFlags(cmd, &o)
	cmd.Flags().BoolVar(&withAgent, "agent", true, "also run a node agent for this machine (needs root)")
	cmd.Flags().StringVar(&ao.Name, "node-name", "", "this machine's node name (default: the host name)")
	cmd.Flags().StringSliceVar(&ao.InsecureRegistries, "insecure-registry", nil, "registries (HOST:PORT) the agent reaches over plain HTTP")
	return cmd
}

// clusterFlags adds the flags of every server: --builtin-controllers,
// --pod-prefix, --node-lease and --failover-margin.
func clusterFlags(cmd *cobra.Command, o *daemon.Options) {
	cmd.Flags().StringSliceVar(&o.Builtins, "builtin-controllers", server.DefaultBuiltins,
		"built-in controllers to run: admission, scheduler, nodes, ipam, agent (a workflow lab can run admission alone)")
	cmd.Flags().DurationVar(&o.NodeLease, "node-lease", server.DefaultNodeLease,
		"how long a node counts as alive after a heartbeat; agents fence their failover:fast pods after it")
	cmd.Flags().DurationVar(&o.FailoverMargin, "failover-margin", server.DefaultFailoverMargin,
		"how long after a node's lease its failover:fast pods are moved: more than a fenced pod takes to stop")
	cmd.Flags().StringVar(&o.PodPrefix, "pod-prefix", "",
		"the cluster's IPv6 pod prefix, a ULA or global /56 or larger, fixed at the first start (default: a random ULA /48)")
}

func serverCmd(e *env) *cobra.Command {
	var o daemon.Options
	var endpoints string
	cmd := &cobra.Command{
		Use:   "server --data DIR [--listen ADDR] [--etcd-endpoints URLS]",
		Short: "run the API server (embedded etcd, or an external etcd cluster)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if endpoints != "" {
				o.EtcdEndpoints = strings.Split(endpoints, ",")
			}
			return runDaemon(cmd, e, o)
		},
	}
	cmd.Flags().StringVar(&o.DataDir, "data", defaultDataDir(), "data directory")
	cmd.Flags().StringVar(&o.Listen, "listen", daemon.DefaultListen, "API address (HOST:PORT)")
	cmd.Flags().StringVar(&endpoints, "etcd-endpoints", "", "comma-separated external etcd client URLs instead of the embedded member")
	clusterFlags(cmd, &o)
	return cmd
}

func daemonLog(e *env) *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func runDaemon(cmd *cobra.Command, e *env, o daemon.Options) error {
	o.Log = daemonLog(e)
	o.Ready = func(info daemon.Info) {
		line := fmt.Sprintf("skiff is up at %s (data %s, client config %s", info.URL, o.DataDir, info.ConfigPath)
		if info.UserConfig != "" && info.UserConfig != info.ConfigPath {
			line += " and " + info.UserConfig
		}
		fmt.Fprintln(e.stdout, line+")")
		if info.Note != "" {
			fmt.Fprintln(e.stderr, "note: "+info.Note)
		}
	}
	return daemon.Run(cmd.Context(), o)
}
