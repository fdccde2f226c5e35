package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
	"skiff.dev/skiff/api/identity"
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Prefix of every key the store writes; default "/skiff".
	Prefix string
	// SnapshotEvery is how often a revision stores the whole object rather
	// than a patch; default 16.
	SnapshotEvery int64
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Store is the versioned object store. It is safe for concurrent use.
type Store struct {
	kv      *clientv3.Client
	prefix  string
	every   int64
	now     func() time.Time
	known   known  // objects lately written or read, for Mutate
	recent  recent // objects lately written by MutateShared, decoded (shared.go)
	commits committer
}

// New returns a store on an etcd client.
func New(kv *clientv3.Client, o Options) *Store {
	s := &Store{kv: kv, prefix: o.Prefix, every: o.SnapshotEvery, now: o.Now, commits: committer{kv: kv}}
	s.known.seed = maphash.MakeSeed()
	if s.prefix == "" {
		s.prefix = "/skiff"
	}
	if s.every <= 0 {
		s.every = 16
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Write says who writes and why.
type Write struct {
	Changer string // identity of the writer, e.g. operator:alice
	Cause   string // why, e.g. "apply", "rollback to 3"
	// Expect, when non-zero, is the revision the writer based its change on.
	// If the object has moved on, the write fails with ErrConflict.
	Expect int64
	// Guard, when set, are compares that must hold when the write is
	// applied, in the same transaction; if one does not, nothing is
	// written and the write fails with ErrGuard. A leader's writes carry
	// a compare on its election key, so a deposed one writes nothing.
	Guard []clientv3.Cmp
	// Also are operations on keys outside the store's (a step's
	// completion marker) committed in the same transaction as the write,
	// and only with it. A write that changes nothing commits none.
	Also []clientv3.Op
}

// ErrGuard means a write's Guard did not hold: nothing was written.
var ErrGuard = errors.New("the writer's guard does not hold")

// commit runs a write's transaction on the object at key: cmps then ops,
// with w's guard and extra operations, grouped with other writes waiting
// (commit.go). succeeded reports whether cmps held; a guard that does not
// hold is ErrGuard.
func (s *Store) commit(ctx context.Context, w Write, key string, cmps []clientv3.Cmp, ops ...clientv3.Op) (resp *clientv3.TxnResponse, succeeded bool, err error) {
	return s.commits.commit(ctx, w.Guard, key, cmps, append(ops, w.Also...))
}

// Op says what a write did.
type Op string

const (
	Created    Op = "created"
	Configured Op = "configured"
	Unchanged  Op = "unchanged"
	Deleted    Op = "deleted"
)

// Result of a write.
type Result struct {
	Object api.Object
	Op     Op
}

func nsKey(ns string) string {
	if ns == "" {
		return "_"
	}
	return ns
}

func (s *Store) objKey(r api.Ref) string {
	return s.prefix + "/o/" + r.Kind + "/" + nsKey(r.Namespace) + "/" + r.Name
}

func (s *Store) histPrefix(r api.Ref) string {
	return s.prefix + "/h/" + r.Kind + "/" + nsKey(r.Namespace) + "/" + r.Name + "/"
}

func (s *Store) histKey(r api.Ref, rev int64) string {
	var d [20]byte
	n := strconv.AppendInt(d[:0], rev, 10)
	zeros := "000000000000"[:max(12-len(n), 0)] // as %012d pads a revision
	return s.histPrefix(r) + zeros + string(n)
}

// Get returns the current object.
func (s *Store) Get(ctx context.Context, ref api.Ref) (api.Object, error) {
	o, _, err := s.get(ctx, ref)
	if err != nil {
		return api.Object{}, err
	}
	if o == nil {
		return api.Object{}, notFound(ref)
	}
	return *o, nil
}

// get returns the object (nil if absent) and its etcd mod revision.
func (s *Store) get(ctx context.Context, ref api.Ref) (*api.Object, int64, error) {
	resp, err := s.kv.Get(ctx, s.objKey(ref))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: read: %w", ref, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	o, err := decodeObject(ref, resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return o, resp.Kvs[0].ModRevision, nil
}

// List returns the objects of a kind, in one namespace or in all (ns ""),
// sorted by namespace and name, and the store revision they were read at,
// from which Watch can continue.
func (s *Store) List(ctx context.Context, kind, ns string) ([]api.Object, int64, error) {
	p := s.prefix + "/o/" + kind + "/"
	if ns != "" {
		p += ns + "/"
	}
	resp, err := s.kv.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", kind, err)
	}
	objs := make([]api.Object, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := api.UnmarshalObject(kv.Value, &objs[i]); err != nil {
			return nil, 0, fmt.Errorf("list %s: %s is damaged: %v", kind, kv.Key, err)
		}
	}
	if ns == "" {
		// Key order puts "team-b/" before "team/" ('-' < '/'): sort by
		// namespace, then name, as users read it.
		sort.SliceStable(objs, func(i, j int) bool {
			if objs[i].Namespace != objs[j].Namespace {
				return objs[i].Namespace < objs[j].Namespace
			}
			return objs[i].Name < objs[j].Name
		})
	}
	return objs, resp.Header.Revision, nil
}

// Mutate reads the object (nil if it does not exist), lets fn compute its
// next state, and writes that as a new revision. fn returns nil to change
// nothing. fn may be called more than once when other writers race; it must
// not keep state between calls. Labels, spec, status and meta.owner are
// taken from fn's result; the other meta fields are the store's.
//
// An object this store wrote or read lately is not read again: fn gets
// the remembered one, and the write's compare on the etcd mod revision
// proves it current (when it is not, the object is read and fn is asked
// again). An object it does not know is
// first taken to be absent, as a creation is. A refusal by fn (an error,
// nil, or no change) of an object not read from etcd by this call is
// checked against a fresh read before it is returned.
func (s *Store) Mutate(ctx context.Context, ref api.Ref, w Write, fn func(cur *api.Object) (*api.Object, error)) (Result, error) {
	return s.mutate(ctx, ref, w, fn, false)
}

// MutateShared is Mutate for an fn that does not modify cur: fn gets the
// object the store decoded, not a copy of it, and returns a new object (or
// cur itself, or nil, for no change) that may share with cur every map,
// list and value it leaves as it was (copy on write, as
// fieldpath.ApplyEdits does). fn must modify nothing reachable from cur:
// the store compares the result with cur, and a map or list found in both
// is seen as unchanged without looking inside. The Result's Object may
// share parts with cur and with fn's result, and the store keeps what it
// wrote, for the next write and for WatchShared (shared.go): neither fn's
// result nor the Result may be modified afterwards either.
func (s *Store) MutateShared(ctx context.Context, ref api.Ref, w Write, fn func(cur *api.Object) (*api.Object, error)) (Result, error) {
	return s.mutate(ctx, ref, w, fn, true)
}

// mutate is Mutate, or MutateShared if shared is set.
func (s *Store) mutate(ctx context.Context, ref api.Ref, w Write, fn func(cur *api.Object) (*api.Object, error), shared bool) (Result, error) {
	if w.Changer == "" {
		return Result{}, fmt.Errorf("%s: write without a changer", ref)
	}
	key := s.objKey(ref)
	b := base{shared: shared}
	if raw, modRev, ok := s.known.get(ref.Kind, key); ok {
		if o, ok := s.recent.get(key, modRev); ok {
			b.cur = o.use()
		} else {
			o, err := decodeObject(ref, readOnlyBytes(raw))
			if err != nil {
				return Result{}, err
			}
			b.cur = o
		}
		b.modRev = modRev
	} else if w.Expect != 0 {
		if err := s.read(ctx, ref, &b, true); err != nil {
			return Result{}, err
		}
	}
	for {
		cur := b.cur
		if w.Expect != 0 && (cur == nil || cur.Meta.Revision != w.Expect) {
			if !b.fresh {
				if err := s.read(ctx, ref, &b, true); err != nil {
					return Result{}, err
				}
				continue
			}
			return Result{}, s.conflict(ctx, ref, w.Expect, cur)
		}
		in := cur
		if cur != nil && !shared {
			c := cur.DeepCopy()
			in = &c
		}
		next, err := fn(in)
		if err == nil && next == nil && cur == nil {
			err = notFound(ref)
		}
		if err == nil && next == nil {
			next = cur // no change: settled below like an empty diff
		}
		if err != nil {
			if !b.fresh {
				if err := s.read(ctx, ref, &b, true); err != nil {
					return Result{}, err
				}
				continue
			}
			return Result{}, err
		}
		res, done, err := s.write(ctx, ref, w, &b, next)
		if err != nil {
			return Result{}, err
		}
		if done {
			return res, nil
		}
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		// Lost a race, or the base was not proven current: b now holds
		// the object as etcd has it; let fn decide on that.
	}
}

// base is what a write starts from: the current object (nil if absent)
// and its etcd mod revision.
type base struct {
	cur    *api.Object // shared (shared.go): never modified
	modRev int64
	// shared is set for MutateShared, whose caller takes the result's
	// object as shared; Mutate's gets a copy of its own.
	shared bool
	// fresh is set when cur was read from etcd by this write, rather than
	// remembered: a decision not to write may then be returned as is.
	fresh bool
	// nextRev, for an absent object, is the revision its history goes on
	// at; 0 until read (a creation then takes 1, which fails if the
	// object existed before).
	nextRev int64
}

// read fills b from etcd and remembers what it read. With history set,
// an absent object's b.nextRev is read too.
func (s *Store) read(ctx context.Context, ref api.Ref, b *base, history bool) error {
	key := s.objKey(ref)
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("%s: read: %w", ref, err)
	}
	*b = base{fresh: true, shared: b.shared}
	if len(resp.Kvs) == 0 {
		s.known.forget(ref.Kind, key)
		if history {
			last, err := s.lastRev(ctx, ref)
			b.nextRev = last + 1
			return err
		}
		return nil
	}
	if b.cur, err = decodeObject(ref, resp.Kvs[0].Value); err != nil {
		return err
	}
	b.modRev = resp.Kvs[0].ModRevision
	raw := string(resp.Kvs[0].Value)
	s.known.put(ref.Kind, key, raw, b.modRev)
	s.recent.put(key, b.modRev, sharedObject{b.cur, raw})
	return nil
}

