package store

import "sync"

// knownPerGeneration bounds what the store remembers: between one and two
// generations of this many objects, the most recently written or read.
const knownPerGeneration = 32768

// known remembers, for the objects a store wrote or read lately, the
// stored value and its etcd mod revision, so that the next write of one
// starts from it without reading etcd. What it remembers may be stale
// (another server wrote since): a write's compare on the mod revision
// catches that. Two generations make it a cheap approximation of "the
// most recent": when the current one is full it becomes the previous one,
// and the previous one is dropped.
type known struct {
	mu        sync.Mutex
	cur, prev map[string]knownValue // etcd key → value; guarded by mu
}

type knownValue struct {
	raw    string // as stored
	modRev int64
}

func (k *known) get(key string) (raw string, modRev int64, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.cur[key]
	if !ok {
		v, ok = k.prev[key]
	}
	return v.raw, v.modRev, ok
}

func (k *known) put(key string, raw string, modRev int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.cur[key]; ok && v.modRev > modRev {
		return // a racing write remembered a newer one
	}
	if k.cur == nil || len(k.cur) >= knownPerGeneration {
		k.prev, k.cur = k.cur, map[string]knownValue{}
	}
	k.cur[key] = knownValue{raw: raw, modRev: modRev}
	delete(k.prev, key)
}

func (k *known) forget(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.cur, key)
	delete(k.prev, key)
}
