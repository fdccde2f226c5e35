package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
)

func deleteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "delete KIND/NAME... | KIND NAME",
		Short: "delete objects (their history stays readable)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := parseRefs(args, e.namespace)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			for _, ref := range refs {
				res, err := c.Delete(cmd.Context(), ref, 0)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s deleted (rev %d)\n", ref, res.Object.Meta.Revision)
			}
			return nil
		},
	}
}

// parseRefs accepts "KIND/NAME..." or "KIND NAME".
func parseRefs(args []string, ns string) ([]api.Ref, error) {
	if len(args) == 2 && !strings.Contains(args[0], "/") && !strings.Contains(args[1], "/") {
		args = []string{args[0] + "/" + args[1]}
	}
	refs := make([]api.Ref, 0, len(args))
	for _, a := range args {
		r, err := api.ParseRef(a, ns)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// oneRef parses the single KIND/NAME argument of history, diff and rollback.
func oneRef(arg, ns string) (api.Ref, error) {
	return api.ParseRef(arg, ns)
}
