package server

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// Run records are stored in etcd deflated: their JSON repeats step names,
// states and times, and shrinks about five times, and every pod has one,
// so they are much of what etcd writes, logs and maps into memory.
// Records stored as plain JSON (before this) are read as they are.

// runEncoder deflates run records; it is not safe for concurrent use.
type runEncoder struct {
	buf bytes.Buffer
	fw  *flate.Writer
}

// encode returns rec as stored.
func (e *runEncoder) encode(rec *workflow.RunRecord) (string, error) {
	e.buf.Reset()
	if e.fw == nil {
		e.fw, _ = flate.NewWriter(&e.buf, flate.BestSpeed)
	} else {
		e.fw.Reset(&e.buf)
	}
	if err := json.NewEncoder(e.fw).Encode(rec); err != nil {
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

// markOp stores a completion.
func (r *runRecorder) markOp(ref workflow.Ref, c *workflow.Completion) clientv3.Op {
	b, _ := json.Marshal(storedMark{Run: c.Run, Gen: c.Generation, Attempt: c.Attempt, Hash: c.ReadHash, Writes: c.Writes,
		Started: c.Started.UnixMilli(), Finished: c.Finished.UnixMilli(), Created: c.Created.UnixMilli()})
	return clientv3.OpPut(r.marksPrefix(ref.Kind, ref.Namespace, ref.Name)+c.Phase+"."+c.Step, string(b))
}

// dropMarksOp deletes an object's completions.
func (r *runRecorder) dropMarksOp(ref workflow.Ref) clientv3.Op {
	return clientv3.OpDelete(r.marksPrefix(ref.Kind, ref.Namespace, ref.Name), clientv3.WithPrefix())
}

// loadAll reads what a new leader needs of an object: its recorded runs
// (load) and the completions of its steps, those of this incarnation of
// it (a name used again starts afresh), in one read.
func (r *runRecorder) loadAll(ctx context.Context, obj *api.Object) ([]workflow.RunRecord, []workflow.Completion, error) {
	mp := r.marksPrefix(obj.Kind, obj.Namespace, obj.Name)
	resp, err := r.kv.Txn(ctx).Then(
		clientv3.OpGet(r.objPrefix(obj.Kind, obj.Namespace, obj.Name), clientv3.WithPrefix()),
		clientv3.OpGet(mp, clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, nil, err
	}
	runs := r.withUnwritten(obj.Ref(), resp.Responses[0].GetResponseRange().GetKvs())
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
