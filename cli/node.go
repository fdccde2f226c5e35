package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/agent"
	"skiff.dev/skiff/daemon"
)

func agentCmd(e *env) *cobra.Command {
	var o daemon.AgentOptions
	var labels, servers []string
	cmd := &cobra.Command{
		Use:   "agent --server URL --token TOKEN --ca-hash sha256:... [--data DIR] [--name NAME] [--simulate N]",
		Short: "run a node agent: join a cluster and run the pods placed on this machine",
		Long: `Run the node agent in the foreground. The first start joins: it reaches a
server, checks the server's CA against --ca-hash, and keeps the CA, servers
and token in DIR/config; the node's name (the token's), labels, address and
insecure registries in DIR/agent.json. Later starts need no flags but
--data (flags given replace what was kept; the name cannot change), and
need no server either: the agent brings back every pod it ran and keeps
them running until the server is back. skiff token create --node NAME
prints the command to run. With several servers (an HA control plane),
give them all (--server URL1,URL2,URL3): the agent talks to whichever
serves, moving on when one is down or cut off from the majority.

With --simulate N it runs N simulated ("hollow") nodes instead, named
PREFIX-00001 … (PREFIX is the token's, from skiff token create --simulator
PREFIX): they register, heartbeat, and report every pod placed on them
Running at once, without starting containers, through the real API. It
is for measuring the control plane at thousands of nodes (skiff bench
schedule does it in one process). It needs --server, --token and
--ca-hash at every start, keeps nothing and needs no root.`,
		Example: `  skiff token create --simulator sim
  skiff agent --simulate 1000 --server https://10.0.0.1:7443 --token skiff.… --ca-hash sha256:…`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fmt.Errorf("--label %q: want KEY=VALUE", l)
				}
				o.Labels[k] = v
			}
			o.Servers = agent.SplitServers(servers)
			o.Log = daemonLog(e)
			return daemon.RunAgent(cmd.Context(), o)
		},
	}
	cmd.Flags().StringArrayVar(&servers, "server", nil, "API server URL, https://HOST:PORT; every server of the cluster, comma-separated or repeated (first start; given later, replaces the kept list)")
	cmd.Flags().StringVar(&o.Token, "token", "", "node token (first start only)")
	cmd.Flags().StringVar(&o.CAHash, "ca-hash", "", "sha256:HEX of the cluster CA (first start only)")
	cmd.Flags().StringVar(&o.DataDir, "data", "/var/lib/skiff-agent", "agent data directory")
	cmd.Flags().StringVar(&o.Name, "name", "", "node name (default: the one the token is for; kept)")
	cmd.Flags().StringVar(&o.Listen, "listen", ":7444", "where the node serves its API (logs, exec, image imports) to the servers; empty for none")
	cmd.Flags().StringVar(&o.Address, "address", "", "this node's underlay address, reported in its status (kept)")
	cmd.Flags().StringVar(&o.EgressRange, "egress-range", "", "IPv4 range of pods' egress addresses, masqueraded on the way out (default 10.127.0.0/16; kept)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "node label KEY=VALUE; repeatable (kept)")
	cmd.Flags().IntVar(&o.Simulate, "simulate", 0, "run this many simulated nodes (needs a simulator token) instead of a real one")
	cmd.Flags().StringVar(&o.NamePrefix, "name-prefix", "", "with --simulate: the token's prefix, checked (nodes are PREFIX-00001…)")
	cmd.Flags().DurationVar(&o.SimHeartbeat, "heartbeat", 0, "with --simulate: each node's heartbeat period (default 20s)")
	cmd.Flags().StringSliceVar(&o.InsecureRegistries, "insecure-registry", nil, "registries (HOST:PORT) to reach over plain HTTP (kept)")
	return cmd
}
