package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/daemon"
)

func serversCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "servers",
		Short: "show the control plane's servers: etcd members, health, raft leader and lag, controller leader",
		Long: `Show every server of the control plane as the server answering sees it:
its name, etcd peer URL and API URL, its health, whether its etcd member is
the raft leader (*), the raft index it applied and how far that is behind the
leader's, and which server runs the cluster controllers.

Health is healthy (its API answered and its member follows a leader),
no leader (its member sees no quorum), unreachable (registered, but its API
did not answer), down (an etcd member with no live registration: stopped or
cut off from the quorum) or not started (added, never started).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			s, err := c.Servers(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(e.stdout, s)
			}
			t := newTable(e.stdout, "NAME", "PEER URL", "API URL", "HEALTH", "ETCD", "RAFT INDEX", "LAG", "CONTROLLERS")
			for _, m := range s.Servers {
				role, index, lag, ctl := "", "-", "-", ""
				switch {
				case m.EtcdLeader:
					role = "leader"
				case m.Learner:
					role = "learner"
				case m.MemberID != "" && m.RaftIndex > 0:
					role = "follower"
				}
				if m.RaftIndex > 0 {
					index, lag = strconv.FormatUint(m.RaftIndex, 10), strconv.FormatUint(m.RaftLag, 10)
				}
				if m.Name == s.ControllerLeader {
					ctl = "leader"
				}
				name := m.Name
				if name == s.Self {
					name += " (this)"
				}
				t.row(name, orDash(strings.Join(m.PeerURLs, ",")), orDash(m.APIURL), m.Health, orDash(role), index, lag, orDash(ctl))
			}
			t.flush()
			for _, m := range s.Servers {
				if m.Error != "" {
					fmt.Fprintf(e.stdout, "%s: %s: %s\n", m.Name, m.Health, m.Error)
				}
			}
			if s.ControllerLeader == "" {
				fmt.Fprintln(e.stdout, "no server leads the cluster controllers now (an election is under way, or this server cannot tell)")
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func serverPKICmd(e *env) *cobra.Command {
	var initial, out string
	cmd := &cobra.Command{
		Use:   "pki --initial-cluster NAME=https://HOST:PORT,... --out DIR",
		Short: "make the CA of a new cluster of servers and one peer bundle per server (DIR/NAME.bundle)",
		Long: `Make the cluster CA and, for every server of --initial-cluster, a bundle
with the CA and the server's etcd peer certificate: DIR/NAME.bundle, mode
0600 (it holds private keys, the CA's among them). Copy each bundle to its
server and start it with skiff server --initial-cluster (the same list)
--peer-bundle FILE, or put it at DATA/peer.bundle. The first server to
start stores the CA in etcd; it signs the API's certificates too.`,
		Example: `  skiff server pki --initial-cluster a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380 --out bundles`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if initial == "" || out == "" {
				return fmt.Errorf("skiff server pki needs --initial-cluster and --out")
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			paths, err := daemon.WritePeerBundles(initial, out)
			if err != nil {
				return err
			}
			for _, p := range paths {
				fmt.Fprintln(e.stdout, p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&initial, "initial-cluster", "", "every server of the new cluster: NAME=https://HOST:PORT,... (the etcd peer URLs)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write NAME.bundle files to")
	return cmd
}

func serverAddCmd(e *env) *cobra.Command {
	var peerURL, out string
	cmd := &cobra.Command{
		Use:   "add NAME --peer-url https://HOST:PORT [--out FILE]",
		Short: "add a server to the etcd cluster and write its join bundle",
		Long: `Add an etcd member for a new server and write its join bundle (default
NAME.join, mode 0600: it holds the member's private key). Start the new
server right away with skiff server --name NAME --join FILE: until it runs,
the cluster counts it toward its quorum. To replace a dead server, remove
it first (skiff server remove), then add its successor.`,
		Example: `  skiff server add d --peer-url https://10.0.0.4:2380 --out d.join`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if peerURL == "" {
				return fmt.Errorf("skiff server add needs --peer-url https://HOST:PORT, the new server's etcd peer URL")
			}
			if out == "" {
				out = args[0] + ".join"
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists: pick another --out", out)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			b, err := c.AddServer(cmd.Context(), args[0], peerURL)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, append(b, '\n'), 0o600); err != nil {
				return fmt.Errorf("member %s was added, but its join bundle could not be written (remove it with skiff server remove %s and add it again): %w", args[0], args[0], err)
			}
			fmt.Fprintf(e.stdout, "member %s added; start it now with its join bundle %s:\n  skiff server --data DIR --name %s --join %s\n", args[0], out, args[0], out)
			return nil
		},
	}
	cmd.Flags().StringVar(&peerURL, "peer-url", "", "the new server's etcd peer URL, https://HOST:PORT")
	cmd.Flags().StringVar(&out, "out", "", "where to write the join bundle (default NAME.join)")
	return cmd
}

func serverRemoveCmd(e *env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "remove a dead server's etcd member from the cluster",
		Long: `Remove a server's etcd member from the cluster, so that the quorum is
counted without it; typically a dead server before adding its successor.
The last member cannot be removed. Without --force, the server answering
refuses to remove itself or a server that is still running: a removed
member stops and cannot rejoin with its data.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.RemoveServer(cmd.Context(), args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "server %s removed from the cluster\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove it even if it is the server answering, or still running")
	return cmd
}
