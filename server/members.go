package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/store"
)

// The servers of a cluster
//
// Two sources tell who the servers are. etcd's member list is the truth for
// membership: which members vote, and with which peer URLs. Each server
// also registers itself under PREFIX/servers/NAME (a ServerRecord: its API
// URL, its member ID) on a lease of RegistrationTTL that it renews while it
// runs, so a server that died or was cut off from the quorum drops out of
// the registrations within seconds.
//
// GET /v1/servers joins the two and asks every registered server for its
// member's raft state (GET /v1/servers?local=1, with the caller's token),
// so that terms, indexes and lag are read at one moment from every member;
// DELETE /v1/servers/NAME removes a dead member and POST /v1/servers adds
// one, answering with its join bundle. All three are for admins only.

// RegistrationTTL is how long a server's registration outlives its last
// renewal.
const RegistrationTTL = 10 * time.Second

// addPatience is how long an added member waits for etcd to find every
// member connected (etcd wants five seconds of it).
const addPatience = 10 * time.Second

// statusTimeout bounds the call to each server for its status.
const statusTimeout = 2 * time.Second

// ServerRecord is what a server registers about itself.
type ServerRecord struct {
	Name     string    `json:"name"`
	APIURL   string    `json:"apiURL"`
	MemberID string    `json:"memberID,omitempty"` // its etcd member's ID (hex), with an embedded member
	Started  time.Time `json:"started"`
}

// Health of a server as GET /v1/servers reports it.
const (
	HealthHealthy     = "healthy"     // its API answered and its member follows a leader
	HealthNoLeader    = "no leader"   // its API answered, but its member sees no raft leader (no quorum)
	HealthUnreachable = "unreachable" // registered, but its API did not answer
	HealthDown        = "down"        // a member with no live registration: the server is not running, or cut off from the quorum
	HealthNotStarted  = "not started" // added to etcd, but never started
)

// ServerStatus is one server (or etcd member) in GET /v1/servers.
type ServerStatus struct {
	Name     string   `json:"name"`
	MemberID string   `json:"memberID,omitempty"`
	PeerURLs []string `json:"peerURLs,omitempty"`
	APIURL   string   `json:"apiURL,omitempty"`
	Health   string   `json:"health"`
	Error    string   `json:"error,omitempty"` // why it is not healthy
	// EtcdLeader is true for the raft leader.
	EtcdLeader bool `json:"etcdLeader,omitempty"`
	// Leader is the raft leader's member ID as this member sees it ("" for
	// none); in the answer to ?local=1 only.
	Leader string `json:"leader,omitempty"`
	Term   uint64 `json:"raftTerm,omitempty"`
	// RaftIndex is the last raft entry the member applied; RaftLag how far
	// that is behind the leader's, read at about the same moment. Both are
	// 0 when unknown (health not healthy).
	RaftIndex uint64 `json:"raftIndex,omitempty"`
	RaftLag   uint64 `json:"raftLag"`
	Learner   bool   `json:"learner,omitempty"`
}

// ServersStatus is the answer to GET /v1/servers.
type ServersStatus struct {
	// Self is the server that answered.
	Self string `json:"self"`
	// Etcd is "embedded" (the servers' members form the etcd cluster) or
	// "external".
	Etcd string `json:"etcd"`
	// ControllerLeader is the server running the cluster controllers now,
	// and its API URL; "" when none holds the election or it is unknown.
	ControllerLeader    string         `json:"controllerLeader,omitempty"`
	ControllerLeaderURL string         `json:"controllerLeaderURL,omitempty"`
	Servers             []ServerStatus `json:"servers"`
}

// AddServerRequest is the body of POST /v1/servers.
type AddServerRequest struct {
	Name    string `json:"name"`
	PeerURL string `json:"peerURL"`
}

// LocalMember is the etcd member embedded in this server.
type LocalMember interface {
	Status() store.MemberStatus
	// Members lists the cluster's members as this member knows them,
	// without a quorum.
	Members() []store.MemberInfo
	// Clustered is false for a lone member, whose peer URL is a
	// placeholder nothing listens on.
	Clustered() bool
}

// Membership answers the /v1/servers endpoints of one server. Build it
// with NewMembership and give it to the API with Server.SetMembership.
type Membership struct {
	kv     *clientv3.Client
	prefix string
	self   ServerRecord
	local  LocalMember // nil with an external etcd
	ca     *CA
	http   *http.Client

	mu     sync.Mutex
	leader func(ctx context.Context) (name, apiURL string, err error) // guarded by mu
}