// lastRev returns the newest revision in an object's history, 0 if none.
func (s *Store) lastRev(ctx context.Context, ref api.Ref) (int64, error) {
	resp, err := s.kv.Get(ctx, s.histPrefix(ref), append([]clientv3.OpOption{clientv3.WithKeysOnly()}, clientv3.WithLastKey()...)...)
	if err != nil {
		return 0, fmt.Errorf("%s: read history: %w", ref, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	k := string(resp.Kvs[0].Key)
	rev, err := strconv.ParseInt(k[strings.LastIndexByte(k, '/')+1:], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: damaged history key %q", ref, k)
	}
	return rev, nil
}

// remember notes what a write stored. The object written by MutateShared
// is kept decoded, shared with its caller, if it is as decoding raw would
// give it; Mutate's belongs to its caller, and is decoded again.
func (s *Store) remember(kind, key, raw string, rev int64, obj *api.Object, shared bool) {
	s.known.put(kind, key, raw, rev)
	if !shared || !decodedForm(obj) {
		return
	}
	o := *obj
	// Decoding leaves out what encoding left out: empty parts.
	if len(o.Labels) == 0 {
		o.Labels = nil
	}
	if len(o.Spec) == 0 {
		o.Spec = nil
	}
	if len(o.Status) == 0 {
		o.Status = nil
	}
	s.recent.put(key, rev, sharedObject{&o, raw})
}

// decodeObject decodes a stored object.
func decodeObject(ref api.Ref, raw []byte) (*api.Object, error) {
	var o api.Object
	if err := api.UnmarshalObject(raw, &o); err != nil {
		return nil, fmt.Errorf("%s: stored object is damaged: %v", ref, err)
	}
	return &o, nil
}

// write tries one compare-and-swap from b. done=false means the object
// was not as b had it, or b was not proven current and there was nothing
// to write; b then holds the object as etcd has it.
//
// A creation takes the revision after the last of the object's history,
// which b has if it read it; otherwise revision 1, which fails if the
// object existed before (a compare on the history key), and then reads.
func (s *Store) write(ctx context.Context, ref api.Ref, w Write, b *base, next *api.Object) (res Result, done bool, err error) {
	cur := b.cur
	now := s.now().UTC().Truncate(time.Millisecond)
	obj := api.Object{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name,
		Labels: next.Labels, Spec: next.Spec, Status: next.Status}
	obj.Meta.Owner = next.Meta.Owner
	obj.Meta.Deleting = next.Meta.Deleting
	newBody := body(&obj)
	rec := record{Time: now.UnixMilli(), Changer: w.Changer, Cause: w.Cause}

	key := s.objKey(ref)
	var cmps []clientv3.Cmp
	op := Configured
	if cur == nil {
		op = Created
		rec.Rev = max(b.nextRev, 1)
		rec.Gen = 1
		rec.Created = rec.Time
		rec.Full, rec.Snap = newBody, true
		obj.Meta.Created = now
		cmps = []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.histKey(ref, rec.Rev)), "=", 0),
		}
	} else {
		oldBody := body(cur)
		patch := fieldpath.Diff(oldBody, newBody)
		if len(patch) == 0 {
			if !b.fresh {
				return Result{}, false, s.read(ctx, ref, b, true)
			}
			if !b.shared {
				return Result{Object: cur.DeepCopy(), Op: Unchanged}, true, nil
			}
			return Result{Object: *cur, Op: Unchanged}, true, nil
		}
		rec.Rev = cur.Meta.Revision + 1
		rec.Gen = cur.Meta.Generation
		if changesSpec(patch) {
			rec.Gen++
		}
		if (rec.Rev-1)%s.every == 0 {
			rec.Full, rec.Snap = newBody, true
			rec.Created = cur.Meta.Created.UnixMilli()
		} else {
			rec.Patch = patch
		}
		obj.Meta.Created = cur.Meta.Created
		cmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", b.modRev)}
	}
	obj.Meta.Revision = rec.Rev
	obj.Meta.Generation = rec.Gen
	obj.Meta.Updated = now

	ob, rb, err := encodeWrite(&obj, &rec)
	if err != nil {
		return Result{}, false, err
	}
	if n := len(ob) + len(rb); n > MaxRequestBytes-64<<10 {
		return Result{}, false, fmt.Errorf("%s: %w: the object and its revision are %d bytes, more than etcd takes in one request (%d)", ref, ErrTooLarge, n, MaxRequestBytes)
	}
	// Room for w.Also, which commit appends: clientv3.Ops are large.
	ops := make([]clientv3.Op, 2, 2+len(w.Also))
	ops[0], ops[1] = clientv3.OpPut(key, ob), clientv3.OpPut(s.histKey(ref, rec.Rev), rb)
	resp, ok, err := s.commit(ctx, w, key, cmps, ops...)
	if err != nil {
		s.known.forget(ref.Kind, key)
		return Result{}, false, fmt.Errorf("%s: write: %w", ref, err)
	}
	if !ok {
		return Result{}, false, s.read(ctx, ref, b, true)
	}
	s.remember(ref.Kind, key, ob, resp.Header.Revision, &obj, b.shared)
	return Result{Object: obj, Op: op}, true, nil
}

