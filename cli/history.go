package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
)

func historyCmd(e *env) *cobra.Command {
	var changers []string
	var output string
	cmd := &cobra.Command{
		Use:   "history KIND/NAME",
		Short: "list an object's revisions: who changed it, when and why",
		Long: `List an object's revisions, oldest first. --changer keeps revisions whose
changer matches a pattern; repeat it or separate patterns with commas. A
pattern starting with ! excludes: --changer 'operator:*' shows operator
changes only, --changer '!controller:scheduler' hides the scheduler's.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oneRef(args[0], e.namespace)
			if err != nil {
				return err
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %s: use table or json", output)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			h, err := c.History(cmd.Context(), ref, changers)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSONOut(e.stdout, h)
			}
			t := newTable(e.stdout, "REV", "TIME", "CHANGER", "CAUSE")
			for _, en := range h {
				t.row(strconv.FormatInt(en.Rev, 10), en.Time.Local().Format("2006-01-02 15:04:05"), en.Changer, en.Cause)
			}
			t.flush()
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&changers, "changer", nil, "changer pattern (operator:*, !controller:scheduler); repeatable")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func diffCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "diff KIND/NAME REV [REV2]",
		Short: "show what changed between two revisions (REV2 defaults to the current one)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oneRef(args[0], e.namespace)
			if err != nil {
				return err
			}
			revs := make([]int64, 0, 2)
			for _, a := range args[1:] {
				n, err := strconv.ParseInt(a, 10, 64)
				if err != nil || n < 1 {
					return fmt.Errorf("%q is not a revision number", a)
				}
				revs = append(revs, n)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			from, err := c.At(cmd.Context(), ref, revs[0])
			if err != nil {
				return err
			}
			var to api.Object
			if len(revs) == 2 {
				to, err = c.At(cmd.Context(), ref, revs[1])
			} else {
				to, err = c.Get(cmd.Context(), ref)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: revision %d → %d\n", ref, from.Meta.Revision, to.Meta.Revision)
			changes := fieldpath.Changes(diffBody(from), diffBody(to))
			if len(changes) == 0 {
				fmt.Fprintln(e.stdout, "  no changes")
				return nil
			}
			for _, ch := range changes {
				switch {
				case !ch.HadOld:
					fmt.Fprintf(e.stdout, "  + %s: %s\n", ch.Path, compact(ch.New))
				case !ch.HasNew:
					fmt.Fprintf(e.stdout, "  - %s: %s\n", ch.Path, compact(ch.Old))
				default:
					fmt.Fprintf(e.stdout, "  ~ %s: %s → %s\n", ch.Path, compact(ch.Old), compact(ch.New))
				}
			}
			return nil
		},
	}
}

// diffBody is the part of an object a diff compares.
func diffBody(o api.Object) map[string]any {
	m := map[string]any{}
	if len(o.Labels) > 0 {
		l := map[string]any{}
		for k, v := range o.Labels {
			l[k] = v
		}
		m["labels"] = l
	}
	if o.Spec != nil {
		m["spec"] = o.Spec
	}
	if o.Status != nil {
		m["status"] = o.Status
	}
	return m
}

func rollbackCmd(e *env) *cobra.Command {
	var to int64
	cmd := &cobra.Command{
		Use:   "rollback KIND/NAME --to REV",
		Short: "write the labels and spec of an earlier revision as a new revision",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oneRef(args[0], e.namespace)
			if err != nil {
				return err
			}
			if to < 1 {
				return fmt.Errorf("rollback needs --to REV (see skiff history %s)", args[0])
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.Rollback(cmd.Context(), ref, to)
			if err != nil {
				return err
			}
			if res.Op == "unchanged" {
				fmt.Fprintf(e.stdout, "%s unchanged: it already matches revision %d (rev %d)\n", ref, to, res.Object.Meta.Revision)
				return nil
			}
			fmt.Fprintf(e.stdout, "%s rolled back to revision %d (rev %d)\n", ref, to, res.Object.Meta.Revision)
			return nil
		},
	}
	cmd.Flags().Int64Var(&to, "to", 0, "revision to go back to")
	return cmd
}
