package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/lab"
	"skiff.dev/skiff/test/testimage"
)

func devCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "dev", Short: "tools for working on skiff itself"}
	var cfg lab.Config
	cluster := &cobra.Command{
		Use:   "cluster [--nodes N] [--servers 1|3|5] [--dir DIR] [--pod-prefix PREFIX] [--registry=false]",
		Short: "run a multi-node cluster on this machine, one network namespace per node, until Ctrl-C",
		Long: `Run a real multi-node cluster on this machine, in the foreground: a bridge
with an IPv6 underlay, one network namespace per node with its own skiff
agent, an IPv4-only "outside" namespace standing in for the internet, a
skiff server on the bridge and (with docker-registry installed) an image
registry the nodes pull from. It prints how to reach it; Ctrl-C stops it
and removes everything it made. Needs root. Your ~/.config/skiff/config
is left alone: the lab's client config is printed as SKIFF_CONFIG.

With --servers 3 (or 5) the control plane is highly available: each
server runs in a network namespace of its own on the bridge, their
embedded etcd members form one cluster, and the client config and every
agent list all servers. Kill one (pkill -9 -f DIR/servers/s1) or cut it
off (ip link set PREFIXs1 down) and watch skiff servers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return errors.New("dev cluster needs root: it makes network namespaces, veths and a bridge (run it with sudo)")
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary = exe
			if cfg.Registry {
				if _, err := exec.LookPath("docker-registry"); err != nil {
					if cmd.Flags().Changed("registry") {
						return errors.New("--registry needs docker-registry (Debian's docker-registry; scripts/install-deps.sh installs it)")
					}
					fmt.Fprintln(e.stderr, "note: no docker-registry, so no image registry (scripts/install-deps.sh installs it)")
					cfg.Registry = false
				}
			}
			cfg.Log = e.stderr
			l, err := lab.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer func() {
				fmt.Fprintf(e.stderr, "stopping lab %s...\n", l.Prefix)
				if err := l.Close(); err != nil {
					fmt.Fprintln(e.stderr, "skiff: "+oneLine(err))
				}
			}()
			wctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			err = l.WaitNodes(wctx)
			cancel()
			if err != nil && cmd.Context().Err() == nil {
				fmt.Fprintf(e.stderr, "note: %v (logs in %s/logs)\n", err, l.Dir)
			}
			// An image to start with: busybox, from this machine's
			// busybox-static, as the tests use.
			var image string
			if l.Registry != "" {
				if img, err := testimage.Busybox(); err != nil {
					fmt.Fprintf(e.stderr, "note: no busybox image in the registry: %v\n", oneLine(err))
				} else if image, err = l.PushImage("busybox:1", img); err != nil {
					fmt.Fprintf(e.stderr, "note: push busybox: %v\n", oneLine(err))
				}
			}
			if cmd.Context().Err() == nil {
				printLab(e, l, exe, image)
			}
			<-cmd.Context().Done()
			return nil
		},
	}
	cluster.Flags().IntVar(&cfg.Nodes, "nodes", 3, "number of nodes")
	cluster.Flags().IntVar(&cfg.Servers, "servers", 1, "number of servers: 1, or 3 or 5 for an HA control plane (one network namespace each)")
	cluster.Flags().StringVar(&cfg.Dir, "dir", "", "directory for the lab's data and logs (default: a new temporary one, removed at exit; a given one keeps its logs)")
	cluster.Flags().StringVar(&cfg.PodPrefix, "pod-prefix", "", "IPv6 prefix for pod addresses, passed to the server")
	cluster.Flags().BoolVar(&cfg.Registry, "registry", true, "run an image registry on the bridge for the nodes (needs docker-registry)")
	cmd.AddCommand(cluster)
	return cmd
}

// printLab says what the lab made and how to use it.
func printLab(e *env, l *lab.Lab, exe, image string) {
	w := e.stdout
	fmt.Fprintf(w, "\nskiff lab %s is up (data and logs in %s)\n\n", l.Prefix, l.Dir)
	if srvs := l.Servers(); len(srvs) == 1 {
		fmt.Fprintf(w, "server    %s, on bridge %s (%s)\n", l.URL, l.Bridge, l.Underlay)
	} else {
		fmt.Fprintf(w, "bridge    %s (%s)\n", l.Bridge, l.Underlay)
		for _, s := range srvs {
			fmt.Fprintf(w, "server %s %s, etcd peers at %s, namespace %s\n", s.Name, s.URL, s.PeerURL, s.Namespace.Name)
		}
	}
	if l.Registry != "" {
		fmt.Fprintf(w, "registry  %s, plain HTTP: pods use images named %s/REPO:TAG\n", l.Registry, l.Registry)
	}
	fmt.Fprintf(w, "outside   %s, namespace %s: the IPv4 internet, every node's default gateway\n\n", lab.OutsideIPv4, l.Outside.Name)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tUNDERLAY\tIPV4\tNAMESPACE\tDATA")
	for _, n := range l.Nodes() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.Underlay, n.IPv4, n.Namespace.Name, n.Dir)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nIn another terminal:\n\n")
	fmt.Fprintf(w, "  export SKIFF_CONFIG=%s\n", l.ConfigPath)
	fmt.Fprintf(w, "  %s get nodes\n", exe)
	if len(l.Servers()) > 1 {
		fmt.Fprintf(w, "  %s servers                 # members, leaders, health, raft lag\n", exe)
	}
	if ns := l.Nodes(); len(ns) > 0 {
		fmt.Fprintf(w, "  ip netns exec %s bash      # a shell on node %s\n", ns[0].Namespace.Name, ns[0].Name)
	}
	if image != "" {
		fmt.Fprintf(w, "\nTwo web pods (each asks for 64Mi, so they land on different nodes), then one fetches the other's page:\n\n")
		for i := 1; i <= 2; i++ {
			fmt.Fprintf(w, "  %s apply -f - <<'EOF'\n", exe)
			fmt.Fprintf(w, "kind: Pod\nname: web%d\nspec:\n  containers:\n    - name: web\n      image: \"%s\"\n", i, image)
			fmt.Fprintf(w, "      command: [sh, -c, 'hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']\n")
			fmt.Fprintf(w, "      resources: {memory: 64Mi}\nEOF\n")
		}
		fmt.Fprintf(w, "  %s get pods\n", exe)
		fmt.Fprintf(w, "  %s exec web1 -- wget -qO- \"http://[$(%s get pod/web2 -o json | grep -o '\"ip\": *\"[^\"]*' | cut -d'\"' -f4)]:8080/\"\n", exe, exe)
	}
	fmt.Fprintf(w, "\nCtrl-C stops the lab and removes everything it made.\n")
}
