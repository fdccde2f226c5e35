package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/store"
)

// StoreOptions size the store benchmark; zero values take the defaults.
type StoreOptions struct {
	Dir        string // etcd data directory; default a fresh temporary one
	Writes     int    // writes per throughput run; default 20000
	Writers    int    // concurrent writers; default 16
	Objects    int    // objects listed; default 10000
	HistoryLen int    // revisions in the history queried; default 1000
	// Members is the number of etcd members: 1 (default) is a lone
	// embedded member, as skiff up runs; 3 or 5 are members of one cluster
	// in this process, peered over TLS on loopback (the servers of an HA
	// control plane, less the network between them). Writes go through
	// the raft leader's member, and once more through a follower's.
	Members int
}

// Store measures the versioned store on an embedded etcd member: write
// throughput with one and with many writers, list latency, history size
// per revision and history query latency.
func Store(ctx context.Context, w io.Writer, o StoreOptions) error {
	if o.Writes == 0 {
		o.Writes = 20000
	}
	if o.Writers == 0 {
		o.Writers = 16
	}
	if o.Objects == 0 {
		o.Objects = 10000
	}
	if o.HistoryLen == 0 {
		o.HistoryLen = 1000
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "skiff-bench-store-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.Dir = d
	}
	var e, follower *store.Embedded
	title := "skiff bench store"
	if o.Members <= 1 {
		var err error
		if e, err = store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: o.Dir}); err != nil {
			return err
		}
		defer e.Close()
	} else {
		members, err := startCluster(ctx, o.Dir, o.Members)
		if err != nil {
			return err
		}
		defer func() {
			for _, m := range members {
				m.Close()
			}
		}()
		for _, m := range members {
			if st := m.Status(); st.Leader == st.ID {
				e = m
			} else {
				follower = m
			}
		}
		if e == nil {
			return fmt.Errorf("no raft leader among the %d members", o.Members)
		}
		title = fmt.Sprintf("skiff bench store --members %d (TLS peers on loopback; writes through the leader's member unless said)", o.Members)
	}
	st := store.New(e.Client, store.Options{})
	var rows []Row

	// Write throughput: small spec changes to existing pods.
	const pool = 256
	for i := 0; i < pool; i++ {
		if err := setGreeting(ctx, st, "default", fmt.Sprintf("w%d", i), 0); err != nil {
			return err
		}
	}
	seqN := o.Writes / 10
	start := time.Now()
	for i := 0; i < seqN; i++ {
		if err := setGreeting(ctx, st, "default", fmt.Sprintf("w%d", i%pool), i+1); err != nil {
			return err
		}
	}
	seq := float64(seqN) / time.Since(start).Seconds()
	rows = append(rows, Row{Metric: "versioned writes/s, 1 writer", Value: fmt.Sprintf("%.0f/s", seq)})

	start = time.Now()
	if err := parallel(o.Writers, o.Writes, func(worker, i int) error {
		name := fmt.Sprintf("w%d", (worker+i*o.Writers)%pool)
		return setGreeting(ctx, st, "default", name, seqN+i+1)
	}); err != nil {
		return err
	}
	conc := float64(o.Writes) / time.Since(start).Seconds()
	rows = append(rows, Row{Metric: fmt.Sprintf("versioned writes/s, %d writers", o.Writers),
		Value: fmt.Sprintf("%.0f/s", conc), Target: "≥ 3000/s", Met: met(conc >= 3000)})
	if follower != nil {
		fst := store.New(follower.Client, store.Options{})
		start = time.Now()
		if err := parallel(o.Writers, o.Writes, func(worker, i int) error {
			name := fmt.Sprintf("w%d", (worker+i*o.Writers)%pool)
			return setGreeting(ctx, fst, "default", name, seqN+o.Writes+i+1)
		}); err != nil {
			return err
		}
		conc := float64(o.Writes) / time.Since(start).Seconds()
		rows = append(rows, Row{Metric: fmt.Sprintf("versioned writes/s, %d writers, through a follower", o.Writers), Value: fmt.Sprintf("%.0f/s", conc)})
	}

	// History size and query latency on one pod with HistoryLen revisions.
	for i := 0; i < o.HistoryLen; i++ {
		if err := setGreeting(ctx, st, "history", "h", i); err != nil {
			return err
		}
	}
	ref := api.Ref{Kind: "Pod", Namespace: "history", Name: "h"}
	size, n, err := historyBytes(ctx, e.Client, "/skiff/h/Pod/history/h/")
	if err != nil {
		return err
	}
	perRev := float64(size) / float64(n)
	rows = append(rows, Row{Metric: "history bytes/revision, small spec change", Value: fmt.Sprintf("%.0f B", perRev),
		Target: "≤ 300 B", Met: met(perRev <= 300)})
	var hq []time.Duration
	for i := 0; i < 50; i++ {
		t := time.Now()
		h, err := st.History(ctx, ref, identity.Filter{})
		if err != nil {
			return err
		}
		if len(h) != o.HistoryLen {
			return fmt.Errorf("history has %d revisions, want %d", len(h), o.HistoryLen)
		}
		hq = append(hq, time.Since(t))
	}
	p99 := percentile(hq, 99)
	rows = append(rows, Row{Metric: fmt.Sprintf("history query, %d revisions, p50", o.HistoryLen), Value: ms(percentile(hq, 50))})
	rows = append(rows, Row{Metric: fmt.Sprintf("history query, %d revisions, p99", o.HistoryLen), Value: ms(p99),
		Target: "≤ 50 ms", Met: met(p99 <= 50*time.Millisecond)})
	var at []time.Duration
	for i := 0; i < 200; i++ {
		t := time.Now()
		if _, err := st.At(ctx, ref, int64(1+i*o.HistoryLen/200)); err != nil {
			return err
		}
		at = append(at, time.Since(t))
	}
	rows = append(rows, Row{Metric: "read an old revision (replay), p99", Value: ms(percentile(at, 99))})

	// List latency over Objects pods in one namespace.
	if err := parallel(o.Writers, o.Objects, func(_, i int) error {
		return setGreeting(ctx, st, "list", fmt.Sprintf("p%d", i), 0)
	}); err != nil {
		return err
	}
	var lq []time.Duration
	for i := 0; i < 10; i++ {
		t := time.Now()
		objs, _, err := st.List(ctx, "Pod", "list")
		if err != nil {
			return err
		}
		if len(objs) != o.Objects {
			return fmt.Errorf("listed %d objects, want %d", len(objs), o.Objects)
		}
		lq = append(lq, time.Since(t))
	}
	rows = append(rows, Row{Metric: fmt.Sprintf("list %d pods, p50", o.Objects), Value: ms(percentile(lq, 50))})
	rows = append(rows, Row{Metric: fmt.Sprintf("list %d pods, p99", o.Objects), Value: ms(percentile(lq, 99))})

	Print(w, title, rows)
	return nil
}

