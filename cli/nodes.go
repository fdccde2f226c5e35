package cli

import (
	"fmt"

	"skiff.dev/skiff/api"

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
	for _, c := range []struct {
		use, short    string
		unschedulable bool
	}{
		{"cordon NAME", "keep new pods off a node; those on it stay", true},
		{"uncordon NAME", "let new pods onto a node again", false},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   c.use,
			Short: c.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return setUnschedulable(cmd, e, args[0], c.unschedulable)
			},
		})
	}
	cmd.AddCommand(forget)
	return cmd
}

// setUnschedulable writes a Node's spec.unschedulable as the operator,
// keeping the rest of its spec and labels; it is in the Node's history.
func setUnschedulable(cmd *cobra.Command, e *env, name string, on bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	ref := api.Ref{Kind: "Node", Name: name}
	n, err := c.Get(cmd.Context(), ref)
	if err != nil {
		return err
	}
	if cur, _ := n.Spec["unschedulable"].(bool); cur == on {
		fmt.Fprintf(e.stdout, "node/%s unchanged (unschedulable: %v)\n", name, on)
		return nil
	}
	spec := map[string]any{}
	for k, v := range n.Spec {
		spec[k] = v
	}
	if on {
		spec["unschedulable"] = true
	} else {
		delete(spec, "unschedulable")
	}
	res, err := c.Apply(cmd.Context(), api.Object{Kind: "Node", Name: name, Labels: n.Labels, Spec: spec}, n.Meta.Revision)
	if err != nil {
		return err
	}
	verb := "cordoned"
	if !on {
		verb = "uncordoned"
	}
	fmt.Fprintf(e.stdout, "node/%s %s (rev %d)\n", name, verb, res.Object.Meta.Revision)
	return nil
}
