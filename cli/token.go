package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/agent"
	"skiff.dev/skiff/client"
)

func tokenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "create, list and revoke API tokens"}
	var operator, controller, node, role string
	create := &cobra.Command{
		Use:   "create (--operator NAME [--role admin|edit|view] | --controller NAME | --node NAME)",
		Short: "issue a token; its secret is printed once and stored only hashed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ident string
			n := 0
			for kind, name := range map[string]string{"operator": operator, "controller": controller, "node": node} {
				if name != "" {
					ident, n = kind+":"+name, n+1
				}
			}
			if n != 1 {
				return errors.New("give exactly one of --operator, --controller, --node")
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(cmd.Context(), ident, role)
			if err != nil {
				return err
			}
			if node == "" {
				fmt.Fprintln(e.stdout, tok)
				return nil
			}
			// A node token is printed as the command that joins the node.
			cfg, err := client.LoadConfig(e.configPath)
			if err != nil {
				return err
			}
			hash, err := agent.CAHash([]byte(cfg.CA))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "skiff agent --server %s --token %s --ca-hash %s --name %s\n", cfg.Servers[0], tok, hash, node)
			return nil
		},
	}
	create.Flags().StringVar(&operator, "operator", "", "token for operator:NAME")
	create.Flags().StringVar(&controller, "controller", "", "token for controller:NAME")
	create.Flags().StringVar(&node, "node", "", "token for node:NAME, printed as the skiff agent command that joins it")
	create.Flags().StringVar(&role, "role", "", "operator role: admin (default), edit or view")

	list := &cobra.Command{
		Use:   "list",
		Short: "list tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			toks, err := c.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			t := newTable(e.stdout, "ID", "IDENTITY", "ROLE", "CREATED BY", "AGE")
			for _, tk := range toks {
				t.row(tk.ID, tk.Identity, orDash(tk.Role), tk.CreatedBy, age(tk.Created))
			}
			t.flush()
			return nil
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "revoke a token; requests with it fail from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "token %s revoked\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
