package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
)

// ErrCompacted means a watch asked for changes older than the store keeps
// in its change log; the watcher must list again and continue from there.
var ErrCompacted = errors.New("revision compacted: list again")

// Event is one change seen by a watch.
type Event struct {
	Type     Op         `json:"type"` // Created, Configured or Deleted
	Object   api.Object `json:"object"`
	Revision int64      `json:"revision"` // store revision of the change
	Err      error      `json:"-"`        // set on the last event of a failed watch
	// Raw is the object as stored (JSON), set instead of a decoded Object
	// by WatchRaw, whose events' Object has only kind, namespace and name.
	Raw []byte `json:"-"`
}

// Watch streams changes to objects of kind (in namespace ns, or all if ""),
// starting after store revision `after` (as returned by List). The channel is
// closed when ctx ends; a failure is delivered as a final event with Err set.
func (s *Store) Watch(ctx context.Context, kind, ns string, after int64) <-chan Event {
	return s.watch(ctx, kind, ns, after, decodeOwn)
}

// WatchShared is Watch for a watcher that modifies no object it is given:
// an object this store wrote by MutateShared comes as that write kept it,
// shared with the writer and the store (shared.go), not decoded again.
func (s *Store) WatchShared(ctx context.Context, kind, ns string, after int64) <-chan Event {
	return s.watch(ctx, kind, ns, after, decodeShared)
}

// WatchRaw is Watch without decoding the objects: each event carries the
// object as stored in Raw, and in Object only its kind, namespace and
// name. A watcher that passes the objects on as JSON (the API's watch
// for operators) spares a decode and an encode per change.
func (s *Store) WatchRaw(ctx context.Context, kind, ns string, after int64) <-chan Event {
	return s.watch(ctx, kind, ns, after, decodeNone)
}

// How a watch delivers objects.
type decoding uint8

const (
	decodeOwn    decoding = iota // decoded for the watcher alone (Watch)
	decodeNone                   // as stored (WatchRaw)
	decodeShared                 // shared if the store has it decoded (WatchShared)
)

func (s *Store) watch(ctx context.Context, kind, ns string, after int64, decode decoding) <-chan Event {
	p := s.prefix + "/o/" + kind + "/"
	if ns != "" {
		p += ns + "/"
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		// No WithPrevKV: etcd would read every changed key's previous
		// value for every watcher, though only deletions need it; those
		// are read here (deleted).
		wc := s.kv.Watch(ctx, p, clientv3.WithPrefix(), clientv3.WithRev(after+1))
		for resp := range wc {
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) || resp.CompactRevision != 0 {
					err = ErrCompacted
				}
				send(ctx, out, Event{Err: err})
				return
			}
			for _, ev := range resp.Events {
				e := Event{Revision: ev.Kv.ModRevision}
				var raw []byte
				switch {
				case ev.Type == clientv3.EventTypeDelete:
					e.Type = Deleted
					var err error
					if raw, err = s.deleted(ctx, ev.Kv); err != nil {
						send(ctx, out, Event{Err: fmt.Errorf("watch %s: %v", kind, err)})
						return
					}
				case ev.IsCreate():
					e.Type, raw = Created, ev.Kv.Value
				default:
					e.Type, raw = Configured, ev.Kv.Value
				}
				if decode == decodeShared && e.Type != Deleted {
					if o, ok := s.recent.get(string(ev.Kv.Key), ev.Kv.ModRevision); ok {
						e.Object = *o.use()
						if !send(ctx, out, e) {
							return
						}
						continue
					}
				}
				if decode == decodeNone {
					e.Raw = raw
					e.Object = s.refOf(ev.Kv.Key)
				} else if raw != nil {
					if err := api.UnmarshalObject(raw, &e.Object); err != nil {
						send(ctx, out, Event{Err: fmt.Errorf("watch %s: damaged object %s: %v", kind, ev.Kv.Key, err)})
						return
					}
				}
				if !send(ctx, out, e) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(ctx, out, Event{Err: errors.New("watch ended: lost the etcd leader or connection")})
		}
	}()
	return out
}

func send(ctx context.Context, out chan<- Event, e Event) bool {
	select {
	case out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

// deleted returns the last value of a key deleted at kv.ModRevision, as
// etcd still has it. If etcd compacted it away, the object is the one its
// key names, with nothing else.
func (s *Store) deleted(ctx context.Context, kv *mvccpb.KeyValue) ([]byte, error) {
	resp, err := s.kv.Get(ctx, string(kv.Key), clientv3.WithRev(kv.ModRevision-1))
	switch {
	case err == nil && len(resp.Kvs) > 0:
		return resp.Kvs[0].Value, nil
	case err != nil && !errors.Is(err, rpctypes.ErrCompacted):
		return nil, fmt.Errorf("read deleted %s: %w", kv.Key, err)
	}
	o := s.refOf(kv.Key)
	if o.Kind == "" {
		return nil, fmt.Errorf("deleted key %s is not an object's", kv.Key)
	}
	return json.Marshal(o)
}

// refOf returns an object with only the kind, namespace and name its key
// names; the zero object if the key is not an object's.
func (s *Store) refOf(key []byte) api.Object {
	rest, ok := strings.CutPrefix(string(key), s.prefix+"/o/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 {
		return api.Object{}
	}
	o := api.Object{Kind: parts[0], Namespace: parts[1], Name: parts[2]}
	if o.Namespace == "_" {
		o.Namespace = ""
	}
	return o
}
