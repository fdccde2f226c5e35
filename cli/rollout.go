package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/client"
)

func rolloutCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "move a PinnedDeployment's share between its previous and next versions",
		Long: `A PinnedDeployment pins two versions of a pod template, previous and next,
and the share of its replicas on next (spec.nextPercent). Nothing moves unless
you move it:

  skiff rollout set pd/web --next-percent 30   # 30% of the pods run next
  skiff rollout status pd/web                  # follow it until complete or stalled
  skiff rollout set pd/web --next-percent 100  # all of them
  skiff rollout promote pd/web                 # next becomes previous
  skiff rollout abort pd/web                   # back to 0%: previous only

Every move is a revision by you: skiff history pd/web --changer 'operator:*'.`,
	}
	cmd.AddCommand(rolloutStatusCmd(e), rolloutSetCmd(e), rolloutPromoteCmd(e), rolloutAbortCmd(e))
	return cmd
}

// pinnedRef parses a PinnedDeployment reference ("pd/web").
func pinnedRef(arg, ns string) (api.Ref, error) {
	ref, err := oneRef(arg, ns)
	if err != nil {
		return api.Ref{}, err
	}
	if ref.Kind != "PinnedDeployment" {
		return api.Ref{}, fmt.Errorf("%s is a %s: rollout works on PinnedDeployments (pd/NAME)", arg, ref.Kind)
	}
	return ref, nil
}

// pinnedOf decodes a PinnedDeployment's spec and status.
func pinnedOf(obj *api.Object) (*api.PinnedDeploymentSpec, *api.PinnedStatus, error) {
	spec, err := api.DecodeSpecAs[api.PinnedDeploymentSpec](obj)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", obj.Ref(), err)
	}
	var st api.PinnedStatus
	if obj.Status != nil {
		b, _ := json.Marshal(obj.Status)
		json.Unmarshal(b, &st)
	}
	return spec, &st, nil
}

