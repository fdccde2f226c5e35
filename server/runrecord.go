package server

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"hash/maphash"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	kflate "github.com/klauspost/compress/flate"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// Run records are stored in etcd deflated: their JSON repeats step names,
// states and times, and shrinks about four times, and every pod has one,
// so they are much of what etcd writes, logs and maps into memory (stored
// as plain JSON, they cost more CPU in etcd than deflating them does).
// Records stored as plain JSON (before this) are read as they are.
//
// They are deflated by klauspost/compress (in the binary already, for the
// zstd of image layers): at its fastest it takes half the CPU of
// compress/flate's BestSpeed on a record of a few KiB, for a little less
// output, and writes the same format; compress/flate reads it.

// runEncoder deflates run records; it is not safe for concurrent use.
type runEncoder struct {
	js  []byte // the record's JSON
	buf bytes.Buffer
	fw  *kflate.Writer
}

// encode returns rec as stored: its JSON as json.Encoder writes it (with
// a newline), deflated.
func (e *runEncoder) encode(rec *workflow.RunRecord) (string, error) {
	js, err := rec.AppendJSON(e.js[:0])
	if err != nil {
		return "", err
	}
	e.js = append(js, '\n')
	e.buf.Reset()
	if e.fw == nil {
		e.fw, _ = kflate.NewWriter(&e.buf, kflate.BestSpeed)
	} else {
		e.fw.Reset(&e.buf)
	}
	if _, err := e.fw.Write(e.js); err != nil {
		return "", err
	}
	if err := e.fw.Close(); err != nil {
		return "", err
	}
	return e.buf.String(), nil
}

// decodeRun reads a stored run record, deflated or plain JSON.
func decodeRun(b []byte, rec *workflow.RunRecord) error {
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, rec)
	}
	return json.NewDecoder(flate.NewReader(bytes.NewReader(b))).Decode(rec)
}

// Step completions (workflow.Completion) are stored one key per step of
// an object, PREFIX/steps/KIND/NS/NAME/PHASE.STEP, holding the newest:
// a new leader needs no more to skip what succeeded and resume a run.
// Each is written in the transaction of its step's writes, so it is a
// hundred-odd bytes of JSON, not a run record.

// storedMark is a completion as stored.
type storedMark struct {
	Run      string   `json:"r"`
	Gen      int64    `json:"g"`
	Attempt  int      `json:"a"`
	Hash     string   `json:"h,omitempty"`
	Writes   []string `json:"w,omitempty"`
	Started  int64    `json:"s"` // Unix ms
	Finished int64    `json:"f"`
	Created  int64    `json:"c"` // the object's, Unix ms
}

func (r *runRecorder) marksPrefix(kind, ns, name string) string {
	if ns == "" {
		ns = "_"
	}
	return r.marks + kind + "/" + ns + "/" + name + "/"
}

// appendJSON appends m as json.Marshal encodes it, without reflection: a
// mark is stored with every step's completion.
func (m *storedMark) appendJSON(b []byte) []byte {
	start := len(b)
	b = append(b, `{"r":`...)
	b = api.AppendString(b, m.Run)
	b = append(b, `,"g":`...)
	b = strconv.AppendInt(b, m.Gen, 10)
	b = append(b, `,"a":`...)
	b = strconv.AppendInt(b, int64(m.Attempt), 10)
	if m.Hash != "" {
		b = append(b, `,"h":`...)
		b = api.AppendString(b, m.Hash)
	}
	if len(m.Writes) > 0 {
		b = append(b, `,"w":[`...)
		for i, w := range m.Writes {
			if i > 0 {
				b = append(b, ',')
			}
			b = api.AppendString(b, w)
		}
		b = append(b, ']')
	}
	b = append(b, `,"s":`...)
	b = strconv.AppendInt(b, m.Started, 10)
	b = append(b, `,"f":`...)
	b = strconv.AppendInt(b, m.Finished, 10)
	b = append(b, `,"c":`...)
	b = strconv.AppendInt(b, m.Created, 10)
	b = append(b, '}')
	return api.EscapeHTML(b, start)
}

// markOp stores a completion.
func (r *runRecorder) markOp(ref workflow.Ref, c *workflow.Completion) clientv3.Op {
	m := storedMark{Run: c.Run, Gen: c.Generation, Attempt: c.Attempt, Hash: c.ReadHash, Writes: c.Writes,
		Started: c.Started.UnixMilli(), Finished: c.Finished.UnixMilli(), Created: c.Created.UnixMilli()}
	return clientv3.OpPut(r.marksPrefix(ref.Kind, ref.Namespace, ref.Name)+c.Phase+"."+c.Step, string(m.appendJSON(make([]byte, 0, 160))))
}

