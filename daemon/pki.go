package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"skiff.dev/skiff/server"
	"skiff.dev/skiff/store"
)

// How the cluster CA reaches every member before etcd runs
//
// Members of a new cluster must trust each other's peer certificates
// before there is an etcd to keep a CA in. So `skiff server pki` makes the
// CA and one bundle per member (NAME.bundle: the CA certificate and key,
// the member's peer certificate and key, the initial cluster), and the
// operator copies each to its server. A server started with
// --initial-cluster reads its bundle (--peer-bundle, default
// DATA/peer.bundle); the first of them to reach etcd stores the bundle's
// CA there (server.AdoptCA), and every later one checks that the CA in
// etcd is the one of its bundle. The API's certificates, the nodes' and
// the join bundles of later members all come from that same CA.
//
// A server joining a running cluster gets a join bundle from
// `skiff server add NAME --peer-url URL` (the API adds the etcd member and
// signs its peer certificate with the CA from etcd) and is started with
// --join FILE. Its bundle carries no CA key: it finds the CA in etcd.
//
// A server keeps its bundle as DATA/pki/peer.bundle and its peer TLS files
// as DATA/pki/{peer.crt,peer.key,ca.crt}, so it restarts without the
// flags; etcd then takes the membership from its own data.

// WritePeerBundles makes a new cluster CA and one bundle per member of
// initialCluster ("a=https://10.0.0.1:2380,b=..."), written to
// DIR/NAME.bundle (mode 0600), and returns their paths. It refuses to
// overwrite a bundle: bundles from two runs hold two CAs, and members
// with different CAs cannot form a cluster.
func WritePeerBundles(initialCluster, dir string) ([]string, error) {
	peers, err := store.ParseInitialCluster(initialCluster)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, p := range peers {
		path := filepath.Join(dir, p.Name+".bundle")
		if _, err := os.Stat(path); err == nil {
			return nil, fmt.Errorf("%s exists: every bundle of a cluster must come from one run (remove the old ones, or use another --out)", path)
		}
		paths = append(paths, path)
	}
	ca, err := server.NewCA()
	if err != nil {
		return nil, err
	}
	for i, p := range peers {
		certPEM, keyPEM, err := ca.PeerCert([]string{store.PeerHost(p.URL)})
		if err != nil {
			return nil, fmt.Errorf("peer certificate for %s: %w", p.Name, err)
		}
		b := store.PeerBundle{
			Name:           p.Name,
			InitialCluster: store.FormatInitialCluster(peers),
			State:          "new",
			CACert:         string(ca.CertPEM),
			CAKey:          string(ca.KeyPEM()),
			PeerCert:       string(certPEM),
			PeerKey:        string(keyPEM),
		}
		if err := b.Save(paths[i]); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// clusterMember is how this server takes part in an etcd cluster of
// embedded members.
type clusterMember struct {
	name   string
	opts   store.ClusterOptions
	bundle store.PeerBundle
}

// installedBundle is where a server keeps its peer bundle.
func installedBundle(dataDir string) string { return filepath.Join(dataDir, "pki", "peer.bundle") }

// hasEtcdData reports whether the embedded member has started here before.
func hasEtcdData(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "etcd", "member", "wal"))
	return err == nil
}

// clusterSetup works out from the options and the data directory whether
// this server's embedded member is one of a cluster, and if so installs
// its bundle into DATA/pki. It returns nil for a lone member.
func clusterSetup(o Options) (*clusterMember, error) {
	if o.InitialCluster != "" && o.Join != "" {
		return nil, errors.New("--initial-cluster forms a new cluster and --join joins a running one: give one of them")
	}
	clustering := o.InitialCluster != "" || o.Join != ""
	if clustering && len(o.EtcdEndpoints) > 0 {
		return nil, errors.New("--etcd-endpoints uses an external etcd: --initial-cluster and --join are for the servers' embedded members")
	}
	installed := installedBundle(o.DataDir)
	_, err := os.Stat(installed)
	haveInstalled := err == nil
	restart := hasEtcdData(o.DataDir)
	if clustering && restart && !haveInstalled {
		return nil, fmt.Errorf("%s holds the data of a lone server's etcd: it cannot become a member of a cluster; form the cluster with fresh data directories", o.DataDir)
	}
	if !clustering && !haveInstalled {
		return nil, nil // a lone member, as always
	}
	path := installed
	switch {
	case o.Join != "":
		path = o.Join
	case o.InitialCluster != "":
		path = o.PeerBundle
		if path == "" {
			path = filepath.Join(o.DataDir, "peer.bundle")
			if _, err := os.Stat(path); err != nil && haveInstalled {
				path = installed
			}
		}
	}
	b, err := store.LoadPeerBundle(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && o.InitialCluster != "" {
			return nil, fmt.Errorf("%w: make the bundles with skiff server pki --initial-cluster ... --out DIR and copy NAME.bundle here, or name it with --peer-bundle", err)
		}
		return nil, err
	}
	if o.Join != "" && b.State != "existing" {
		return nil, fmt.Errorf("%s is a bundle for forming a new cluster, not a join bundle (skiff server add makes those): start with --initial-cluster instead", path)
	}
	if o.InitialCluster != "" && b.State != "new" {
		return nil, fmt.Errorf("%s is a join bundle: start with --join %s instead of --initial-cluster", path, path)
	}
	if o.Name != "" && o.Name != b.Name {
		return nil, fmt.Errorf("%s is the bundle of %s, not of %s", path, b.Name, o.Name)
	}
	if o.InitialCluster != "" && !restart {
		peers, err := store.ParseInitialCluster(o.InitialCluster)
		if err != nil {
			return nil, err
		}
		if store.FormatInitialCluster(peers) != b.InitialCluster {
			return nil, fmt.Errorf("--initial-cluster %s is not the cluster %s was made for (%s)", o.InitialCluster, path, b.InitialCluster)
		}
	}
	pki := filepath.Join(o.DataDir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	if path != installed {
		if err := b.Save(installed); err != nil {
			return nil, fmt.Errorf("install peer bundle: %w", err)
		}
	}
	files := []struct {
		name string
		data string
		mode os.FileMode
	}{{"peer.crt", b.PeerCert, 0o644}, {"peer.key", b.PeerKey, 0o600}, {"ca.crt", b.CACert, 0o644}}
	for _, f := range files {
		p := filepath.Join(pki, f.name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, []byte(f.data)) {
			continue
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return nil, fmt.Errorf("install peer TLS: %w", err)
		}
	}
	return &clusterMember{
		name:   b.Name,
		bundle: b,
		opts: store.ClusterOptions{
			InitialCluster: b.InitialCluster,
			Join:           b.State == "existing",
			PeerListen:     o.PeerListen,
			CertFile:       filepath.Join(pki, "peer.crt"),
			KeyFile:        filepath.Join(pki, "peer.key"),
			CAFile:         filepath.Join(pki, "ca.crt"),
		},
	}, nil
}
