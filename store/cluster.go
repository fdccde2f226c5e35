package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// An etcd cluster of embedded members
//
// Three or five skiff servers each embed one etcd member, and the members
// form one etcd cluster: raft over the peer port, TLS both ways with
// certificates from the cluster CA. skiff's own etcd traffic stays in
// process (v3client): no member opens a client port.
//
// A member is configured by ClusterOptions. It either forms a new cluster
// with its peers (State "new", every member listed in InitialCluster and
// started with the same list) or joins a running one (State "existing",
// after an existing member added it with MemberAdd; InitialCluster then
// lists the members as they are, the new one included). Once the member
// has data in its directory, etcd takes the membership from there and
// both are ignored: restarts need neither.
//
// The peer certificates (and, for a new cluster, the CA key, which the
// first server to reach etcd stores there) come in a PeerBundle: one file
// per member, made by `skiff server pki` for a new cluster and by
// `skiff server add` for a joining member.

// PeerCommonName is the subject of every peer certificate. Members accept
// peer connections only from clients presenting a certificate from the
// cluster CA with this name, so the API's server certificates (also from
// the cluster CA, also good for client auth) do not open the peer port.
const PeerCommonName = "skiff etcd peer"

// Peer is one member of an initial cluster: its name and peer URL.
type Peer struct {
	Name string
	URL  string // https://HOST:PORT
}

var memberName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// CheckMemberName says why name is not a member name (lower-case letters,
// digits, '-' and '.', at most 63, starting and ending alphanumeric).
func CheckMemberName(name string) error {
	if !memberName.MatchString(name) {
		return fmt.Errorf("server name %q: use lower-case letters, digits, '-' and '.' (at most 63, starting and ending with a letter or digit)", name)
	}
	return nil
}

// CheckPeerURL says why u is not a peer URL: https://HOST:PORT, no path.
func CheckPeerURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("peer URL %q: %v", u, err)
	}
	if p.Scheme != "https" {
		return fmt.Errorf("peer URL %q: use https:// (peer traffic is TLS from the cluster CA)", u)
	}
	if p.Port() == "" || p.Hostname() == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" || p.User != nil {
		return fmt.Errorf("peer URL %q: want https://HOST:PORT (IPv6 in brackets: https://[fd00::1]:2380)", u)
	}
	return nil
}

// ParseInitialCluster parses "a=https://10.0.0.1:2380,b=https://..." into
// its members, in order. Names are unique, URLs are peer URLs.
func ParseInitialCluster(s string) ([]Peer, error) {
	var peers []Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("initial cluster %q: %q is not NAME=https://HOST:PORT", s, part)
		}
		if err := CheckMemberName(name); err != nil {
			return nil, fmt.Errorf("initial cluster: %w", err)
		}
		if err := CheckPeerURL(u); err != nil {
			return nil, fmt.Errorf("initial cluster: %s: %w", name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("initial cluster: %s is listed twice", name)
		}
		seen[name] = true
		peers = append(peers, Peer{Name: name, URL: strings.TrimSuffix(u, "/")})
	}
	return peers, nil
}

// FormatInitialCluster is the inverse of ParseInitialCluster.
func FormatInitialCluster(peers []Peer) string {
	parts := make([]string, len(peers))
	for i, p := range peers {
		parts[i] = p.Name + "=" + p.URL
	}
	return strings.Join(parts, ",")
}

// PeerHost is the host of a peer URL, without brackets: what its
// certificate must name.
func PeerHost(peerURL string) string {
	p, err := url.Parse(peerURL)
	if err != nil {
		return ""
	}
	return p.Hostname()
}

// PeerBundle is what one member needs to take part in the etcd cluster:
// its name, the membership to start from, the cluster CA and its own peer
// certificate. It is JSON in a file of mode 0600: it holds private keys.
type PeerBundle struct {
	Name string `json:"name"`
	// InitialCluster lists every member, this one included
	// (ParseInitialCluster's form).
	InitialCluster string `json:"initialCluster"`
	// State is "new" for a member of a cluster being formed and
	// "existing" for one joining a running cluster.
	State  string `json:"state"`
	CACert string `json:"caCert"`
	// CAKey is the CA's private key, in the bundles of a new cluster only:
	// whichever member reaches etcd first stores the CA there, and all
	// bundles carry the same one. A joining member finds it in etcd.
	CAKey    string `json:"caKey,omitempty"`
	PeerCert string `json:"peerCert"`
	PeerKey  string `json:"peerKey"`
}

