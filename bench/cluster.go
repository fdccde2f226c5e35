package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	skiffserver "skiff.dev/skiff/server"
	"skiff.dev/skiff/store"
)

// startCluster starts n embedded etcd members in subdirectories of dir,
// peered over TLS on loopback with certificates from a fresh cluster CA, as
// n servers started with skiff server --initial-cluster would be, and
// returns them once all serve, in member order.
func startCluster(ctx context.Context, dir string, n int) ([]*store.Embedded, error) {
	ca, err := skiffserver.NewCA()
	if err != nil {
		return nil, err
	}
	peers := make([]store.Peer, n)
	for i := range peers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		peers[i] = store.Peer{Name: fmt.Sprintf("m%d", i), URL: "https://" + ln.Addr().String()}
		ln.Close()
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	members := make([]*store.Embedded, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range peers {
		certPEM, keyPEM, err := ca.PeerCert([]string{"127.0.0.1"})
		if err != nil {
			return nil, err
		}
		md := filepath.Join(dir, p.Name)
		if err := os.MkdirAll(md, 0o700); err != nil {
			return nil, err
		}
		cl := store.ClusterOptions{InitialCluster: store.FormatInitialCluster(peers), CAFile: caFile,
			CertFile: filepath.Join(md, "peer.crt"), KeyFile: filepath.Join(md, "peer.key")}
		if err := os.WriteFile(cl.CertFile, certPEM, 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(cl.KeyFile, keyPEM, 0o600); err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() { // together: each waits for a quorum
			defer wg.Done()
			members[i], errs[i] = store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: filepath.Join(md, "etcd"), Name: p.Name, Cluster: &cl})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, m := range members {
				if m != nil {
					m.Close()
				}
			}
			return nil, fmt.Errorf("member %s: %w", peers[i].Name, err)
		}
	}
	return members, nil
}
