package store

import (
	"hash/maphash"
	"sync"
)

// knownPerGeneration bounds what the store remembers of each kind: between
// one and two generations of this many objects (over all shards), the
// most recently written or read. Each kind has its own, so that a stream
// of pod writes does not push out the nodes, whose heartbeats write each
// of them every few seconds.
const knownPerGeneration = 16384

// knownShards spreads what the store remembers over locks of their own:
// every write takes one twice.
const knownShards = 16

// known remembers, for the objects a store wrote or read lately, the
// stored value and its etcd mod revision, so that the next write of one
// starts from it without reading etcd. What it remembers may be stale
// (another server wrote since): a write's compare on the mod revision
// catches that. Two generations make it a cheap approximation of "the
// most recent": when the current one is full it becomes the previous one,
// and the previous one is dropped.
type known struct {
	seed  maphash.Seed // set by New
	kinds sync.Map     // kind → *knownKind
}

type knownKind struct {
	shards [knownShards]knownShard
}

type knownShard struct {
	mu        sync.Mutex
	cur, prev map[string]knownValue // etcd key → value; guarded by mu
}

type knownValue struct {
	raw    string // as stored
	modRev int64
}

func (k *known) shard(kind, key string) *knownShard {
	kk, ok := k.kinds.Load(kind)
	if !ok {
		kk, _ = k.kinds.LoadOrStore(kind, new(knownKind))
	}
	return &kk.(*knownKind).shards[maphash.String(k.seed, key)%knownShards]
}

func (k *known) get(kind, key string) (raw string, modRev int64, ok bool) {
	s := k.shard(kind, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.cur[key]
	if !ok {
		v, ok = s.prev[key]
	}
	return v.raw, v.modRev, ok
}

func (k *known) put(kind, key string, raw string, modRev int64) {
	s := k.shard(kind, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.cur[key]; ok && v.modRev > modRev {
		return // a racing write remembered a newer one
	}
	if s.cur == nil || len(s.cur) >= knownPerGeneration/knownShards {
		s.prev, s.cur = s.cur, map[string]knownValue{}
	}
	s.cur[key] = knownValue{raw: raw, modRev: modRev}
	delete(s.prev, key)
}

func (k *known) forget(kind, key string) {
	s := k.shard(kind, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cur, key)
	delete(s.prev, key)
}
