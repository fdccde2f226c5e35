package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

func controllersCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "controllers",
		Short: "list registered controllers: their steps and the fields they own and read",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %s: use table or json", output)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			l, err := c.Controllers(cmd.Context())
			if err != nil {
				return err
			}
			sort.SliceStable(l, func(a, b int) bool { return l[a].Name < l[b].Name })
			if output == "json" {
				if l == nil {
					l = []client.ControllerInfo{}
				}
				return writeJSONOut(e.stdout, l)
			}
			if len(l) == 0 {
				fmt.Fprintln(e.stderr, "no controllers")
				return nil
			}
			renderControllers(e.stdout, l)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(controllersVerifyCmd(e))
	return cmd
}

// renderControllers writes the controller table.
func renderControllers(w io.Writer, l []client.ControllerInfo) {
	t := newTable(w, "NAME", "BUILTIN", "STEPS", "OWNS", "READS")
	for _, c := range l {
		steps := make([]string, len(c.Spec.Steps))
		for i, s := range c.Spec.Steps {
			steps[i] = string(s.Name)
		}
		builtin := "no"
		if c.Builtin {
			builtin = "yes"
		}
		t.row(c.Name, builtin, orDash(strings.Join(steps, ",")), orDash(joinFields(c.Spec.Owns)), orDash(joinFields(c.Spec.Reads)))
	}
	t.flush()
}

func joinFields(l []api.FieldRef) string {
	s := make([]string, len(l))
	for i, f := range l {
		s[i] = string(f)
	}
	return strings.Join(s, ",")
}

func controllersVerifyCmd(e *env) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "verify -f FILE|-",
		Short: "check Controller registrations in a manifest without registering them",
		Long: `Check every Controller in a manifest the way the server would before
accepting it (its steps, ordering, the fields it owns and reads), without
registering anything. Prints "controller/NAME: ok" or one line per problem,
and fails if any controller has a problem.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			objs, err := e.readManifests("verify", file)
			if err != nil {
				return err
			}
			var ctrls []api.Object
			for _, o := range objs {
				if o.Kind != "Controller" {
					fmt.Fprintf(e.stderr, "%s: skipped, not a Controller\n", o.Ref())
					continue
				}
				ctrls = append(ctrls, o)
			}
			if len(ctrls) == 0 {
				return fmt.Errorf("%s: no Controller objects", file)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			bad := 0
			for _, o := range ctrls {
				errs, err := c.VerifyController(cmd.Context(), o)
				if err != nil {
					return fmt.Errorf("%s: %w", o.Ref(), err)
				}
				if len(errs) == 0 {
					fmt.Fprintf(e.stdout, "%s: ok\n", o.Ref())
					continue
				}
				bad++
				for _, msg := range errs {
					fmt.Fprintf(e.stdout, "%s: %s\n", o.Ref(), oneLineText(msg))
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d controllers did not verify", bad, len(ctrls))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "manifest file, or - for standard input")
	return cmd
}
