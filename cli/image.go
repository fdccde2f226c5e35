package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func imageCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "manage images on nodes"}
	var name, node string
	imp := &cobra.Command{
		Use:   "import FILE [--name NAME:TAG] [--node NODE]",
		Short: "import an OCI layout or docker-save archive into a node's image store",
		Long: `Import an image archive (an OCI layout as a directory's tar, or docker save
output, optionally gzipped) into a node's image store, for machines that
cannot reach a registry. The image keeps the archive's own name unless
--name gives one. --node defaults to the cluster's only node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if node == "" {
				nodes, err := c.List(cmd.Context(), "nodes", "", "")
				if err != nil {
					return err
				}
				if len(nodes.Items) != 1 {
					return errors.New("the cluster has more than one node (or none): pick one with --node")
				}
				node = nodes.Items[0].Name
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			imgs, err := c.ImportImage(cmd.Context(), node, name, f)
			if err != nil {
				return fmt.Errorf("import %s: %w", args[0], err)
			}
			for _, img := range imgs {
				fmt.Fprintf(e.stdout, "%s imported on node %s\n", img, node)
			}
			return nil
		},
	}
	imp.Flags().StringVar(&name, "name", "", "name the image NAME:TAG (default: the archive's own reference)")
	imp.Flags().StringVar(&node, "node", "", "node to import on (default: the only node)")
	cmd.AddCommand(imp)
	return cmd
}
