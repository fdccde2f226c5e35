package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func applyCmd(e *env) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "create or update the objects in a manifest",
		Long: `Create or update every object in a YAML (or JSON) manifest; documents are
separated by ---. The whole manifest is validated before anything is written,
so a bad document changes nothing. Existing objects get the manifest's labels
and spec as a new revision; status and meta in the file are ignored.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			objs, err := e.readManifests("apply", file)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			for _, o := range objs {
				if o.Namespace != "" && cmd.Flags().Changed("namespace") && o.Namespace != e.namespace {
					return fmt.Errorf("%s: the manifest says namespace %s but -n says %s", o.Ref(), o.Namespace, e.namespace)
				}
			}
			if len(objs) == 1 {
				res, err := c.Apply(cmd.Context(), objs[0], 0)
				if err != nil {
					return fmt.Errorf("%s: %w", objs[0].Ref(), err)
				}
				fmt.Fprintf(e.stdout, "%s %s (rev %d)\n", res.Object.Ref(), res.Op, res.Object.Meta.Revision)
				return nil
			}
			// Many objects go in one request (or a few), applied in order
			// up to the first that fails, as one by one would.
			done, err := c.ApplyList(cmd.Context(), objs)
			for _, res := range done {
				fmt.Fprintf(e.stdout, "%s %s (rev %d)\n", res.Object.Ref(), res.Op, res.Object.Meta.Revision)
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "manifest file, or - for standard input")
	return cmd
}