// benchPod is the pod of the README's quick start.
func benchPod(ns, name string, greeting int) *api.Object {
	return &api.Object{Kind: "Pod", Namespace: ns, Name: name, Labels: map[string]string{"app": "web"},
		Spec: map[string]any{
			"containers": []any{map[string]any{
				"name": "app", "image": "busybox:1",
				"command":   []any{"httpd", "-f", "-p", "8080", "-h", "/www"},
				"env":       map[string]any{"GREETING": fmt.Sprintf("hello %d", greeting)},
				"resources": map[string]any{"cpu": "250m", "memory": "64Mi"},
			}},
			"restart": "always", "failover": "manual",
		}}
}

func setGreeting(ctx context.Context, st *store.Store, ns, name string, greeting int) error {
	ref := api.Ref{Kind: "Pod", Namespace: ns, Name: name}
	_, err := st.Mutate(ctx, ref, store.Write{Changer: "operator:bench", Cause: "apply"},
		func(cur *api.Object) (*api.Object, error) { return benchPod(ns, name, greeting), nil })
	return err
}

// parallel runs n calls of fn spread over workers goroutines.
func parallel(workers, n int, fn func(worker, i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := fn(w, i); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// historyBytes sums key and value sizes under a prefix.
func historyBytes(ctx context.Context, kv *clientv3.Client, prefix string) (int, int, error) {
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, err
	}
	size := 0
	for _, kv := range resp.Kvs {
		size += len(kv.Key) + len(kv.Value)
	}
	return size, len(resp.Kvs), nil
}
