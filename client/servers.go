package client

import (
	"context"
	"encoding/json"
	"net/url"
)

// ServerStatus is one server of the control plane (an etcd member, with
// an embedded etcd), as GET /v1/servers reports it.
type ServerStatus struct {
	Name     string   `json:"name"`
	MemberID string   `json:"memberID,omitempty"`
	PeerURLs []string `json:"peerURLs,omitempty"`
	APIURL   string   `json:"apiURL,omitempty"`
	// Health is "healthy", "no leader", "unreachable", "down" or
	// "not started"; Error says why when it is not healthy.
	Health     string `json:"health"`
	Error      string `json:"error,omitempty"`
	EtcdLeader bool   `json:"etcdLeader,omitempty"`
	Term       uint64 `json:"raftTerm,omitempty"`
	// RaftIndex is the last raft entry the member applied and RaftLag how
	// far it is behind the leader's; 0 when unknown.
	RaftIndex uint64 `json:"raftIndex,omitempty"`
	RaftLag   uint64 `json:"raftLag"`
	Learner   bool   `json:"learner,omitempty"`
}

// Servers is the control plane as one server sees it.
type Servers struct {
	Self                string         `json:"self"` // the server that answered
	Etcd                string         `json:"etcd"` // "embedded" or "external"
	ControllerLeader    string         `json:"controllerLeader,omitempty"`
	ControllerLeaderURL string         `json:"controllerLeaderURL,omitempty"`
	Servers             []ServerStatus `json:"servers"`
}

// Servers lists the servers and etcd members (admin only).
func (c *Client) Servers(ctx context.Context) (Servers, error) {
	var s Servers
	return s, c.do(ctx, "GET", "/v1/servers", nil, &s)
}

// AddServer adds an etcd member named name with peer URL peerURL and
// returns its join bundle (JSON, with the member's private key), which
// `skiff server --join FILE` starts it with (admin only).
func (c *Client) AddServer(ctx context.Context, name, peerURL string) ([]byte, error) {
	var b json.RawMessage
	err := c.do(ctx, "POST", "/v1/servers", map[string]string{"name": name, "peerURL": peerURL}, &b)
	return b, err
}

// RemoveServer removes an etcd member by name (or by member ID, for one
// never started). Without force, the server refuses to remove itself or a
// running server (admin only).
func (c *Client) RemoveServer(ctx context.Context, name string, force bool) error {
	q := ""
	if force {
		q = "?force=true"
	}
	return c.do(ctx, "DELETE", "/v1/servers/"+url.PathEscape(name)+q, nil, nil)
}