func (s *Store) conflict(ctx context.Context, ref api.Ref, expected int64, cur *api.Object) error {
	e := &ConflictError{Ref: ref, Expected: expected}
	if cur != nil {
		e.Actual = cur.Meta.Revision
		if recs, err := s.records(ctx, ref, cur.Meta.Revision, cur.Meta.Revision); err == nil && len(recs) == 1 {
			e.LastChanger = recs[0].Changer
		}
	}
	return e
}

// Delete removes an object, recording the deletion as a revision so that
// its history remains readable and a later re-creation continues it.
func (s *Store) Delete(ctx context.Context, ref api.Ref, w Write) (api.Object, error) {
	if w.Changer == "" {
		return api.Object{}, fmt.Errorf("%s: write without a changer", ref)
	}
	if w.Cause == "" {
		w.Cause = "delete"
	}
	for {
		cur, modRev, err := s.get(ctx, ref)
		if err != nil {
			return api.Object{}, err
		}
		if cur == nil {
			if w.Expect != 0 {
				return api.Object{}, s.conflict(ctx, ref, w.Expect, nil)
			}
			return api.Object{}, notFound(ref)
		}
		if w.Expect != 0 && cur.Meta.Revision != w.Expect {
			return api.Object{}, s.conflict(ctx, ref, w.Expect, cur)
		}
		rec := record{Rev: cur.Meta.Revision + 1, Time: s.now().UnixMilli(), Changer: w.Changer,
			Cause: w.Cause, Gen: cur.Meta.Generation, Deleted: true}
		rb, err := marshalString(&rec)
		if err != nil {
			return api.Object{}, err
		}
		_, ok, err := s.commit(ctx, w, s.objKey(ref), []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.objKey(ref)), "=", modRev)},
			clientv3.OpDelete(s.objKey(ref)), clientv3.OpPut(s.histKey(ref, rec.Rev), rb))
		if err != nil {
			return api.Object{}, fmt.Errorf("%s: delete: %w", ref, err)
		}
		if ok {
			s.known.forget(ref.Kind, s.objKey(ref))
			cur.Meta.Revision = rec.Rev
			return *cur, nil
		}
		if err := ctx.Err(); err != nil {
			return api.Object{}, err
		}
	}
}