// dropMarksOp deletes an object's completions.
func (r *runRecorder) dropMarksOp(ref workflow.Ref) clientv3.Op {
	return clientv3.OpDelete(r.marksPrefix(ref.Kind, ref.Namespace, ref.Name), clientv3.WithPrefix())
}

// loadAll reads what a new leader needs of an object: its recorded runs
// (load) and the completions of its steps, those of this incarnation of
// it (a name used again starts afresh), in one read.
func (r *runRecorder) loadAll(ctx context.Context, obj *api.Object) ([]workflow.RunRecord, []workflow.Completion, error) {
	mp, rp := r.marksPrefix(obj.Kind, obj.Namespace, obj.Name), r.objPrefix(obj.Kind, obj.Namespace, obj.Name)
	t := r.o.term()
	resp, err := r.kv.Txn(ctx).Then(clientv3.OpGet(rp, clientv3.WithPrefix()), clientv3.OpGet(mp, clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, nil, err
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	r.seed(t, rp[len(r.prefix):], resp.Header.Revision, kvs)
	runs := r.withUnwritten(obj.Ref(), kvs)
	var done []workflow.Completion
	created := obj.Meta.Created.UnixMilli()
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		var m storedMark
		if json.Unmarshal(kv.Value, &m) != nil || m.Created != created {
			continue
		}
		phase, step, _ := strings.Cut(string(kv.Key[len(mp):]), ".")
		done = append(done, workflow.Completion{Run: m.Run, Step: step, Phase: phase, Generation: m.Gen, Attempt: m.Attempt,
			ReadHash: m.Hash, Writes: m.Writes, Started: time.UnixMilli(m.Started), Finished: time.UnixMilli(m.Finished),
			Created: obj.Meta.Created})
	}
	return runs, done, nil
}

// guarded turns a transaction whose guard did not hold into an error.
func guarded(resp *clientv3.TxnResponse, err error) error {
	if err == nil && !resp.Succeeded {
		err = errNotLeader
	}
	return err
}

// What the recorder knows of the runs stored per object.
//
// Once a run ends, the recorder drops its object's runs beyond the newest
// keepRuns. Reading an object's run keys to find them is a read under a
// stream of writes, and each such read copies etcd's buffer of writes not
// yet committed to its database; most objects have far fewer runs. So the
// recorder keeps, per object, the IDs of its stored runs (runIndex), and
// reads only the runs of objects it does not know.
//
// It knows an object once it read the object's runs (loadAll when a term
// starts, load, or its own read) and from its own writes after that. An
// object with no runs it knows as well once the term's scan of all run
// keys is done: the scan notes, as a hash, each object that has runs (of
// objects deleted long ago too), so that any other has none. An object
// deleted is forgotten: its hash is noted. The index is for one term: the
// writes of other leaders came before it, and a new term starts afresh.

// idLen is the length of the run IDs the engine makes ("%011x-%06x"); an
// object with a run of another ID is not kept in the index.
const idLen = len("0123456789a-000001")

// runIDs are an object's run IDs, sorted, idLen bytes each, in one string:
// half the memory of a slice of strings, for each of 50,000 objects.
type runIDs string

func (s runIDs) count() int      { return len(s) / idLen }
func (s runIDs) at(i int) string { return string(s[i*idLen : (i+1)*idLen]) }

// with returns s with id in it; false if id is not of the engine's form.
func (s runIDs) with(id string) (runIDs, bool) {
	if len(id) != idLen {
		return s, false
	}
	i, found := sort.Find(s.count(), func(i int) int { return strings.Compare(id, s.at(i)) })
	if found {
		return s, true
	}
	return s[:i*idLen] + runIDs(id) + s[i*idLen:], true
}

// runIndex is what the recorder knows of the runs stored, for one term.
// Objects are named by their key under the recorder's prefix
// (KIND/NS/NAME/).
type runIndex struct {
	mu       sync.Mutex
	term     *term               // whose the index is; nil: none
	ids      map[string]runIDs   // object → its stored runs
	maybe    map[uint64]struct{} // hashes of objects that may have runs ids does not hold
	complete bool                // the scan is done: an object in neither has no runs
	scanned  time.Time           // when the scan was last tried
	wrote    int64               // the newest etcd revision the recorder wrote at
	// floor is the etcd revision a read must be at for the index to take
	// it: an object's read before a write of its runs that the index did
	// not follow (the object was not known, or forgotten since) lacks it.
	floor int64
	hash  maphash.Seed
}

// use readies the index for t, starting afresh for a term it was not of;
// it reports false for no term. x.mu is held.
func (x *runIndex) use(t *term) bool {
	if t == nil {
		return false
	}
	if x.term != t {
		x.reset()
		x.term = t
	}
	return true
}

// reset forgets everything. x.mu is held.
func (x *runIndex) reset() {
	x.term, x.ids, x.maybe, x.complete, x.scanned, x.wrote, x.floor = nil, nil, nil, false, time.Time{}, 0, 0
	if x.hash == (maphash.Seed{}) {
		x.hash = maphash.MakeSeed()
	}
}

func (x *runIndex) mayHave(obj string) {
	if x.maybe == nil {
		x.maybe = map[uint64]struct{}{}
	}
	x.maybe[maphash.String(x.hash, obj)] = struct{}{}
}

// known returns obj's stored runs, if the index knows them. x.mu is held.
func (x *runIndex) known(obj string) (runIDs, bool) {
	if ids, ok := x.ids[obj]; ok {
		return ids, true
	}
	if _, ok := x.maybe[maphash.String(x.hash, obj)]; ok || !x.complete {
		return "", false
	}
	return "", true
}

// set notes obj's stored runs, as etcd returns them (sorted); a run of an
// ID not of the engine's form makes obj unknown. x.mu is held.
func (x *runIndex) set(obj string, ids []string) {
	for _, id := range ids {
		if len(id) != idLen {
			x.drop(obj)
			return
		}
	}
	x.put(obj, runIDs(strings.Join(ids, "")))
}

// put notes obj's stored runs. x.mu is held.
func (x *runIndex) put(obj string, ids runIDs) {
	if x.ids == nil {
		x.ids = map[string]runIDs{}
	}
	// A copy: obj is often cut from a longer key, and a map keeps the key
	// of each assignment.
	x.ids[strings.Clone(obj)] = ids
}

// drop makes obj unknown. x.mu is held.
func (x *runIndex) drop(obj string) {
	delete(x.ids, obj)
	x.mayHave(obj)
}

// seed takes an object's runs read at etcd revision rev, during term t,
// unless the index knows it already (it is then as new), or writes the
// read may not show came after rev. No runs it leaves to the scan: a
// request for any name would add it.
func (r *runRecorder) seed(t *term, obj string, rev int64, kvs []*mvccpb.KeyValue) {
	if len(kvs) == 0 {
		return
	}
	x := &r.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	if !r.o.leading(t) || !x.use(t) || rev < x.floor {
		return
	}
	if _, ok := x.ids[obj]; ok {
		return
	}
	ids := make([]string, len(kvs))
	for i, kv := range kvs {
		ids[i] = string(kv.Key[len(r.prefix)+len(obj):])
	}
	x.set(obj, ids)
}

// forget drops a deleted object from the index, once the records of its
// runs not yet written are.
func (r *runRecorder) forget(ref workflow.Ref) {
	r.mu.Lock()
	r.gone = append(r.gone, r.objPrefix(ref.Kind, ref.Namespace, ref.Name)[len(r.prefix):])
	r.mu.Unlock()
}

// scanPage is how many run keys one read of the scan returns.
var scanPage int64 = 10000

// scan reads the keys of all stored runs, once per term (a failed scan is
// tried again a second later), and notes each object that has runs: the
// index then knows the others have none. It runs in flush, before its
// writes: the only writes of run keys in a term are the recorder's.
func (r *runRecorder) scan(ctx context.Context, t *term) {
	x := &r.idx
	x.mu.Lock()
	due := x.use(t) && !x.complete && time.Since(x.scanned) >= time.Second
	if due {
		x.scanned = time.Now()
	}
	x.mu.Unlock()
	if !due {
		return
	}
	var objs []string
	from := r.prefix
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(r.prefix)), clientv3.WithKeysOnly(), clientv3.WithLimit(scanPage)}
	for {
		resp, err := r.kv.Get(ctx, from, opts...)
		if err != nil {
			r.log.Warn("read the keys of recorded runs", "err", err)
			return
		}
		for _, kv := range resp.Kvs {
			rest := kv.Key[len(r.prefix):]
			if obj := rest[:bytes.LastIndexByte(rest, '/')+1]; len(objs) == 0 || objs[len(objs)-1] != string(obj) {
				objs = append(objs, string(obj))
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		if from == r.prefix {
			opts = append(opts, clientv3.WithRev(resp.Header.Revision)) // one snapshot
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.term != t {
		return
	}
	for _, obj := range objs {
		x.mayHave(obj)
	}
	x.complete = true
}
