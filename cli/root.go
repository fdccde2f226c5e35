// Package cli implements skiff's command line: the operator commands that
// talk to the API (apply, get, delete, history, diff, rollback, token) and
// the daemons (up, server) and benchmarks it starts.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

// env is what every command shares.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	namespace      string
	configPath     string
}

func (e *env) client() (*client.Client, error) {
	cfg, err := client.LoadConfig(e.configPath)
	if err != nil {
		return nil, err
	}
	return client.New(cfg)
}

// readManifests reads and validates the manifest named by -f (or standard
// input for "-").
func (e *env) readManifests(verb, file string) ([]api.Object, error) {
	if file == "" {
		return nil, fmt.Errorf("%s needs -f FILE (or -f - for standard input)", verb)
	}
	var r io.Reader = e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	return api.ParseManifests(file, r, e.namespace)
}

// Run executes one command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "skiff",
		Short:         "skiff runs containers and VMs on your machines",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.PersistentFlags().StringVarP(&e.namespace, "namespace", "n", "default", "namespace of namespaced objects")
	root.PersistentFlags().StringVar(&e.configPath, "config", client.DefaultConfigPath(), "client config file ($SKIFF_CONFIG)")
	root.AddCommand(
		applyCmd(e), getCmd(e), deleteCmd(e), historyCmd(e), diffCmd(e), rollbackCmd(e),
		tokenCmd(e), upCmd(e), serverCmd(e), benchCmd(e), versionCmd(e),
		agentCmd(e), logsCmd(e), execCmd(e), imageCmd(e), nodeCmd(e),
		whyCmd(e), graphCmd(e), journalCmd(e), controllersCmd(e),
		devCmd(e), rolloutCmd(e), serversCmd(e),
		backupCmd(e), restoreCmd(e),
	)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee) // the exit code of a command skiff ran; it said what it had to
		}
		fmt.Fprintln(stderr, "skiff: "+oneLine(err))
		return 1
	}
	return 0
}

// exitError carries a specific exit code.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// Version is set at build time with -ldflags "-X skiff.dev/skiff/cli.Version=...".
var Version = "dev"

func versionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print skiff's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(e.stdout, "skiff "+Version)
			return nil
		},
	}
}