// records reads revisions from..to inclusive.
func (s *Store) records(ctx context.Context, ref api.Ref, from, to int64) ([]record, error) {
	resp, err := s.kv.Get(ctx, s.histKey(ref, from), clientv3.WithRange(s.histKey(ref, to+1)))
	if err != nil {
		return nil, fmt.Errorf("%s: read history: %w", ref, err)
	}
	recs := make([]record, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &recs[i]); err != nil {
			return nil, fmt.Errorf("%s: damaged revision %s: %v", ref, kv.Key, err)
		}
	}
	return recs, nil
}

// History lists an object's revisions, oldest first, keeping those whose
// changer passes f. It works for deleted objects too.
func (s *Store) History(ctx context.Context, ref api.Ref, f identity.Filter) ([]Entry, error) {
	resp, err := s.kv.Get(ctx, s.histPrefix(ref), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%s: read history: %w", ref, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, notFound(ref)
	}
	entries := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r struct {
			Rev     int64  `json:"r"`
			Time    int64  `json:"t"`
			Changer string `json:"c"`
			Cause   string `json:"w"`
		}
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("%s: damaged revision %s: %v", ref, kv.Key, err)
		}
		if f.Match(r.Changer) {
			entries = append(entries, Entry{Rev: r.Rev, Time: time.UnixMilli(r.Time).UTC(), Changer: r.Changer, Cause: r.Cause})
		}
	}
	return entries, nil
}

