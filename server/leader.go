package server

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Leadership: every server runs an Orchestrator, and one at a time leads.
//
// The leader is elected through etcd (concurrency.Election on the key
// prefix PREFIX/leader): the candidates' keys are tied to their sessions'
// leases, and the oldest key leads. Only the leader runs the cluster
// controllers (scheduler, IPAM, node lifecycle, pinned), feeds the
// workflow engine and dispatches its work; the others keep what the API
// needs (the placement cache, leases, registrations) from watches, and
// hand work requests to the leader.

// leaderValue is what a candidate puts in its election key.
type leaderValue struct {
	Name   string `json:"name"`
	APIURL string `json:"apiURL,omitempty"`
}

// SetIdentity names this server and the URL of its API, as other servers
// reach it; call it before Run. A server with no name ("") is a lone
// server: it leads without an election.
func (o *Orchestrator) SetIdentity(name, apiURL string) {
	o.name, o.apiURL = name, apiURL
}

// IsLeader reports whether this server leads now.
func (o *Orchestrator) IsLeader() bool { return o.name == "" }

// electionPrefix is where the servers of a store prefix campaign.
func electionPrefix(prefix string) string { return prefix + "/leader" }

// Leader returns the name and API URL of the server that leads the
// servers of a store prefix, "" if none does.
func Leader(ctx context.Context, kv *clientv3.Client, prefix string) (name, apiURL string, err error) {
	resp, err := kv.Get(ctx, electionPrefix(prefix)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", "", fmt.Errorf("read the leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", "", nil
	}
	var v leaderValue
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return "", "", fmt.Errorf("read the leader: damaged election key %s: %v", resp.Kvs[0].Key, err)
	}
	return v.Name, v.APIURL, nil
}
