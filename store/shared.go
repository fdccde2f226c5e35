package store

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"unicode/utf8"

	"skiff.dev/skiff/api"
)

// Decoded objects the store shares.
//
// Most writes are steps' (MutateShared), and each used to decode the
// object twice more than it had to: the next write of it decoded the bytes
// it remembered (known) to start from, and the workflows' watch decoded
// the change from etcd's event, though the writer had the object in hand.
// So the store keeps the objects of its latest MutateShared writes (and of
// its reads from etcd), decoded, by key and etcd mod revision: the next
// write of one starts from it, and a watch that asked for shared objects
// (WatchShared) delivers it for that revision instead of decoding. Most are
// the engine's current copies too, so they cost little memory of their own.
//
// A shared object is read only, everywhere: it is MutateShared's base, fn's
// result and its Result, the engine's copy of the object and the work items
// made from it. One change in place would make the next write's diff, and
// so the object's history, silently wrong. Test binaries (and a process
// with SKIFF_VERIFY_SHARED=1 in its environment) check each shared object
// against its bytes whenever it is used again, and panic on a difference.
//
// Only trees exactly as decoding their bytes gives them are shared (maps of
// string to any, lists of any, strings of valid UTF-8, float64, bool and
// nil): a write of an int, say, or of a []string, is decoded again as
// before, so that readers never see a type decoding would not give.

// recentShared bounds the decoded objects kept: a write or a shared watch
// that comes more than this many writes after the one it follows decodes.
const recentShared = 16384

// sharedObject is an object as decoded from raw; it is not to be modified.
type sharedObject struct {
	obj *api.Object
	raw string
}

// recent keeps the decoded objects of the latest MutateShared writes and
// reads, by key and etcd mod revision.
type recent struct {
	mu   sync.Mutex
	objs map[recentKey]sharedObject
	ring [recentShared]recentKey
	next int
}

type recentKey struct {
	key string
	rev int64
}

func (r *recent) put(key string, rev int64, o sharedObject) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.objs == nil {
		r.objs = make(map[recentKey]sharedObject, recentShared)
	}
	k := recentKey{key, rev}
	if _, ok := r.objs[k]; ok {
		r.objs[k] = o // read again: its slot in the ring stays
		return
	}
	delete(r.objs, r.ring[r.next])
	r.ring[r.next] = k
	r.next = (r.next + 1) % recentShared
	r.objs[k] = o
}

func (r *recent) get(key string, rev int64) (sharedObject, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.objs[recentKey{key, rev}]
	return o, ok
}

// verifyShared is set in test binaries and by SKIFF_VERIFY_SHARED=1.
var verifyShared = testing.Testing() || os.Getenv("SKIFF_VERIFY_SHARED") == "1"

// use returns o's object for another reader, first checking, when
// verifyShared is set, that no reader changed it.
func (o sharedObject) use() *api.Object {
	if verifyShared {
		b, err := api.AppendObject(nil, o.obj)
		if err != nil || string(b) != o.raw || !decodedForm(o.obj) {
			panic(fmt.Sprintf("store: a shared object was modified in place (%s %s/%s): it must be copied on write (store/shared.go)\nstored:  %s\nnow:     %s",
				o.obj.Kind, o.obj.Namespace, o.obj.Name, o.raw, b))
		}
	}
	return o.obj
}

// decodedForm reports whether o's labels, spec and status are exactly as
// decoding o's JSON gives them: nothing but the types json.Unmarshal into
// an any makes, no typed nil, no invalid UTF-8.
func decodedForm(o *api.Object) bool {
	for k, v := range o.Labels {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	return decodedMap(o.Spec) && decodedMap(o.Status)
}

func decodedMap(m map[string]any) bool {
	for k, v := range m {
		if !utf8.ValidString(k) || !decodedValue(v) {
			return false
		}
	}
	return true
}

func decodedValue(v any) bool {
	switch v := v.(type) {
	case nil, bool, float64:
		return true
	case string:
		return utf8.ValidString(v)
	case map[string]any:
		return v != nil && decodedMap(v)
	case []any:
		if v == nil {
			return false
		}
		for _, x := range v {
			if !decodedValue(x) {
				return false
			}
		}
		return true
	}
	return false
}
