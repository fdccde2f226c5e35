package server

import (
	"context"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
)

// A simulator (`skiff agent --simulate N`, package agent/sim) runs many
// hollow nodes, PREFIX-00001 … PREFIX-0000N, through one token
// simulator:PREFIX: it registers their Node objects, heartbeats them and
// takes and completes their work, so that the control plane can be
// measured at thousands of nodes without as many machines. Each request
// about a Node or a pod is made as the node concerned (actAs), and so is
// held to every rule of nodes (authz.go); work is taken for all its nodes
// at once (work.go). Only admins create simulator tokens, and Tokens keeps
// a simulator's names apart from those of nodes with tokens of their own.

// simulator returns the prefix of a simulator token, or "".
func simulator(tok Token) string {
	if id := identityOf(tok); id.Kind == identity.Simulator {
		return id.Name
	}
	return ""
}

// asNode returns the token a simulator acts for one of its nodes with.
func asNode(tok Token, node string) (Token, error) {
	prefix := simulator(tok)
	if !identity.Simulates(prefix, node) {
		return Token{}, forbidden("%s may not act for node %s: it acts only for the nodes named %s-DIGITS", tok.Identity, node, prefix)
	}
	return Token{ID: tok.ID, Identity: identity.Identity{Kind: identity.Node, Name: node}.String(),
		Created: tok.Created, CreatedBy: tok.CreatedBy}, nil
}

// actAs returns the token a request about ref is made with: a simulator's
// requests are made as the node concerned, that Node itself or the node a
// pod is placed on; other tokens are returned as they are.
func (s *Server) actAs(ctx context.Context, tok Token, ref api.Ref) (Token, error) {
	prefix := simulator(tok)
	if prefix == "" {
		return tok, nil
	}
	switch ref.Kind {
	case "Node":
		return asNode(tok, ref.Name)
	case "Pod":
		pod, err := s.store.Get(ctx, ref)
		if err != nil {
			return Token{}, err
		}
		node, _ := pod.Status["node"].(string)
		if !identity.Simulates(prefix, node) {
			return Token{}, forbidden("%s may not write %s: it is not placed on one of its nodes", tok.Identity, ref)
		}
		return asNode(tok, node)
	}
	return Token{}, forbidden("%s may not write %s: a simulator writes only its nodes' Node objects and pods", tok.Identity, ref)
}
