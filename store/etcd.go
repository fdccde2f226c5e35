package store

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// MaxRequestBytes is the largest etcd request the embedded member takes.
// An external etcd cluster needs --max-request-bytes at least this large
// for objects near the API's body limit.
const MaxRequestBytes = 8 << 20

// Embedded is an etcd member running inside this process.
type Embedded struct {
	etcd   *embed.Etcd
	Client *clientv3.Client
}

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// Dir holds etcd's data (and its log, etcd.log).
	Dir string
	// Name of the member; default "skiff".
	Name string
}

// StartEmbedded starts a single-member etcd cluster in dir (or restarts the
// one already there) and returns once it serves. It opens no socket at all:
// its only client is in-process, so nothing on the machine can reach etcd
// around the API's authentication.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Embedded, error) {
	if o.Name == "" {
		o.Name = "skiff"
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.Dir
	lo, _ := url.Parse("http://127.0.0.1:0")
	// Advertised URLs are required by the configuration but never dialled:
	// with no listeners, a lone member needs no peer or client sockets.
	cfg.ListenClientUrls = nil
	cfg.AdvertiseClientUrls = []url.URL{*lo}
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{*lo}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(o.Dir, "etcd.log")}
	// History lives in keys of its own, so etcd's MVCC log only serves
	// watches; compacting it hourly keeps the database small.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	cfg.QuotaBackendBytes = 8 << 30
	// A write puts an object into one transaction twice (the object and a
	// snapshot revision); leave room for the API's largest body.
	cfg.MaxRequestBytes = MaxRequestBytes
	// etcd keeps the raft log in memory back to its last snapshot, every
	// write whole: 100,000 entries by default, hundreds of MiB when writes
	// carry objects. A lone member has no follower to catch up, so it
	// snapshots ten times as often, which costs little: the data is in
	// the backend already.
	cfg.SnapshotCount = 10000
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: start in %s: %w (see %s)", o.Dir, err, cfg.LogOutputs[0])
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd: not ready after 60s (see %s)", cfg.LogOutputs[0])
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Embedded{etcd: e, Client: v3client.New(e.Server)}, nil
}

// Close stops the member after in-flight requests finish.
func (e *Embedded) Close() {
	e.Client.Close()
	e.etcd.Close()
}

// Dial connects to an external etcd cluster.
func Dial(endpoints []string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", endpoints, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Status(ctx, endpoints[0]); err != nil {
		c.Close()
		return nil, fmt.Errorf("etcd %v: %w", endpoints, err)
	}
	return c, nil
}