// At returns the object as it was at revision rev. A revision at which the
// object was deleted is ErrNotFound with a message saying so.
func (s *Store) At(ctx context.Context, ref api.Ref, rev int64) (api.Object, error) {
	if rev < 1 {
		return api.Object{}, fmt.Errorf("%s: revision %d: %w", ref, rev, ErrNotFound)
	}
	base := rev - (rev-1)%s.every
	recs, err := s.records(ctx, ref, base, rev)
	if err != nil {
		return api.Object{}, err
	}
	if len(recs) == 0 || recs[len(recs)-1].Rev != rev {
		return api.Object{}, fmt.Errorf("%s: no revision %d: %w", ref, rev, ErrNotFound)
	}
	if recs[0].Rev != base {
		return api.Object{}, fmt.Errorf("%s: revision %d is missing from history", ref, base)
	}
	obj, ok, err := replay(ref, recs)
	if err != nil {
		return api.Object{}, err
	}
	if !ok {
		return api.Object{}, fmt.Errorf("%s: revision %d is its deletion: %w", ref, rev, ErrNotFound)
	}
	return obj, nil
}

// RequestDeletion marks an object as being deleted; its down workflow runs
// and then removes it with Delete.
func (s *Store) RequestDeletion(ctx context.Context, ref api.Ref, w Write) (Result, error) {
	if w.Cause == "" {
		w.Cause = "delete requested"
	}
	return s.Mutate(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
		if cur == nil {
			return nil, nil
		}
		if cur.Meta.Deleting != nil {
			return nil, nil // already being deleted
		}
		t := s.now().UTC().Truncate(time.Millisecond)
		cur.Meta.Deleting = &t
		return cur, nil
	})
}