// LoadPeerBundle reads and checks a bundle file.
func LoadPeerBundle(path string) (PeerBundle, error) {
	var b PeerBundle
	data, err := os.ReadFile(path)
	if err != nil {
		return b, fmt.Errorf("peer bundle: %w", err)
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("peer bundle %s: %v", path, err)
	}
	if err := b.check(); err != nil {
		return b, fmt.Errorf("peer bundle %s: %w", path, err)
	}
	return b, nil
}

func (b PeerBundle) check() error {
	if b.State != "new" && b.State != "existing" {
		return fmt.Errorf("state %q is neither new nor existing", b.State)
	}
	if b.CACert == "" || b.PeerCert == "" || b.PeerKey == "" {
		return errors.New("lacks the CA certificate or the peer certificate and key")
	}
	peers, err := ParseInitialCluster(b.InitialCluster)
	if err != nil {
		return err
	}
	if b.Self(peers) == "" {
		return fmt.Errorf("%s is not in its initial cluster %s", b.Name, b.InitialCluster)
	}
	return nil
}

// Self is the peer URL of the bundle's member in peers, or "".
func (b PeerBundle) Self(peers []Peer) string {
	for _, p := range peers {
		if p.Name == b.Name {
			return p.URL
		}
	}
	return ""
}

// Save writes the bundle with mode 0600.
func (b PeerBundle) Save(path string) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ClusterOptions make an embedded member one of an etcd cluster.
type ClusterOptions struct {
	// InitialCluster lists every member (ParseInitialCluster's form);
	// this member is the one named EmbeddedOptions.Name.
	InitialCluster string
	// Join is true for a member joining a running cluster (etcd's
	// initial-cluster-state "existing"), false for one forming a new one.
	Join bool
	// PeerListen is the peer address (HOST:PORT); default the host and
	// port of this member's URL in InitialCluster.
	PeerListen string
	// Peer TLS: this member's certificate and key, and the CA whose
	// certificates it trusts (the cluster CA), as files.
	CertFile, KeyFile, CAFile string
}

// clusterToken names the cluster after its CA, so members of two skiff
// clusters never take each other for peers even with the same names.
func clusterToken(caFile string) (string, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "skiff-" + hex.EncodeToString(sum[:8]), nil
}

// peerListen is o.PeerListen, or the host and port of self.
func (o ClusterOptions) peerListen(self string) (string, error) {
	if o.PeerListen != "" {
		if _, _, err := net.SplitHostPort(o.PeerListen); err != nil {
			return "", fmt.Errorf("peer listen address %q: %v", o.PeerListen, err)
		}
		return o.PeerListen, nil
	}
	p, _ := url.Parse(self)
	return p.Host, nil
}

// MemberStatus is what an embedded member knows of itself and its leader.
type MemberStatus struct {
	ID           uint64 // this member's etcd ID
	Name         string
	PeerURLs     []string
	Leader       uint64 // the raft leader's member ID as this member sees it; 0: none
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	Learner      bool
	Members      int // members in the cluster as this member knows it
}

// Status reports the member's raft state, from memory.
func (e *Embedded) Status() MemberStatus {
	s := e.etcd.Server
	st := MemberStatus{
		ID:           uint64(s.ID()),
		Name:         e.name,
		Leader:       s.Lead(),
		Term:         s.Term(),
		CommitIndex:  s.CommittedIndex(),
		AppliedIndex: s.AppliedIndex(),
		Learner:      s.IsLearner(),
		Members:      len(s.Cluster().Members()),
	}
	if m := s.Cluster().Member(s.ID()); m != nil {
		st.PeerURLs = m.PeerURLs
	}
	return st
}

// MemberInfo is one member of the cluster as a member knows it.
type MemberInfo struct {
	ID       uint64
	Name     string // "" for a member added but never started
	PeerURLs []string
	Learner  bool
}

// Members lists the cluster's members as this member knows them, from
// memory: it answers without a quorum (etcd's MemberList wants one), and
// may be behind a membership change it has not applied yet.
func (e *Embedded) Members() []MemberInfo {
	var out []MemberInfo
	for _, m := range e.etcd.Server.Cluster().Members() {
		out = append(out, MemberInfo{ID: uint64(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, Learner: m.IsLearner})
	}
	return out
}

// Done is closed when the member stops: closed by Close, failed, or removed
// from the cluster by another member.
func (e *Embedded) Done() <-chan struct{} { return e.etcd.Server.StopNotify() }

// Clustered reports whether the member was started with ClusterOptions
// (it has peers, or may get some).
func (e *Embedded) Clustered() bool { return e.clustered }
