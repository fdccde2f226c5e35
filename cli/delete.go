package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

func deleteCmd(e *env) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "delete KIND/NAME... | KIND NAME",
		Short: "delete objects (their history stays readable)",
		Long: `Delete objects. Objects with a deletion workflow (pods: stopping → stopped)
are marked as being deleted, their steps run, and then they are removed;
delete waits for that (--wait 0 returns at once). History stays readable,
and skiff rollback brings a deleted object back.`,
		Args: cobra.MinimumNArgs(1),
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
				if res.Op != "deleting" {
					fmt.Fprintf(e.stdout, "%s deleted (rev %d)\n", ref, res.Object.Meta.Revision)
					continue
				}
				if wait <= 0 {
					fmt.Fprintf(e.stdout, "%s deletion requested (rev %d)\n", ref, res.Object.Meta.Revision)
					continue
				}
				if err := waitGone(cmd.Context(), c, ref, wait); err != nil {
					return err
				}
				h, err := c.History(cmd.Context(), ref, nil)
				if err != nil || len(h) == 0 {
					fmt.Fprintf(e.stdout, "%s deleted\n", ref)
					continue
				}
				fmt.Fprintf(e.stdout, "%s deleted (rev %d)\n", ref, h[len(h)-1].Rev)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for the deletion workflow; 0 returns at once")
	return cmd
}

// waitGone polls until an object no longer exists.
func waitGone(ctx context.Context, c *client.Client, ref api.Ref, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		_, err := c.Get(ctx, ref)
		if client.IsCode(err, "not_found") {
			return nil
		}
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still being deleted after %s: see skiff why %s", ref, wait, strings.ToLower(ref.Kind)+"/"+ref.Name)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
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
