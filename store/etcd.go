package store

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
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
	etcd      *embed.Etcd
	Client    *clientv3.Client
	name      string
	clustered bool
}

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// Dir holds etcd's data (and its log, etcd.log).
	Dir string
	// Name of the member; default "skiff".
	Name string
	// Cluster, when set, makes the member one of an etcd cluster of
	// embedded members (see cluster.go); nil runs a lone member with no
	// socket at all.
	Cluster *ClusterOptions
	// Log, when set, is told while a clustered member waits for its peers.
	Log *slog.Logger
}

// StartEmbedded starts a single-member etcd cluster in dir (or restarts the
// one already there) and returns once it serves. It opens no socket at all:
// its only client is in-process, so nothing on the machine can reach etcd
// around the API's authentication.
//
// With o.Cluster the member is one of an etcd cluster instead: it listens
// on its peer address (TLS, client certificates required) and returns once
// the cluster has a quorum and the member has published itself, which for
// a new cluster means once a majority of its members have started. It
// still opens no client port.
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
	if o.Cluster != nil {
		if err := clusterConfig(cfg, *o.Cluster); err != nil {
			return nil, fmt.Errorf("etcd: %w", err)
		}
	}
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
	// carry objects (an entry carries a group of writes, store/commit.go).
	// Snapshots cost little: the data is in the backend already. Members
	// of a cluster snapshot every 10,000 entries and keep 5,000 behind a
	// snapshot for followers to catch up from (one further behind is sent
	// the database). A lone member has no peer socket, so no follower: it
	// snapshots every 1,000 entries and keeps only a few behind, which
	// takes ~150 MiB off its memory while it is busy (an entry is a group
	// of writes, tens of KiB).
	cfg.SnapshotCount = 10000
	if o.Cluster == nil {
		cfg.SnapshotCount = 1000
		cfg.SnapshotCatchUpEntries = 100
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: start in %s: %w (see %s)", o.Dir, err, cfg.LogOutputs[0])
	}
	// A lone member is ready within seconds or broken. A member of a
	// cluster waits for a quorum of its peers, which come up when their
	// operators start them: it waits as long as it is let, saying so.
	var timeout, remind <-chan time.Time
	if o.Cluster == nil {
		timeout = time.After(60 * time.Second)
	} else {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		remind = t.C
	}
	for ready := false; !ready; {
		select {
		case <-e.Server.ReadyNotify():
			ready = true
		case err := <-e.Err():
			e.Close()
			return nil, fmt.Errorf("etcd: %w (see %s)", err, cfg.LogOutputs[0])
		case <-e.Server.StopNotify():
			e.Close()
			return nil, fmt.Errorf("etcd: member stopped while starting (see %s)", cfg.LogOutputs[0])
		case <-timeout:
			e.Close()
			return nil, fmt.Errorf("etcd: not ready after 60s (see %s)", cfg.LogOutputs[0])
		case <-remind:
			if o.Log != nil {
				o.Log.Info("etcd member waits for a quorum of its peers: start the other servers", "member", cfg.Name, "cluster", cfg.InitialCluster)
			}
		case <-ctx.Done():
			e.Close()
			return nil, ctx.Err()
		}
	}
	return &Embedded{etcd: e, Client: v3client.New(e.Server), name: cfg.Name, clustered: o.Cluster != nil}, nil
}

// clusterConfig makes cfg a member of the cluster o describes: peer
// listener and URLs, membership, and peer TLS.
func clusterConfig(cfg *embed.Config, o ClusterOptions) error {
	peers, err := ParseInitialCluster(o.InitialCluster)
	if err != nil {
		return err
	}
	self := PeerBundle{Name: cfg.Name}.Self(peers)
	if self == "" {
		return fmt.Errorf("this member, %s, is not in the initial cluster %s", cfg.Name, o.InitialCluster)
	}
	listen, err := o.peerListen(self)
	if err != nil {
		return err
	}
	lu, _ := url.Parse("https://" + listen)
	au, _ := url.Parse(self)
	cfg.ListenPeerUrls = []url.URL{*lu}
	cfg.AdvertisePeerUrls = []url.URL{*au}
	cfg.InitialCluster = FormatInitialCluster(peers)
	cfg.ClusterState = embed.ClusterStateFlagNew
	if o.Join {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	if cfg.InitialClusterToken, err = clusterToken(o.CAFile); err != nil {
		return fmt.Errorf("peer TLS: %w", err)
	}
	cfg.PeerTLSInfo = transport.TLSInfo{
		CertFile:       o.CertFile,
		KeyFile:        o.KeyFile,
		TrustedCAFile:  o.CAFile,
		ClientCertAuth: true,
		// A peer's certificate names the address it is reached at, not
		// always the one it dials from (a host with several addresses):
		// the CA and the name below say who may be a peer, not the SANs.
		SkipClientSANVerify: true,
		AllowedCNs:          []string{PeerCommonName},
	}
	// etcd's defaults, stated: a heartbeat every 100 ms and an election
	// after 1 s without one, right for a LAN. A killed leader is replaced
	// about a second and a half later (pre-vote keeps a member that was cut
	// off from disrupting the others when it comes back).
	cfg.TickMs = 100
	cfg.ElectionMs = 1000
	cfg.PreVote = true
	cfg.StrictReconfigCheck = true
	return nil
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
