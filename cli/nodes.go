package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func nodeCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "operate on nodes"}
	forget := &cobra.Command{
		Use:   "forget NAME",
		Short: "say a node is gone: revoke its credentials and delete its Node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			n, err := c.ForgetNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node %s forgotten (%d token(s) revoked)\n", args[0], n)
			return nil
		},
	}
	cmd.AddCommand(forget)
	return cmd
}
