package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/agent"
	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

func tokenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "create, list and revoke API tokens"}
	var operator, controller, node, simulator, role string
	var namespaces []string
	create := &cobra.Command{
		Use:   "create (--operator NAME [--role admin|view | --role edit [--namespace NS]...] | --controller NAME | --node NAME | --simulator PREFIX)",
		Short: "issue a token; its secret is printed once and stored only hashed",
		Long: `Issue a token; its secret is printed once and stored only hashed.

An operator token carries a role: admin (the default: everything, tokens
included), edit (objects) or view (reading). --namespace, once or more,
confines an edit token to those namespaces: it changes, deletes, rolls back,
reads, logs and execs into namespaced objects there only, changes no
cluster-scoped object (nodes, grants, controllers) and imports no images.
Without --namespace, edit is cluster-wide.

A simulator token acts for simulated (hollow) nodes named PREFIX-00001,
PREFIX-00002, … (PREFIX, a dash, digits), and for no other node: skiff
agent --simulate N runs them, to measure the control plane at many nodes
(docs/operations.md). It is refused if a node token exists for one of
those names, as a node token is for a name a simulator covers.`,
		Example: `  skiff token create --operator alice --role edit --namespace media --namespace web`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ident string
			n := 0
			for kind, name := range map[string]string{"operator": operator, "controller": controller, "node": node, "simulator": simulator} {
				if name != "" {
					ident, n = kind+":"+name, n+1
				}
			}
			if n != 1 {
				return errors.New("give exactly one of --operator, --controller, --node, --simulator")
			}
			if err := checkTokenNamespaces(operator, role, namespaces); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(cmd.Context(), ident, role, namespaces...)
			if err != nil {
				return err
			}
			if node == "" && simulator == "" {
				fmt.Fprintln(e.stdout, tok)
				return nil
			}
			// A node token is printed as the command that joins the node,
			// a simulator's as the one that runs its nodes.
			cfg, err := client.LoadConfig(e.configPath)
			if err != nil {
				return err
			}
			hash, err := agent.CAHash([]byte(cfg.CA))
			if err != nil {
				return err
			}
			if simulator != "" {
				fmt.Fprintf(e.stdout, "skiff agent --simulate 100 --server %s --token %s --ca-hash %s\n", strings.Join(cfg.Servers, ","), tok, hash)
				return nil
			}
			fmt.Fprintf(e.stdout, "skiff agent --server %s --token %s --ca-hash %s --name %s\n", strings.Join(cfg.Servers, ","), tok, hash, node)
			return nil
		},
	}
	create.Flags().StringVar(&operator, "operator", "", "token for operator:NAME")
	create.Flags().StringVar(&controller, "controller", "", "token for controller:NAME")
	create.Flags().StringVar(&node, "node", "", "token for node:NAME, printed as the skiff agent command that joins it")
	create.Flags().StringVar(&simulator, "simulator", "", "token for simulator:PREFIX, acting for simulated nodes PREFIX-00001…, printed as the skiff agent --simulate command")
	create.Flags().StringVar(&role, "role", "", "operator role: admin (default), edit or view")
	// This shadows the global --namespace (-n), which names the namespace
	// of objects, not of a token.
	create.Flags().StringArrayVarP(&namespaces, "namespace", "n", nil, "confine an edit token to this namespace (repeat for more; default: cluster-wide)")

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
			t := newTable(e.stdout, "ID", "IDENTITY", "ROLE", "NAMESPACES", "CREATED BY", "AGE")
			for _, tk := range toks {
				t.row(tk.ID, tk.Identity, orDash(tk.Role), tokenScope(tk), tk.CreatedBy, age(tk.Created))
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

// checkTokenNamespaces refuses --namespace where the server would, before
// asking it: only an operator's edit role is confined to namespaces.
func checkTokenNamespaces(operator, role string, namespaces []string) error {
	if len(namespaces) == 0 {
		return nil
	}
	if operator == "" {
		return errors.New("--namespace confines only operator tokens (with --role edit); controllers and nodes do what their kind may")
	}
	if role != "edit" {
		if role == "" {
			role = "admin"
		}
		return fmt.Errorf("--namespace confines only the edit role; the %s role is cluster-wide (add --role edit)", role)
	}
	for _, ns := range namespaces {
		if err := api.ValidateName(ns); err != nil {
			return fmt.Errorf("--namespace %v", err)
		}
	}
	return nil
}

// tokenScope is what skiff token list shows of where a token acts: an
// operator's namespaces, or "all".
func tokenScope(tk client.Token) string {
	switch {
	case len(tk.Namespaces) > 0:
		return strings.Join(tk.Namespaces, ",")
	case strings.HasPrefix(tk.Identity, "operator:"):
		return "all"
	}
	return "-"
}