// moveShare writes a change of a PinnedDeployment's spec, based on the
// revision it read so that a concurrent move is not silently overwritten.
func moveShare(cmd *cobra.Command, e *env, arg string, change func(obj *api.Object, spec *api.PinnedDeploymentSpec, st *api.PinnedStatus) error) error {
	ref, err := pinnedRef(arg, e.namespace)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	obj, err := c.Get(cmd.Context(), ref)
	if err != nil {
		return err
	}
	spec, st, err := pinnedOf(&obj)
	if err != nil {
		return err
	}
	before := obj.DeepCopy()
	if err := change(&obj, spec, st); err != nil {
		return err
	}
	b, _ := json.Marshal(spec)
	obj.Spec = nil
	json.Unmarshal(b, &obj.Spec)
	if reflect.DeepEqual(before.Spec, obj.Spec) {
		fmt.Fprintf(e.stdout, "%s unchanged: %s\n", ref, shareText(spec))
		return nil
	}
	res, err := c.Apply(cmd.Context(), api.Object{Kind: obj.Kind, Namespace: obj.Namespace, Name: obj.Name, Labels: obj.Labels, Spec: obj.Spec}, obj.Meta.Revision)
	if err != nil {
		if client.IsCode(err, "conflict") {
			return fmt.Errorf("%w (someone moved it meanwhile: look at skiff history %s, then try again)", err, arg)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %s (rev %d); follow it with skiff rollout status %s\n", ref, shareText(spec), res.Object.Meta.Revision, arg)
	return nil
}

// shareText says where the share is: "next 30% (3 of 10 pods)".
func shareText(spec *api.PinnedDeploymentSpec) string {
	_, next := spec.Split()
	return fmt.Sprintf("next %d%% (%d of %d pods)", spec.NextPercent, next, spec.Replicas)
}

func rolloutSetCmd(e *env) *cobra.Command {
	percent := -1
	cmd := &cobra.Command{
		Use:   "set pd/NAME --next-percent N",
		Short: "put N% of the replicas on the next version (0 to 100)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if percent < 0 || percent > 100 {
				return fmt.Errorf("--next-percent %d: give a percentage from 0 to 100", percent)
			}
			return moveShare(cmd, e, args[0], func(_ *api.Object, spec *api.PinnedDeploymentSpec, _ *api.PinnedStatus) error {
				spec.NextPercent = percent
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&percent, "next-percent", -1, "share of replicas on the next version, 0 to 100")
	cmd.MarkFlagRequired("next-percent")
	return cmd
}

func rolloutPromoteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "promote pd/NAME",
		Short: "make next the previous version, once all replicas run it and are ready",
		Long: `Promote copies the next template into the previous one and sets the share
back to 0%: the pods do not change (they match both templates), and the next
template is free for the following version. A version becomes previous only
after it ran all replicas: the rollout must be complete at 100%.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return moveShare(cmd, e, args[0], func(obj *api.Object, spec *api.PinnedDeploymentSpec, st *api.PinnedStatus) error {
				ref := obj.Ref()
				switch {
				case spec.NextPercent != 100:
					return fmt.Errorf("%s runs next at %d%%: promote needs 100%% first (skiff rollout set %s --next-percent 100)", ref, spec.NextPercent, args[0])
				case st.ObservedGeneration != obj.Meta.Generation || st.State != api.RolloutComplete:
					state := st.State
					if st.ObservedGeneration != obj.Meta.Generation || state == "" {
						state = "not yet observed"
					}
					return fmt.Errorf("%s is not complete at 100%% (%s): wait for it (skiff rollout status %s)", ref, state, args[0])
				}
				spec.Templates.Previous = spec.Templates.Next
				spec.NextPercent = 0
				return nil
			})
		},
	}
}

func rolloutAbortCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "abort pd/NAME",
		Short: "go back to the previous version: the share on next becomes 0%",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return moveShare(cmd, e, args[0], func(_ *api.Object, spec *api.PinnedDeploymentSpec, _ *api.PinnedStatus) error {
				spec.NextPercent = 0
				return nil
			})
		},
	}
}

func rolloutStatusCmd(e *env) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status pd/NAME",
		Short: "follow a rollout until it is complete or stalled",
		Long: `Show each version's pods (desired, current, ready) as they change, until the
rollout is complete (exit 0) or stalled (exit 1, with the reason and skiff why
of the stuck pod). On a terminal the bars are redrawn in place.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := pinnedRef(args[0], e.namespace)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			f, isFile := e.stdout.(*os.File)
			p := &progress{w: e.stdout, tty: isFile && isTerminal(f), ref: ref}
			obj, err := followPinned(ctx, c, ref, p.show)
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%s: not complete after %s: %s", ref, timeout, p.last)
			}
			if err != nil {
				return err
			}
			_, st, _ := pinnedOf(&obj)
			if st.State == api.RolloutStalled {
				fmt.Fprintf(e.stdout, "stalled: %s\n", st.Reason)
				if st.StalledPod != "" {
					podRef := api.Ref{Kind: "Pod", Namespace: ref.Namespace, Name: st.StalledPod}
					if runs, err := c.Runs(cmd.Context(), podRef); err == nil && len(runs) > 0 {
						fmt.Fprintf(e.stdout, "\n$ skiff why pod/%s\n", st.StalledPod)
						renderWhy(e.stdout, runs[0], time.Now())
					}
				}
				return exitError(1)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: wait until complete or stalled)")
	return cmd
}

// followPinned calls show with each state of a PinnedDeployment until the
// pinned controller reports its current generation complete or stalled,
// and returns that state.
func followPinned(ctx context.Context, c *client.Client, ref api.Ref, show func(*api.Object)) (api.Object, error) {
	done := errors.New("done")
	var final api.Object
	check := func(obj *api.Object) bool {
		show(obj)
		_, st, err := pinnedOf(obj)
		if err != nil || st.ObservedGeneration != obj.Meta.Generation {
			return false
		}
		if st.State == api.RolloutComplete || st.State == api.RolloutStalled {
			final = *obj
			return true
		}
		return false
	}
	for {
		list, err := c.List(ctx, ref.Kind, ref.Namespace, "")
		if err != nil {
			return final, err
		}
		found := false
		for i := range list.Items {
			if list.Items[i].Name == ref.Name {
				found = true
				if check(&list.Items[i]) {
					return final, nil
				}
			}
		}
		if !found {
			return final, fmt.Errorf("%s not found", ref)
		}
		err = c.Watch(ctx, ref.Kind, ref.Namespace, list.Revision, func(ev client.Event) error {
			if ev.Object.Name != ref.Name {
				return nil
			}
			if ev.Type == "deleted" {
				return fmt.Errorf("%s was deleted", ref)
			}
			if check(&ev.Object) {
				return done
			}
			return nil
		})
		switch {
		case errors.Is(err, done):
			return final, nil
		case ctx.Err() != nil:
			return final, ctx.Err()
		case err != nil && !strings.HasPrefix(err.Error(), "watch"):
			return final, err
		}
		// The stream ended (a server restart): list again.
		time.Sleep(200 * time.Millisecond)
	}
}

// progress draws a rollout's state: on a terminal, a bar per version
// redrawn in place; elsewhere, a line per change.
type progress struct {
	w     io.Writer
	tty   bool
	ref   api.Ref
	drawn int    // lines drawn last time (terminal)
	last  string // the last state shown
}

func (p *progress) show(obj *api.Object) {
	spec, st, err := pinnedOf(obj)
	if err != nil {
		return
	}
	lines := []string{fmt.Sprintf("%s: %s, %s", p.ref, shareText(spec), stateText(obj, st))}
	for _, v := range []struct {
		name string
		vs   api.VersionStatus
	}{{"previous", st.Previous}, {"next", st.Next}} {
		lines = append(lines, fmt.Sprintf("  %-8s %s %d/%d ready, %s", v.name, bar(v.vs.Ready, v.vs.Desired, 24), v.vs.Ready, v.vs.Desired, podCount(v.vs.Current)))
	}
	if len(st.Strays) > 0 {
		lines = append(lines, fmt.Sprintf("  strays: %s (they match %s but neither template; skiff leaves them alone)", strings.Join(st.Strays, ", "), st.Selector))
	}
	text := strings.Join(lines, "\n")
	if text == p.last {
		return
	}
	p.last = text
	if p.tty {
		if p.drawn > 0 {
			fmt.Fprintf(p.w, "\033[%dA", p.drawn)
		}
		for _, l := range lines {
			fmt.Fprintf(p.w, "\r\033[K%s\n", l)
		}
		p.drawn = len(lines)
		return
	}
	fmt.Fprintf(p.w, "%s: previous %d/%d ready (%s), next %d/%d ready (%s), %s\n", p.ref,
		st.Previous.Ready, st.Previous.Desired, podCount(st.Previous.Current), st.Next.Ready, st.Next.Desired, podCount(st.Next.Current), stateText(obj, st))
}

// stateText is the rollout's state, or that the controller has not seen
// the newest spec yet.
func stateText(obj *api.Object, st *api.PinnedStatus) string {
	if st.ObservedGeneration != obj.Meta.Generation || st.State == "" {
		return fmt.Sprintf("waiting for controller:pinned to take generation %d", obj.Meta.Generation)
	}
	return st.State
}

// bar draws n of total as [#####.....].
func bar(n, total, width int) string {
	filled := width
	if total > 0 {
		filled = min(width, n*width/total)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// podCount is "1 pod", "3 pods".
func podCount(n int) string {
	if n == 1 {
		return "1 pod"
	}
	return fmt.Sprintf("%d pods", n)
}
