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
		use, short, done string
		set              map[string]bool
	}{
		{"cordon NAME", "keep new pods off a node; those on it stay", "cordoned", map[string]bool{"unschedulable": true}},
		{"uncordon NAME", "let new pods onto a node again (and stop draining it)", "uncordoned", map[string]bool{"unschedulable": false, "drain": false}},
		{"drain NAME", "move every pod off a node, each stopped there before it starts elsewhere; the node stays cordoned",
			"draining", map[string]bool{"unschedulable": true, "drain": true}},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   c.use,
			Short: c.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return setNodeSpec(cmd, e, args[0], c.done, c.set)
			},
		})
	}
	cmd.AddCommand(forget)
	return cmd
}

// setNodeSpec writes boolean fields of a Node's spec (unschedulable,
// drain) as the operator, keeping the rest of its spec and labels; the
// change is in the Node's history.
func setNodeSpec(cmd *cobra.Command, e *env, name, done string, set map[string]bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	ref := api.Ref{Kind: "Node", Name: name}
	n, err := c.Get(cmd.Context(), ref)
	if err != nil {
		return err
	}
	spec := map[string]any{}
	for k, v := range n.Spec {
		spec[k] = v
	}
	changed := false
	for k, on := range set {
		if cur, _ := spec[k].(bool); cur != on {
			changed = true
		}
		if on {
			spec[k] = true
		} else {
			delete(spec, k)
		}
	}
	if !changed {
		fmt.Fprintf(e.stdout, "node/%s unchanged\n", name)
		return nil
	}
	res, err := c.Apply(cmd.Context(), api.Object{Kind: "Node", Name: name, Labels: n.Labels, Spec: spec}, n.Meta.Revision)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "node/%s %s (rev %d)\n", name, done, res.Object.Meta.Revision)
	if done == "draining" {
		fmt.Fprintf(e.stdout, "follow it with: skiff get node %s   (STATE: draining, then drained)\n", name)
	}
	return nil
}
