package cli

import (
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"skiff.dev/skiff/api"
)

func logsCmd(e *env) *cobra.Command {
	var container string
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs POD [-c CONTAINER] [-f] [--tail N]",
		Short: "print a pod container's output (stdout and stderr, time-stamped)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := podRef(args[0], e.namespace)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			return c.Logs(cmd.Context(), ref, container, tail, follow, e.stdout)
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "container (default: the pod's only one)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().IntVar(&tail, "tail", 0, "print only the last N lines")
	return cmd
}

func execCmd(e *env) *cobra.Command {
	var container string
	var interactive, tty bool
	cmd := &cobra.Command{
		Use:   "exec POD [-c CONTAINER] [-i] [-t] -- COMMAND [ARG...]",
		Short: "run a command in a pod's container; its exit code is skiff's",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := podRef(args[0], e.namespace)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			if tty && !isTerminal(os.Stdin) {
				tty = false // no terminal to give it
			}
			if tty && interactive {
				restore, err := rawTerminal(os.Stdin)
				if err != nil {
					return err
				}
				defer restore()
			}
			stdin := e.stdin
			if !interactive {
				stdin = nil
			}
			code, err := c.Exec(cmd.Context(), ref, container, args[1:], tty, stdin, e.stdout, e.stderr)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "container (default: the pod's only one)")
	cmd.Flags().BoolVarP(&interactive, "stdin", "i", false, "pass standard input to the command")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the command a terminal (when standard input is one)")
	return cmd
}

func podRef(arg, ns string) (api.Ref, error) {
	if _, _, ok := cutKind(arg); ok {
		return api.ParseRef(arg, ns)
	}
	return api.ParseRef("pod/"+arg, ns)
}

func cutKind(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return "", s, false
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
