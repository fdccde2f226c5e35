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
		Use:   "server --data DIR [--listen ADDR] [--name NAME --initial-cluster A=URL,B=URL,C=URL | --join FILE | --etcd-endpoints URLS]",
		Short: "run the API server (embedded etcd, alone or one of a cluster, or an external etcd cluster)",
		Long: `Run an API server. Alone, it embeds a single etcd member that opens no socket.

Three or five servers form a highly available control plane: their embedded
etcd members form one etcd cluster, peer traffic TLS from the cluster CA.
Make the CA and a bundle per server once (skiff server pki), copy each
server's bundle to it, and start every server with the same --initial-cluster:

  skiff server pki --initial-cluster a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380 --out bundles
  skiff server --data /var/lib/skiff --name a --listen 10.0.0.1:7443 \
      --initial-cluster a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380 --peer-bundle bundles/a.bundle

A server joins a running cluster with a join bundle from skiff server add:

  skiff server add d --peer-url https://10.0.0.4:2380 --out d.join
  skiff server --data /var/lib/skiff --name d --listen 10.0.0.4:7443 --join d.join

Restarts need neither --initial-cluster nor --join: the server keeps its
bundle in DIR/pki and etcd its membership in DIR/etcd. See docs/ha.md.`,
		Args: cobra.NoArgs,
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
	cmd.Flags().StringVar(&o.Name, "name", "", `this server's name, its etcd member's in a cluster (default: the one in its bundle; "skiff" alone; the host name with --etcd-endpoints)`)
	cmd.Flags().StringVar(&o.InitialCluster, "initial-cluster", "", "form a new etcd cluster of these servers' embedded members: NAME=https://HOST:PORT,... (the same on every server; IPv6 hosts in brackets)")
	cmd.Flags().StringVar(&o.PeerBundle, "peer-bundle", "", "this server's bundle from skiff server pki, for --initial-cluster (default DIR/peer.bundle)")
	cmd.Flags().StringVar(&o.Join, "join", "", "join a running cluster with this join bundle from skiff server add")
	cmd.Flags().StringVar(&o.PeerListen, "peer-listen", "", "etcd peer address, HOST:PORT (default: the host and port of this server's peer URL)")
	cmd.Flags().StringVar(&o.APIURL, "api-url", "", "the URL other servers and clients reach this API at (default: from --listen; with 0.0.0.0 or [::] in a cluster, the peer URL's host)")
	clusterFlags(cmd, &o)
	cmd.AddCommand(serverPKICmd(e), serverAddCmd(e), serverRemoveCmd(e))
	return cmd
}

func daemonLog(e *env) *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func runDaemon(cmd *cobra.Command, e *env, o daemon.Options) error {
	o.Log = daemonLog(e)
	o.Ready = func(info daemon.Info) {
		if _, err := os.Stat(info.ConfigPath); err != nil {
			// Another server of the cluster created the admin token.
			fmt.Fprintf(e.stdout, "skiff is up at %s (data %s; the admin token and client config are in the data directory of the server that started the cluster)\n", info.URL, o.DataDir)
			return
		}
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
