package pinned

import (
	"fmt"
	"reflect"
	"testing"

	"skiff.dev/skiff/api"
)

// pods makes n pods named prefix0, prefix1, ... of one kind.
func pods(prefix string, n int, p Pod) []Pod {
	out := make([]Pod, n)
	for i := range out {
		out[i] = p
		out[i].Name = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

var (
	prevReady = Pod{MatchesPrevious: true, Ready: true}
	nextReady = Pod{MatchesNext: true, Ready: true}
	nextNew   = Pod{MatchesNext: true}
)

func join(ps ...[]Pod) []Pod {
	var out []Pod
	for _, p := range ps {
		out = append(out, p...)
	}
	return out
}

func TestMake(t *testing.T) {
	tests := []struct {
		name  string
		in    Input
		want  Plan // only the fields checked below
		stuck string
	}{
		{
			name: "first pod of next grows before anything shrinks",
			in:   Input{Replicas: 10, DesiredPrevious: 7, DesiredNext: 3, MaxSurge: 1, Pods: pods("p", 10, prevReady)},
			want: Plan{Create: []string{api.Next}},
		},
		{
			name: "surge used: wait for the new pod",
			in:   Input{Replicas: 10, DesiredPrevious: 7, DesiredNext: 3, MaxSurge: 1, Pods: join(pods("p", 10, prevReady), pods("n", 1, nextNew))},
			want: Plan{},
		},
		{
			name: "new pod ready: one previous goes",
			in:   Input{Replicas: 10, DesiredPrevious: 7, DesiredNext: 3, MaxSurge: 1, Pods: join(pods("p", 10, prevReady), pods("n", 1, nextReady))},
			want: Plan{Delete: []string{"p0"}},
		},
		{
			name: "a larger surge grows several at once",
			in:   Input{Replicas: 10, DesiredPrevious: 0, DesiredNext: 10, MaxSurge: 4, Pods: pods("p", 10, prevReady)},
			want: Plan{Create: []string{api.Next, api.Next, api.Next, api.Next}},
		},
		{
			name: "ready surplus waits while the new pods start",
			in: Input{Replicas: 10, DesiredPrevious: 0, DesiredNext: 10, MaxSurge: 10,
				Pods: join(pods("p", 10, prevReady), pods("n", 5, nextReady), pods("m", 5, nextNew))},
			want: Plan{},
		},
		{
			name: "then it goes at once",
			in:   Input{Replicas: 10, DesiredPrevious: 0, DesiredNext: 10, MaxSurge: 10, Pods: join(pods("p", 10, prevReady), pods("n", 10, nextReady))},
			want: Plan{Delete: []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"}},
		},
		{
			name:  "a stuck next pod stalls the rollout and leaves previous alone",
			in:    Input{Replicas: 10, DesiredPrevious: 7, DesiredNext: 3, MaxSurge: 1, Pods: join(pods("p", 10, prevReady), pods("n", 1, Pod{MatchesNext: true, Stuck: "start failed"}))},
			want:  Plan{},
			stuck: "n0",
		},
		{
			name: "abort deletes the stuck pod at once",
			in:   Input{Replicas: 10, DesiredPrevious: 10, DesiredNext: 0, MaxSurge: 1, Pods: join(pods("p", 10, prevReady), pods("n", 1, Pod{MatchesNext: true, Stuck: "start failed"}))},
			want: Plan{Delete: []string{"n0"}},
		},
		{
			name: "rollback from 100% grows previous first",
			in:   Input{Replicas: 3, DesiredPrevious: 3, DesiredNext: 0, MaxSurge: 1, Pods: pods("n", 3, nextReady)},
			want: Plan{Create: []string{api.Previous}},
		},
		{
			name: "edited template: one ready pod updated in place at a time",
			in:   Input{Replicas: 3, DesiredPrevious: 3, MaxSurge: 1, Pods: pods("o", 3, Pod{InPlacePrevious: true, Ready: true})},
			want: Plan{Update: []Update{{Pod: "o0", Version: api.Previous}}},
		},
		{
			name: "edited template: while one restarts, the others wait",
			in: Input{Replicas: 3, DesiredPrevious: 3, MaxSurge: 1, Pods: join(pods("a", 1, Pod{MatchesPrevious: true}),
				pods("o", 2, Pod{InPlacePrevious: true, Ready: true}))},
			want: Plan{},
		},
		{
			name: "edited template the node cannot take: replaced, grow then shrink",
			in:   Input{Replicas: 2, DesiredPrevious: 2, MaxSurge: 1, Pods: pods("o", 2, Pod{Ready: true})},
			want: Plan{Create: []string{api.Previous}},
		},
		{
			name: "replacement ready: the outdated pod goes",
			in:   Input{Replicas: 2, DesiredPrevious: 2, MaxSurge: 1, Pods: join(pods("o", 2, Pod{Ready: true}), pods("a", 1, Pod{MatchesPrevious: true, Ready: true}))},
			want: Plan{Delete: []string{"o0"}},
		},
		{
			name: "promoted: equal templates, every pod counts",
			in:   Input{Replicas: 3, DesiredPrevious: 3, DesiredNext: 0, MaxSurge: 1, Pods: pods("n", 3, Pod{MatchesPrevious: true, MatchesNext: true, Ready: true})},
			want: Plan{Complete: true},
		},
		{
			name: "scale to zero",
			in:   Input{Replicas: 0, MaxSurge: 1, Pods: pods("p", 2, prevReady)},
			want: Plan{Delete: []string{"p0", "p1"}},
		},
		{
			name: "complete",
			in:   Input{Replicas: 3, DesiredPrevious: 1, DesiredNext: 2, MaxSurge: 1, Pods: join(pods("p", 1, prevReady), pods("n", 2, nextReady))},
			want: Plan{Complete: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Make(tt.in)
			if !reflect.DeepEqual(got.Create, tt.want.Create) || !reflect.DeepEqual(got.Update, tt.want.Update) ||
				!reflect.DeepEqual(got.Delete, tt.want.Delete) || got.Complete != tt.want.Complete || got.Stuck != tt.stuck {
				t.Errorf("Make() = create %v, update %v, delete %v, complete %v, stuck %q; want %v, %v, %v, %v, %q",
					got.Create, got.Update, got.Delete, got.Complete, got.Stuck,
					tt.want.Create, tt.want.Update, tt.want.Delete, tt.want.Complete, tt.stuck)
			}
		})
	}
}

// TestMakeConverges plays plans out, every new or updated pod becoming
// ready at the next observation, and checks that ready pods never drop
// below replicas while share moves, and that every move ends complete.
func TestMakeConverges(t *testing.T) {
	for _, tc := range []struct {
		from, to, surge int
	}{{0, 30, 1}, {30, 100, 1}, {100, 0, 1}, {100, 0, 5}, {0, 100, 100}} {
		t.Run(fmt.Sprintf("%d→%d surge %d", tc.from, tc.to, tc.surge), func(t *testing.T) {
			const replicas = 10
			var cur []Pod
			for i := 0; i < replicas; i++ {
				p := prevReady
				if i < replicas*tc.from/100 {
					p = nextReady
				}
				p.Name = fmt.Sprintf("x%d", i)
				cur = append(cur, p)
			}
			seq := replicas
			next := replicas * tc.to / 100
			for round := 0; ; round++ {
				if round > 100 {
					t.Fatal("no convergence after 100 rounds")
				}
				pl := Make(Input{Replicas: replicas, DesiredPrevious: replicas - next, DesiredNext: next, MaxSurge: tc.surge, Pods: cur})
				if pl.Complete {
					if pl.Next.Current != next || pl.Previous.Current != replicas-next {
						t.Fatalf("complete with %d next, %d previous", pl.Next.Current, pl.Previous.Current)
					}
					return
				}
				// Everything that was waiting is ready now.
				for i := range cur {
					cur[i].Ready = true
				}
				gone := map[string]bool{}
				for _, n := range pl.Delete {
					gone[n] = true
				}
				var kept []Pod
				ready := 0
				for _, p := range cur {
					if !gone[p.Name] {
						kept = append(kept, p)
						ready++
					}
				}
				if ready < replicas {
					t.Fatalf("round %d: %d ready pods left after deleting %v", round, ready, pl.Delete)
				}
				for _, v := range pl.Create {
					seq++
					kept = append(kept, Pod{Name: fmt.Sprintf("x%d", seq), MatchesNext: v == api.Next, MatchesPrevious: v == api.Previous})
				}
				if len(kept) > replicas+tc.surge {
					t.Fatalf("round %d: %d pods, more than replicas + surge", round, len(kept))
				}
				cur = kept
			}
		})
	}
}