// Rollback writes the operator-owned fields (labels and spec) of revision
// `to` as a new revision with cause "rollback to N". A deleted object is
// re-created.
func (s *Store) Rollback(ctx context.Context, ref api.Ref, to int64, w Write) (Result, error) {
	old, err := s.At(ctx, ref, to)
	if err != nil {
		return Result{}, err
	}
	w.Cause = fmt.Sprintf("rollback to %d", to)
	return s.Mutate(ctx, ref, w, func(cur *api.Object) (*api.Object, error) {
		next := old.DeepCopy()
		next.Status = nil
		next.Meta.Deleting = nil
		if cur != nil {
			next.Meta.Deleting = cur.Meta.Deleting
			next.Status = cur.Status
			next.Meta.Owner = cur.Meta.Owner
		}
		return &next, nil
	})
}

// changesSpec reports whether a patch between bodies changes the spec:
// a new generation.
func changesSpec(patch []fieldpath.Op) bool {
	for _, op := range patch {
		if rest, ok := strings.CutPrefix(op.Path, "spec"); ok && (rest == "" || rest[0] == '.' || rest[0] == '[') {
			return true
		}
	}
	return false
}

// encodeWrite encodes an object and its revision record (api.AppendObject:
// encoding/json's bytes, without its reflection).
func encodeWrite(obj *api.Object, rec *record) (ob, rb string, err error) {
	bp := encodeBuffers.Get().(*[]byte)
	defer encodeBuffers.Put(bp)
	b, err := api.AppendObject((*bp)[:0], obj)
	if err != nil {
		return "", "", err
	}
	ob = string(b)
	if b, err = rec.append(b[:0]); err != nil {
		return "", "", err
	}
	rb = string(b)
	if cap(b) <= 1<<20 {
		*bp = b // keep a grown buffer, not a huge one
	}
	return ob, rb, nil
}

var encodeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readOnlyBytes returns the bytes of s without copying them: for
// decoders, which only read.
func readOnlyBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// marshalString encodes JSON without escaping <, > and & (which would
// grow a shell script in an env var sixfold), through a reused buffer.
func marshalString(v any) (string, error) {
	b := buffers.Get().(*bytes.Buffer)
	defer buffers.Put(b)
	b.Reset()
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), nil
}

var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// IsNotFound reports whether err means the object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
