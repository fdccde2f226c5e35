package server

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/store"
	"skiff.dev/skiff/workflow"
)

// readCounter counts the reads of single objects' runs: every read of run
// keys but the scan of them all.
type readCounter struct {
	clientv3.KV
	prefix string
	n      *atomic.Int64
}

func (c readCounter) count(ops ...clientv3.Op) {
	for _, op := range ops {
		scan := string(op.RangeBytes()) == clientv3.GetPrefixRangeEnd(c.prefix)
		if op.IsGet() && !scan && bytes.HasPrefix(op.KeyBytes(), []byte(c.prefix)) {
			c.n.Add(1)
		}
	}
}

func (c readCounter) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.count(clientv3.OpGet(key, opts...))
	return c.KV.Get(ctx, key, opts...)
}

func (c readCounter) Txn(ctx context.Context) clientv3.Txn {
	return countedTxn{c.KV.Txn(ctx), c}
}

type countedTxn struct {
	clientv3.Txn
	c readCounter
}

func (t countedTxn) If(cs ...clientv3.Cmp) clientv3.Txn { return countedTxn{t.Txn.If(cs...), t.c} }
func (t countedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.c.count(ops...)
	return countedTxn{t.Txn.Then(ops...), t.c}
}

// recorderEnv is a recorder on an embedded etcd whose terms a test starts.
type recorderEnv struct {
	t     *testing.T
	kv    *clientv3.Client
	reads atomic.Int64
}

func newRecorderEnv(t *testing.T) *recorderEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	e, err := store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return &recorderEnv{t: t, kv: e.Client}
}

// leader returns an orchestrator (a server) leading a term that has just
// begun, whose recorder's reads are counted, and a context of its term.
func (e *recorderEnv) leader() (*Orchestrator, context.Context) {
	o, err := NewOrchestrator(store.New(e.kv, store.Options{Prefix: "/skiff"}), e.kv, "/skiff", slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"admission"})
	if err != nil {
		e.t.Fatal(err)
	}
	o.rec.kv = &clientv3.Client{KV: readCounter{KV: e.kv.KV, prefix: o.rec.prefix, n: &e.reads}}
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	t := &term{ctx: ctx}
	o.cur.Store(t)
	ctx, done := inTerm(ctx, t)
	e.t.Cleanup(done)
	return o, ctx
}

// runID is the ID the engine gives the run started at ms, n-th.
func runID(ms, n int) string { return fmt.Sprintf("%011x-%06x", 1764000000000+ms, n) }

func endedRun(name, id string) workflow.RunRecord {
	return workflow.RunRecord{ID: id, Object: "pod/default/" + name, Kind: "Pod", Namespace: "default", Name: name,
		Generation: 1, Phase: workflow.Up, Target: "running", State: workflow.RunDone, Started: time.UnixMilli(1764000000000)}
}

