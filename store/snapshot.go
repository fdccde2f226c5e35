package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// Backups: an etcd snapshot is the whole keyspace of one member (skiff's
// objects and histories, and everything else skiff keeps in etcd: tokens,
// the CA, run records, leases), as etcd's Maintenance API streams it.
// Restoring one makes the data directory of a new, lone member; its
// cluster and member IDs are new, its keys and their etcd revisions are
// the snapshot's.

// SnapshotInfo describes a snapshot SaveSnapshot wrote and what skiff
// holds in it.
type SnapshotInfo struct {
	// Revision is the etcd revision the snapshot holds: every write
	// acknowledged before SaveSnapshot began is in it. The counts below
	// are read at this revision, so they are the snapshot's own.
	Revision int64
	Size     int64  // bytes
	SHA256   string // hex, of the whole file
	Census
}

// Census counts what the store holds.
type Census struct {
	Objects   map[string]int // current objects by kind
	Revisions int            // revisions in all histories, deleted objects' included
}

// Total is the number of objects of all kinds.
func (c Census) Total() int {
	n := 0
	for _, k := range c.Objects {
		n += k
	}
	return n
}

// SaveSnapshot writes a snapshot of the etcd the store runs on to path
// (created or truncated, mode 0600), and describes it.
//
// With an etcd cluster, the snapshot is the member's the client reaches;
// it is checked to hold the revision a quorum read saw before it was
// taken, so a lagging member is refused rather than backed up.
func (s *Store) SaveSnapshot(ctx context.Context, path string) (SnapshotInfo, error) {
	head, err := s.kv.Get(ctx, s.prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: read the store's revision: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	rc, err := s.kv.Snapshot(ctx)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	defer rc.Close()
	h, tail := sha256.New(), &tailHash{h: sha256.New()}
	n, err := io.Copy(io.MultiWriter(f, h, tail), rc)
	// etcd appends the SHA-256 of the database to the stream: that, not
	// how the stream ended, says whether it is whole. (In-process, the
	// stream of an embedded member ends in "context canceled" rather than
	// io.EOF once sent.)
	if !tail.whole(n) {
		if err == nil {
			err = errors.New("the stream ended before the snapshot was whole")
		}
		return SnapshotInfo{}, fmt.Errorf("snapshot: receive from etcd: %w", err)
	}
	if err := f.Sync(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	st, err := snapshot.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: the file etcd sent is not a database: %w", err)
	}
	if st.Revision < head.Header.Revision {
		return SnapshotInfo{}, fmt.Errorf("snapshot: the etcd member that sent it is at revision %d, behind the cluster's %d: try again, or point the server at a member that is up to date", st.Revision, head.Header.Revision)
	}
	info := SnapshotInfo{Revision: st.Revision, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	if info.Census, err = s.Count(ctx, st.Revision); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot: count its objects: %w", err)
	}
	return info, nil
}

// tailHash hashes all it is written but the last sha256.Size bytes, which
// it keeps: etcd's snapshot stream is a database followed by its SHA-256.
type tailHash struct {
	h    hash.Hash
	last []byte // the last bytes written, at most sha256.Size
}

func (t *tailHash) Write(p []byte) (int, error) {
	buf := append(t.last, p...)
	cut := max(len(buf)-sha256.Size, 0)
	t.h.Write(buf[:cut])
	t.last = append(t.last[:0:0], buf[cut:]...)
	return len(p), nil
}

// whole reports whether the n bytes written are a database (whole pages)
// followed by its SHA-256.
func (t *tailHash) whole(n int64) bool {
	return n%512 == sha256.Size && bytes.Equal(t.h.Sum(nil), t.last)
}

// Count counts the objects and revisions the store holds at etcd revision
// rev (0: now).
func (s *Store) Count(ctx context.Context, rev int64) (Census, error) {
	at := clientv3.WithRev(rev)
	hist, err := s.kv.Get(ctx, s.prefix+"/h/", clientv3.WithPrefix(), clientv3.WithCountOnly(), at)
	if err != nil {
		return Census{}, err
	}
	c := Census{Objects: map[string]int{}, Revisions: int(hist.Count)}
	// Keys only, in pages: a census of a large cluster reads keys, not
	// objects, and never all of them in one response.
	const page = 10000
	p := s.prefix + "/o/"
	from, end := p, clientv3.GetPrefixRangeEnd(p)
	for {
		resp, err := s.kv.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(page), at)
		if err != nil {
			return Census{}, err
		}
		for _, kv := range resp.Kvs {
			kind, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), p), "/")
			c.Objects[kind]++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return c, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// RestoreOptions configure RestoreSnapshot. The member's name and peer URL
// default to those of the lone member StartEmbedded runs.
type RestoreOptions struct {
	// Snapshot is the snapshot file, as SaveSnapshot wrote it.
	Snapshot string
	// Dir is the etcd data directory to make; it must not exist, or be
	// empty.
	Dir string
	// Name of the member; default "skiff".
	Name string
	// PeerURL the member advertises; default http://127.0.0.1:0, never
	// dialled by a lone embedded member.
	PeerURL string
}

// RevisionBump is how far a restore moves etcd's revision past the
// snapshot's, marking everything before it compacted. A client that saw
// revisions the backup does not hold (an agent's watch, made after the
// backup was taken) is told its revision is compacted and lists again,
// instead of waiting for revisions it has seen already, or silently
// missing writes made under numbers it already passed. A billion is more
// writes than a cluster makes between a backup and its restore.
const RevisionBump = 1_000_000_000

// ErrNotEmpty means a restore was asked to write over existing data.
var ErrNotEmpty = errors.New("not empty")

// RestoreSnapshot makes an etcd data directory holding the snapshot, for
// a lone member: StartEmbedded(Dir) then serves it. The snapshot's own
// integrity hash (the one etcd appends to the snapshots it streams) is
// checked. Revisions move on by RevisionBump.
func RestoreSnapshot(o RestoreOptions) error {
	if o.Name == "" {
		o.Name = "skiff"
	}
	if o.PeerURL == "" {
		o.PeerURL = "http://127.0.0.1:0"
	}
	if ents, err := os.ReadDir(o.Dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("restore into %s: %w", o.Dir, ErrNotEmpty)
	}
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        o.Snapshot,
		Name:                o.Name,
		OutputDataDir:       o.Dir,
		PeerURLs:            []string{o.PeerURL},
		InitialCluster:      o.Name + "=" + o.PeerURL,
		InitialClusterToken: "etcd-cluster", // embed's default, as StartEmbedded leaves it
		RevisionBump:        RevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		return fmt.Errorf("restore etcd snapshot into %s: %w", o.Dir, err)
	}
	return nil
}
