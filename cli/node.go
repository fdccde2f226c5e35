package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/daemon"
)

func agentCmd(e *env) *cobra.Command {
	var o daemon.AgentOptions
	var labels []string
	cmd := &cobra.Command{
		Use:   "agent --server URL --token TOKEN --ca-hash sha256:... [--data DIR] [--name NAME]",
		Short: "run a node agent: join a cluster and run the pods placed on this machine",
		Long: `Run the node agent in the foreground. The first start joins: it reaches the
server, checks the server's CA against --ca-hash, and keeps the CA, server
and token in DIR/config; the node's name (the token's), labels, address and
insecure registries in DIR/agent.json. Later starts need no flags but
--data (flags given replace what was kept; the name cannot change), and
need no server either: the agent brings back every pod it ran and keeps
them running until the server is back. skiff token create --node NAME
prints the command to run.`,
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
			o.Log = daemonLog(e)
			return daemon.RunAgent(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.Server, "server", "", "API server URL, https://HOST:PORT (first start only)")
	cmd.Flags().StringVar(&o.Token, "token", "", "node token (first start only)")
	cmd.Flags().StringVar(&o.CAHash, "ca-hash", "", "sha256:HEX of the cluster CA (first start only)")
	cmd.Flags().StringVar(&o.DataDir, "data", "/var/lib/skiff-agent", "agent data directory")
	cmd.Flags().StringVar(&o.Name, "name", "", "node name (default: the one the token is for; kept)")
	cmd.Flags().StringVar(&o.Listen, "listen", ":7444", "where the node serves its API (logs, exec, image imports) to the servers; empty for none")
	cmd.Flags().StringVar(&o.Address, "address", "", "this node's underlay address, reported in its status (kept)")
	cmd.Flags().StringVar(&o.EgressRange, "egress-range", "", "IPv4 range of pods' egress addresses, masqueraded on the way out (default 10.127.0.0/16; kept)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "node label KEY=VALUE; repeatable (kept)")
	cmd.Flags().StringSliceVar(&o.InsecureRegistries, "insecure-registry", nil, "registries (HOST:PORT) to reach over plain HTTP (kept)")
	return cmd
}