// stored returns the IDs of name's runs in etcd.
func (e *recorderEnv) stored(name string) []string {
	e.t.Helper()
	p := "/skiff/runs/Pod/default/" + name + "/"
	resp, err := e.kv.Get(context.Background(), p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	for _, kv := range resp.Kvs {
		ids = append(ids, string(kv.Key[len(p):]))
	}
	return ids
}

// recordEach records n ended runs of each name, a flush each, and returns
// their IDs, oldest first.
func recordEach(ctx context.Context, o *Orchestrator, n int, names ...string) []string {
	var ids []string
	for i := range n {
		ids = append(ids, runID(i, i))
		for _, name := range names {
			o.rec.Record(endedRun(name, ids[i]))
		}
		o.rec.flush(ctx)
	}
	return ids
}

// record records ended runs and flushes them.
func record(ctx context.Context, o *Orchestrator, runs ...workflow.RunRecord) {
	for _, r := range runs {
		o.rec.Record(r)
	}
	o.rec.flush(ctx)
}

func (e *recorderEnv) expect(name string, want []string, reads int64) {
	e.t.Helper()
	if got := e.stored(name); !slices.Equal(got, want) {
		e.t.Errorf("%s's stored runs are\n%v, want the newest %d:\n%v", name, got, keepRuns, want)
	}
	if n := e.reads.Swap(0); n != reads {
		e.t.Errorf("%d reads of single objects' runs, want %d", n, reads)
	}
}

// A leader's recorder keeps the newest keepRuns runs of each object, one
// run or many ending at a time, without reading an object's runs: it knows
// what it stored, and that a new object has none.
func TestRecorderDropsOldRunsWithoutReads(t *testing.T) {
	e := newRecorderEnv(t)
	o, ctx := e.leader()
	ids := recordEach(ctx, o, keepRuns+3, "web")
	e.expect("web", ids[3:], 0)
	// Runs out of order (another server's clock), many in one flush.
	more := []string{runID(-5, 100), runID(50, 101), runID(20, 102)}
	record(ctx, o, endedRun("web", more[0]), endedRun("web", more[1]), endedRun("web", more[2]), endedRun("db", runID(1, 1)))
	want := slices.Sorted(slices.Values(append(slices.Clone(ids[3:]), more...)))[3:]
	e.expect("web", want, 0)
	e.expect("db", []string{runID(1, 1)}, 0)
	// A running run is written, and dropped only once a run ends.
	running := endedRun("web", runID(60, 103))
	running.State = workflow.RunRunning
	record(ctx, o, running)
	e.expect("web", append(slices.Clone(want), running.ID), 0)
	record(ctx, o, endedRun("web", running.ID))
	e.expect("web", append(slices.Clone(want[1:]), running.ID), 0)
}

// A new leader's recorder knows nothing of what the last one stored: it
// reads an object's runs once (or takes them from the leader's own read of
// them, loadAll), then knows them.
func TestNewLeaderRecorderReadsOnce(t *testing.T) {
	e := newRecorderEnv(t)
	o, ctx := e.leader()
	ids := recordEach(ctx, o, keepRuns, "web", "db")
	e.expect("web", ids, 0)
	// An older server wrote more than keepRuns, or runs of another form.
	for _, id := range []string{runID(-2, 900), runID(-1, 901), "0-old-form"} {
		if _, err := e.kv.Put(context.Background(), "/skiff/runs/Pod/default/web/"+id, "{}"); err != nil {
			t.Fatal(err)
		}
	}

	defer func(n int64) { scanPage = n }(scanPage)
	scanPage = 3 // the scan of run keys reads pages
	next, nctx := e.leader()
	ids = append(ids, runID(keepRuns, keepRuns))
	record(nctx, next, endedRun("web", ids[keepRuns]))
	e.expect("web", ids[1:], 1)
	// An object of a name with no runs stored has none.
	record(nctx, next, endedRun("api", ids[0]))
	e.expect("api", ids[:1], 0)
	ids = append(ids, runID(keepRuns+1, keepRuns+1))
	record(nctx, next, endedRun("web", ids[keepRuns+1]))
	e.expect("web", ids[2:], 0)

	// What the leader read of db when its term began is what it knows.
	if _, _, err := next.rec.loadAll(nctx, podObject("db")); err != nil {
		t.Fatal(err)
	}
	e.reads.Store(0)
	record(nctx, next, endedRun("db", ids[keepRuns]))
	e.expect("db", ids[1:keepRuns+1], 0)
}

// An object deleted is forgotten; a new one of its name has the runs of
// the old one (run records outlive their object), and they are dropped as
// ever, after one read.
func TestRecorderForgetsDeletedObjects(t *testing.T) {
	e := newRecorderEnv(t)
	o, ctx := e.leader()
	ids := recordEach(ctx, o, keepRuns, "web")
	o.rec.forget(workflow.Ref{Kind: "Pod", Namespace: "default", Name: "web"})
	record(ctx, o)
	if n := len(o.rec.idx.ids); n != 0 {
		t.Errorf("the index holds %d objects after the only one was deleted", n)
	}
	ids = append(ids, runID(keepRuns, keepRuns))
	record(ctx, o, endedRun("web", ids[keepRuns]))
	e.expect("web", ids[1:], 1)
}

// A term's index is of that term: a read made in an earlier one is not
// taken, and a term that ended forgets what it knew.
func TestRecorderIndexIsPerTerm(t *testing.T) {
	e := newRecorderEnv(t)
	o, ctx := e.leader()
	record(ctx, o, endedRun("web", runID(0, 0)))
	old := o.term()
	read := func(name string) []*mvccpb.KeyValue {
		return []*mvccpb.KeyValue{{Key: []byte("/skiff/runs/Pod/default/" + name + "/" + runID(0, 0))}}
	}
	o.rec.seed(old, "Pod/default/db/", 1, read("db"))
	if _, ok := o.rec.idx.ids["Pod/default/db/"]; !ok {
		t.Fatal("the leader did not take its own read")
	}
	tctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o.cur.Store(&term{ctx: tctx})
	o.rec.seed(old, "Pod/default/api/", 1, read("api"))
	if n := len(o.rec.idx.ids); n != 2 {
		t.Errorf("a read of an ended term changed the index: %d objects, want 2", n)
	}
	o.rec.idx.mu.Lock()
	o.rec.idx.use(o.term())
	n := len(o.rec.idx.ids)
	o.rec.idx.mu.Unlock()
	if n != 0 {
		t.Errorf("a new term knows %d objects of the last", n)
	}
}

func podObject(name string) *api.Object {
	return &api.Object{Kind: "Pod", Namespace: "default", Name: name}
}

// A record is stored as the JSON json.Encoder wrote, deflated; records
// stored so, deflated by compress/flate as before, or as plain JSON, read
// back as they were.
func TestRunEncoderStoresEncodingJSON(t *testing.T) {
	fin := time.Date(2026, 11, 25, 1, 44, 31, 751470737, time.UTC)
	recs := []workflow.RunRecord{endedRun("web", runID(0, 0)), {ID: "x", Kind: "Pod", Name: "a<b>&c", Finished: &fin, Steps: []workflow.StepRecord{
		{Name: "schedule", State: workflow.Done, Attempts: 1, Log: []workflow.LogLine{{Time: fin, Attempt: 1, Msg: "placed", Attrs: map[string]any{"node": "n1"}}}},
		{Name: "address", State: workflow.Done, Attempts: 1, Log: []workflow.LogLine{{Time: fin, Attempt: 1, Msg: "address", Attrs: map[string]any{"ip": "fd00::1"}}}},
	}}}
	var enc runEncoder
	for _, rec := range recs {
		var js, old bytes.Buffer
		if err := json.NewEncoder(&js).Encode(&rec); err != nil {
			t.Fatal(err)
		}
		fw, _ := flate.NewWriter(&old, flate.BestSpeed)
		fw.Write(js.Bytes())
		fw.Close()
		got, err := enc.encode(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if inflated, err := io.ReadAll(flate.NewReader(strings.NewReader(got))); err != nil || !bytes.Equal(inflated, js.Bytes()) {
			t.Errorf("%s stored as %q (%v), want %s deflated", rec.ID, inflated, err, js.Bytes())
		}
		for _, stored := range [][]byte{[]byte(got), old.Bytes(), js.Bytes()} {
			var back workflow.RunRecord
			if err := decodeRun(stored, &back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(&back)
			if was, _ := json.Marshal(&rec); !bytes.Equal(again, was) {
				t.Errorf("read back as %s, want %s", again, was)
			}
		}
	}
}

var markSamples = []storedMark{
	{Run: "1a210603a68-000089", Gen: 1, Attempt: 1, Hash: "5143e83087a7c300335904a0", Writes: []string{"status.node", "status.ip"},
		Started: 1764035071592, Finished: 1764035071593, Created: 1764035071500},
	{},
	{Run: "r", Gen: -1, Attempt: -2, Writes: []string{}, Started: -1},
	{Run: "<run>", Hash: "a&b", Writes: []string{"x\u2028\xff\"\\\n"}},
}

// TestStoredMarkJSON: a mark is stored as json.Marshal stored it.
func TestStoredMarkJSON(t *testing.T) {
	for _, m := range markSamples {
		checkMark(t, &m)
	}
}

func checkMark(t *testing.T, m *storedMark) {
	t.Helper()
	want, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.appendJSON([]byte("x")); !bytes.Equal(got, append([]byte("x"), want...)) {
		t.Fatalf("\n got %s\nwant x%s", got, want)
	}
}

func FuzzStoredMarkJSON(f *testing.F) {
	for _, m := range markSamples {
		f.Add(m.Run, m.Hash, m.Gen, m.Attempt, m.Started, m.Finished, m.Created, len(m.Writes))
	}
	f.Fuzz(func(t *testing.T, run, hash string, gen int64, attempt int, s, fin, c int64, writes int) {
		m := storedMark{Run: run, Gen: gen, Attempt: attempt, Hash: hash, Started: s, Finished: fin, Created: c}
		for i := range writes % 4 {
			m.Writes = append(m.Writes, run[:min(i, len(run))]+hash)
		}
		checkMark(t, &m)
	})
}