// NewMembership describes this server (self) to the others. local is its
// embedded etcd member, nil with an external etcd; ca signs the peer
// certificates of members added through the API and is the root the
// servers' APIs are checked against.
func NewMembership(kv *clientv3.Client, prefix string, self ServerRecord, local LocalMember, ca *CA) *Membership {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, IdleConnTimeout: time.Minute}
	if local != nil && self.MemberID == "" {
		self.MemberID = memberHex(local.Status().ID)
	}
	if self.Started.IsZero() {
		self.Started = time.Now().UTC()
	}
	return &Membership{kv: kv, prefix: prefix, self: self, local: local, ca: ca,
		http: &http.Client{Transport: tr, Timeout: statusTimeout}}
}

// SetControllerLeader gives the lookup of the server leading the cluster
// controllers, shown by GET /v1/servers.
func (m *Membership) SetControllerLeader(f func(ctx context.Context) (name, apiURL string, err error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leader = f
}

// SetMembership makes the server answer /v1/servers from m.
func (s *Server) SetMembership(m *Membership) { s.members = m }

func memberHex(id uint64) string { return strconv.FormatUint(id, 16) }

func (m *Membership) recordKey(name string) string { return m.prefix + "/servers/" + name }

// Advertise keeps this server's registration under PREFIX/servers/NAME
// while ctx lasts, on a lease renewed every third of RegistrationTTL; a
// lost lease (a partition longer than the TTL) is replaced once etcd
// answers again. On return the registration is revoked, so a server
// stopped cleanly drops out at once.
func (m *Membership) Advertise(ctx context.Context, log *slog.Logger) {
	val, _ := json.Marshal(m.self)
	var lease clientv3.LeaseID
	defer func() {
		if lease != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			m.kv.Revoke(rctx, lease)
			cancel()
		}
	}()
	for ctx.Err() == nil {
		g, err := m.kv.Grant(ctx, int64(RegistrationTTL/time.Second))
		if err == nil {
			lease = g.ID
			_, err = m.kv.Put(ctx, m.recordKey(m.self.Name), string(val), clientv3.WithLease(g.ID))
		}
		var ch <-chan *clientv3.LeaseKeepAliveResponse
		if err == nil {
			ch, err = m.kv.KeepAlive(ctx, g.ID)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("cannot register this server in etcd; retrying", "server", m.self.Name, "err", err)
			}
		} else {
			for range ch { // until the lease is lost or ctx ends
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// CheckName refuses a name another running server has registered under
// another API URL: two servers of one name would overwrite each other's
// registration and campaign as one. Servers on an external etcd need it;
// members of a cluster have names etcd keeps unique.
func (m *Membership) CheckName(ctx context.Context) error {
	recs, err := m.records(ctx)
	if err != nil {
		return err
	}
	if r, ok := recs[m.self.Name]; ok && r.APIURL != m.self.APIURL {
		return fmt.Errorf("another server named %s is registered, at %s: give this one another --name (or, if that was this server before a restart, wait %s for its registration to lapse)",
			m.self.Name, r.APIURL, RegistrationTTL)
	}
	return nil
}

// records reads the live registrations, from this member alone (a
// serializable read answers without a quorum, which is when it matters).
func (m *Membership) records(ctx context.Context) (map[string]ServerRecord, error) {
	resp, err := m.kv.Get(ctx, m.prefix+"/servers/", clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("read server registrations: %w", err)
	}
	recs := map[string]ServerRecord{}
	for _, kv := range resp.Kvs {
		var r ServerRecord
		if json.Unmarshal(kv.Value, &r) == nil && r.Name != "" {
			recs[r.Name] = r
		}
	}
	return recs, nil
}

// localStatus is this server's own line, its member's raft state included.
func (m *Membership) localStatus() ServerStatus {
	st := ServerStatus{Name: m.self.Name, APIURL: m.self.APIURL, MemberID: m.self.MemberID, Health: HealthHealthy}
	if m.local == nil {
		return st
	}
	ms := m.local.Status()
	st.Term, st.RaftIndex, st.Learner = ms.Term, ms.AppliedIndex, ms.Learner
	if m.local.Clustered() {
		st.PeerURLs = ms.PeerURLs
	}
	if ms.Leader == 0 {
		st.Health, st.Error = HealthNoLeader, "its etcd member sees no raft leader: fewer than a quorum of members are reachable from it"
	} else {
		st.Leader = memberHex(ms.Leader)
	}
	return st
}

// remoteStatus asks a server's API for its own line, with the caller's
// authorization.
func (m *Membership) remoteStatus(ctx context.Context, apiURL, auth string) (ServerStatus, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(apiURL, "/")+"/v1/servers?local=1", nil)
	if err != nil {
		return ServerStatus{}, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := m.http.Do(req)
	if err != nil {
		return ServerStatus{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var eb ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return ServerStatus{}, fmt.Errorf("%s: %s", resp.Status, eb.Error)
	}
	var st ServerStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return ServerStatus{}, fmt.Errorf("bad answer: %v", err)
	}
	return st, nil
}

// answers reports whether the API at apiURL answers its health check.
func (m *Membership) answers(ctx context.Context, apiURL string) bool {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(apiURL, "/")+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// Status gathers every server's line: the etcd members (with an embedded
// etcd) joined by name with the registrations, each registered server asked
// for its own state. auth is the caller's Authorization header, passed on.
func (m *Membership) Status(ctx context.Context, auth string) (ServersStatus, error) {
	out := ServersStatus{Self: m.self.Name, Etcd: "external"}
	recs, err := m.records(ctx)
	if err != nil {
		return out, err
	}
	byName := map[string]*ServerStatus{}
	var order []string
	line := func(name string) *ServerStatus {
		if st, ok := byName[name]; ok {
			return st
		}
		st := &ServerStatus{Name: name}
		byName[name] = st
		order = append(order, name)
		return st
	}
	if m.local != nil {
		out.Etcd = "embedded"
		// The members as this one knows them: this must answer when the
		// quorum is lost, which is when an operator asks.
		for _, mem := range m.local.Members() {
			name := mem.Name
			if name == "" { // added, never started: etcd learns its name when it starts
				name = memberHex(mem.ID)
			}
			st := line(name)
			st.MemberID, st.Learner = memberHex(mem.ID), mem.Learner
			if m.local.Clustered() {
				st.PeerURLs = mem.PeerURLs
			}
			st.Health, st.Error = HealthDown, "no live registration: the server is not running, or is cut off from the quorum"
			if mem.Name == "" {
				st.Health, st.Error = HealthNotStarted, "added to the cluster but never started: start it with its join bundle, or remove it"
			}
		}
	}
	names := make([]string, 0, len(recs))
	for name := range recs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if _, ok := byName[name]; !ok && m.local != nil {
			continue // registered, but no member of the cluster (removed): not a server any more
		}
		st := line(name)
		st.APIURL = recs[name].APIURL
		st.Health, st.Error = HealthUnreachable, ""
	}
	// Ask every registered server at once, this one from memory.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, name := range order {
		st := byName[name]
		if st.APIURL == "" && name != m.self.Name {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got ServerStatus
			var err error
			if name == m.self.Name {
				got = m.localStatus()
			} else {
				cctx, cancel := context.WithTimeout(ctx, statusTimeout)
				got, err = m.remoteStatus(cctx, st.APIURL, auth)
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				st.Health, st.Error = HealthUnreachable, err.Error()
				return
			}
			if got.PeerURLs == nil {
				got.PeerURLs = st.PeerURLs
			}
			if got.MemberID == "" {
				got.MemberID = st.MemberID
			}
			*st = got
		}()
	}
	wg.Wait()
	// The raft leader, as the members that answered see it (they agree
	// unless an election is under way), and each one's lag behind it.
	var leader *ServerStatus
	for _, name := range order {
		st := byName[name]
		if st.Leader == "" {
			continue
		}
		for _, cand := range order {
			if byName[cand].MemberID == st.Leader {
				leader = byName[cand]
			}
		}
		if leader != nil {
			break
		}
	}
	for _, name := range order {
		st := byName[name]
		st.Leader = ""
		if leader != nil && st == leader {
			st.EtcdLeader = true
		}
		if leader != nil && leader.RaftIndex > 0 && st.RaftIndex > 0 && leader.RaftIndex > st.RaftIndex {
			st.RaftLag = leader.RaftIndex - st.RaftIndex
		}
		out.Servers = append(out.Servers, *st)
	}
	slices.SortFunc(out.Servers, func(a, b ServerStatus) int { return strings.Compare(a.Name, b.Name) })
	m.mu.Lock()
	leaderOf := m.leader
	m.mu.Unlock()
	if leaderOf != nil {
		// A linearizable read: without a quorum it would wait etcd's
		// seven seconds to fail, and the rest of the answer matters more.
		lctx, cancel := context.WithTimeout(ctx, statusTimeout)
		if name, u, err := leaderOf(lctx); err == nil {
			out.ControllerLeader, out.ControllerLeaderURL = name, u
		}
		cancel()
	}
	return out, nil
}

// member finds a member by name, or by its ID (hex) for one never started.
func member(members []*etcdserverpb.Member, name string) *etcdserverpb.Member {
	for _, mem := range members {
		if mem.Name == name || memberHex(mem.ID) == name {
			return mem
		}
	}
	return nil
}

// Remove takes a member out of the etcd cluster and drops its
// registration. It refuses to remove the last member; without force, it
// also refuses to remove the server answering (its API and member stop at
// once) and a server that is running (its registered API answers).
func (m *Membership) Remove(ctx context.Context, name string, force bool) (string, error) {
	if m.local == nil {
		return "", badRequest("this cluster's etcd is external: change its members with etcdctl; a skiff server on it drops out of skiff servers %s after it stops", RegistrationTTL)
	}
	ml, err := m.kv.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd member list: %w", err)
	}
	mem := member(ml.Members, name)
	if mem == nil {
		return "", &statusError{kind: errNotFound, msg: fmt.Sprintf("no etcd member is named %s (skiff servers lists them)", name)}
	}
	if len(ml.Members) == 1 {
		return "", &statusError{kind: errConflict, msg: fmt.Sprintf("%s is the cluster's last etcd member and holds all its data: it cannot be removed (stop the server instead)", name)}
	}
	if !force && mem.Name == m.self.Name {
		return "", &statusError{kind: errConflict, msg: fmt.Sprintf("%s is the server answering this request: removing it stops its etcd member and this API at once. "+
			"Ask another server (list it first in your client config), or pass --force to remove it anyway", name)}
	}
	if !force && mem.Name != "" {
		recs, err := m.records(ctx)
		if err != nil {
			return "", err
		}
		if rec, ok := recs[mem.Name]; ok && m.answers(ctx, rec.APIURL) {
			return "", &statusError{kind: errConflict, msg: fmt.Sprintf("%s is running (its API at %s answers): removing it stops its etcd member and it cannot rejoin with its data. "+
				"Stop it first, or pass --force to decommission it anyway", name, rec.APIURL)}
		}
	}
	if _, err := m.kv.MemberRemove(ctx, mem.ID); err != nil {
		if errors.Is(err, rpctypes.ErrMemberNotEnoughStarted) {
			return "", &statusError{kind: errConflict, msg: fmt.Sprintf("etcd refuses to remove %s: the members left would have too few running ones for a quorum (bring a dead member back first)", name)}
		}
		return "", fmt.Errorf("remove etcd member %s: %w", name, err)
	}
	if mem.Name != "" {
		if _, err := m.kv.Delete(ctx, m.recordKey(mem.Name)); err != nil {
			return "", fmt.Errorf("member %s removed, but not its registration: %w", name, err)
		}
	}
	return memberHex(mem.ID), nil
}

// Add makes a new voting member of the etcd cluster, to be started with
// the bundle returned: its peer certificate for the host of peerURL, the
// cluster CA and the membership as it is now. Until it starts, the new
// member counts toward the quorum without voting, so start it right away.
func (m *Membership) Add(ctx context.Context, name, peerURL string) (store.PeerBundle, error) {
	if m.local == nil {
		return store.PeerBundle{}, badRequest("this cluster's etcd is external: add etcd members with etcdctl, and start skiff servers on it with --etcd-endpoints")
	}
	if err := store.CheckMemberName(name); err != nil {
		return store.PeerBundle{}, badRequest("%v", err)
	}
	if err := store.CheckPeerURL(peerURL); err != nil {
		return store.PeerBundle{}, badRequest("%v", err)
	}
	peerURL = strings.TrimSuffix(peerURL, "/")
	ml, err := m.kv.MemberList(ctx)
	if err != nil {
		return store.PeerBundle{}, fmt.Errorf("etcd member list: %w", err)
	}
	for _, mem := range ml.Members {
		if mem.Name == name {
			return store.PeerBundle{}, &statusError{kind: errConflict, msg: fmt.Sprintf("%s is a member already (skiff server remove %s first to replace it)", name, name)}
		}
		if slices.Contains(mem.PeerURLs, peerURL) {
			return store.PeerBundle{}, &statusError{kind: errConflict, msg: fmt.Sprintf("member %s has the peer URL %s already", cmp.Or(mem.Name, memberHex(mem.ID)), peerURL)}
		}
		if mem.Name == "" {
			return store.PeerBundle{}, &statusError{kind: errConflict, msg: fmt.Sprintf("member %s was added but never started: start it, or remove it (skiff server remove %s), before adding another", memberHex(mem.ID), memberHex(mem.ID))}
		}
	}
	certPEM, keyPEM, err := m.ca.PeerCert([]string{store.PeerHost(peerURL)})
	if err != nil {
		return store.PeerBundle{}, fmt.Errorf("peer certificate for %s: %w", name, err)
	}
	// etcd adds a member only when every member has been connected to
	// this one for five seconds; right after a start or a removal it says
	// "unhealthy" for a moment, so wait that out.
	var resp *clientv3.MemberAddResponse
	for deadline := time.Now().Add(addPatience); ; {
		resp, err = m.kv.MemberAdd(ctx, []string{peerURL})
		if !errors.Is(err, rpctypes.ErrUnhealthy) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return store.PeerBundle{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	switch {
	case errors.Is(err, rpctypes.ErrMemberNotEnoughStarted):
		return store.PeerBundle{}, &statusError{kind: errConflict, msg: "etcd refuses to add a member now: with it, the cluster would need more running members for a quorum than it has. Remove dead members first (skiff server remove NAME)"}
	case errors.Is(err, rpctypes.ErrUnhealthy):
		return store.PeerBundle{}, &statusError{kind: errConflict, msg: "etcd refuses to add a member now: not every member is connected to the others (skiff servers shows which is down); remove dead members first (skiff server remove NAME)"}
	case err != nil:
		return store.PeerBundle{}, fmt.Errorf("add etcd member %s: %w", name, err)
	}
	var peers []store.Peer
	for _, mem := range resp.Members {
		n := mem.Name
		if mem.ID == resp.Member.ID {
			n = name
		}
		for _, u := range mem.PeerURLs {
			peers = append(peers, store.Peer{Name: n, URL: u})
		}
	}
	return store.PeerBundle{
		Name:           name,
		InitialCluster: store.FormatInitialCluster(peers),
		State:          "existing",
		CACert:         string(m.ca.CertPEM),
		PeerCert:       string(certPEM),
		PeerKey:        string(keyPEM),
	}, nil
}

// listServers is GET /v1/servers (every server) and GET /v1/servers?local=1
// (the answering server's own line).
func (s *Server) listServers(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "list servers"); err != nil {
		return err
	}
	if s.members == nil {
		return &statusError{kind: errNotFound, msg: "this server keeps no list of servers"}
	}
	if r.URL.Query().Get("local") != "" {
		writeJSON(w, 200, s.members.localStatus())
		return nil
	}
	st, err := s.members.Status(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, st)
	return nil
}

// addServer is POST /v1/servers: it answers with the new member's join
// bundle.
func (s *Server) addServer(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "add servers"); err != nil {
		return err
	}
	if s.members == nil {
		return &statusError{kind: errNotFound, msg: "this server keeps no list of servers"}
	}
	var req AddServerRequest
	if err := decodeBody(r, &req, `want {"name": NAME, "peerURL": "https://HOST:PORT"}`); err != nil {
		return err
	}
	b, err := s.members.Add(r.Context(), req.Name, req.PeerURL)
	if err != nil {
		return err
	}
	writeJSON(w, 200, b)
	return nil
}

// removeServer is DELETE /v1/servers/{name}[?force=1].
func (s *Server) removeServer(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "remove servers"); err != nil {
		return err
	}
	if s.members == nil {
		return &statusError{kind: errNotFound, msg: "this server keeps no list of servers"}
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	id, err := s.members.Remove(r.Context(), r.PathValue("name"), force)
	if err != nil {
		return err
	}
	writeJSON(w, 200, map[string]string{"removed": r.PathValue("name"), "memberID": id})
	return nil
}
