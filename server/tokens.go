package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
)

// Roles an operator token can carry.
const (
	RoleAdmin = "admin" // everything, including tokens
	RoleEdit  = "edit"  // read and write objects, in some namespaces if Namespaces are given
	RoleView  = "view"  // read only
)

// Token is a bearer credential as stored: only a hash of its secret is kept.
type Token struct {
	ID       string `json:"id"`
	Identity string `json:"identity"`
	Role     string `json:"role,omitempty"`
	// Namespaces confines an operator's edit role to these namespaces
	// (sorted, no duplicates); empty means cluster-wide. See authz.go.
	Namespaces []string  `json:"namespaces,omitempty"`
	Hash       string    `json:"hash"`
	Created    time.Time `json:"created"`
	CreatedBy  string    `json:"createdBy"`
}

// Tokens keeps tokens in etcd under PREFIX/tokens/ID.
//
// Verify remembers the tokens it verified, so a request costs a map lookup
// and a comparison rather than an etcd read and a SHA-256. A watch of the
// tokens' prefix forgets a token as soon as it changes or goes, whichever
// server revoked it; Revoke forgets it at once too. While no watch runs
// (before the first Verify, after it failed) nothing is remembered.
type Tokens struct {
	kv     *clientv3.Client
	prefix string

	mu       sync.Mutex
	verified map[string]verified // token ID → its secret and record; guarded by mu
	watching bool                // a watch forgets changed tokens; guarded by mu
	changes  uint64              // events the watch saw; guarded by mu
}

// verified is a token Verify checked against etcd.
type verified struct {
	secret string
	tok    Token
}

// ErrBadToken means a token is malformed, unknown or revoked.
var ErrBadToken = errors.New("invalid or revoked token")

func NewTokens(kv *clientv3.Client, prefix string) *Tokens {
	return &Tokens{kv: kv, prefix: prefix + "/tokens/", verified: map[string]verified{}}
}

// Create issues a token for id and returns its secret form, which is shown
// once and never stored: "skiff.ID.SECRET". Namespaces, if any, confine an
// operator's edit role to them; without any, edit is cluster-wide.
func (t *Tokens) Create(ctx context.Context, id identity.Identity, role, by string, namespaces ...string) (string, Token, error) {
	if id.Kind == identity.Operator {
		if role == "" {
			role = RoleAdmin
		}
		if role != RoleAdmin && role != RoleEdit && role != RoleView {
			return "", Token{}, fmt.Errorf("role %q is not admin, edit or view", role)
		}
	} else if role != "" {
		return "", Token{}, fmt.Errorf("only operator tokens carry a role; %s may do what its kind may", id)
	}
	ns, err := tokenNamespaces(id, role, namespaces)
	if err != nil {
		return "", Token{}, err
	}
	if err := t.disjointNodes(ctx, id); err != nil {
		return "", Token{}, err
	}
	idb, secret := make([]byte, 6), make([]byte, 32)
	rand.Read(idb)
	rand.Read(secret)
	tok := Token{ID: hex.EncodeToString(idb), Identity: id.String(), Role: role, Namespaces: ns,
		Created: time.Now().UTC(), CreatedBy: by}
	sec := base64.RawURLEncoding.EncodeToString(secret)
	tok.Hash = hash(sec)
	b, _ := json.Marshal(tok)
	if _, err := t.kv.Put(ctx, t.prefix+tok.ID, string(b)); err != nil {
		return "", Token{}, fmt.Errorf("store token: %w", err)
	}
	return "skiff." + tok.ID + "." + sec, tok, nil
}

// tokenNamespaces validates the namespaces a token is confined to and
// returns them sorted and without duplicates. Only the edit role is
// confined: an admin manages tokens, so it could issue itself an unconfined
// one and a namespace would promise a limit that does not hold; a view
// token reads the whole cluster.
func tokenNamespaces(id identity.Identity, role string, namespaces []string) ([]string, error) {
	if len(namespaces) == 0 {
		return nil, nil
	}
	if id.Kind != identity.Operator {
		return nil, fmt.Errorf("only operator tokens with the edit role are confined to namespaces; %s may do what its kind may", id)
	}
	if role != RoleEdit {
		return nil, fmt.Errorf("namespaces confine only the edit role; the %s role is cluster-wide", role)
	}
	for _, n := range namespaces {
		if err := api.ValidateName(n); err != nil {
			return nil, fmt.Errorf("namespace %v", err)
		}
	}
	ns := slices.Clone(namespaces)
	slices.Sort(ns)
	return slices.Compact(ns), nil
}

// disjointNodes keeps real and simulated nodes apart: a simulator token
// is refused if a node token exists for a name it would act for, and a
// node token for a name a simulator acts for. So a simulator never acts
// for a node that has an agent of its own.
func (t *Tokens) disjointNodes(ctx context.Context, id identity.Identity) error {
	if id.Kind != identity.Simulator && id.Kind != identity.Node {
		return nil
	}
	if id.Kind == identity.Simulator {
		if err := api.ValidateName(identity.SimulatedNode(id.Name, 0)); err != nil {
			return fmt.Errorf("simulator %q: its nodes are named %s, which must be DNS labels of at most 63 characters", id.Name, identity.SimulatedNode(id.Name, 1))
		}
	}
	toks, err := t.List(ctx)
	if err != nil {
		return err
	}
	for _, tok := range toks {
		kind, name, _ := strings.Cut(tok.Identity, ":")
		switch {
		case id.Kind == identity.Simulator && kind == identity.Node && identity.Simulates(id.Name, name):
			return fmt.Errorf("%s would act for node %s, which has a node token of its own (token %s): pick another prefix", id, name, tok.ID)
		case id.Kind == identity.Node && kind == identity.Simulator && identity.Simulates(name, id.Name):
			return fmt.Errorf("node %s is one of %s's simulated nodes (token %s): pick another name", id.Name, tok.Identity, tok.ID)
		}
	}
	return nil
}

func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Verify returns the stored token that secret belongs to.
func (t *Tokens) Verify(ctx context.Context, secret string) (Token, error) {
	parts := strings.Split(secret, ".")
	if len(parts) != 3 || parts[0] != "skiff" || parts[1] == "" {
		return Token{}, ErrBadToken
	}
	id := parts[1]
	t.mu.Lock()
	v, ok := t.verified[id]
	changes, watching := t.changes, t.watching
	t.mu.Unlock()
	if ok {
		if subtle.ConstantTimeCompare([]byte(secret), []byte(v.secret)) != 1 {
			return Token{}, ErrBadToken
		}
		return v.tok, nil
	}
	if !watching {
		if err := t.watch(ctx); err != nil {
			return Token{}, err
		}
	}
	resp, err := t.kv.Get(ctx, t.prefix+id, clientv3.WithSerializable())
	if err != nil {
		return Token{}, fmt.Errorf("read token: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Token{}, ErrBadToken
	}
	var tok Token
	if err := json.Unmarshal(resp.Kvs[0].Value, &tok); err != nil {
		return Token{}, fmt.Errorf("token %s damaged: %v", id, err)
	}
	if subtle.ConstantTimeCompare([]byte(hash(parts[2])), []byte(tok.Hash)) != 1 {
		return Token{}, ErrBadToken
	}
	t.mu.Lock()
	// Remember it only if the watch saw no change since before the read:
	// a revocation it delivered meanwhile must not be undone.
	if t.watching && t.changes == changes {
		t.verified[id] = verified{secret: secret, tok: tok}
	}
	t.mu.Unlock()
	return tok, nil
}

// watch starts the watch that forgets changed and revoked tokens, from
// the store's current revision, unless one runs.
func (t *Tokens) watch(ctx context.Context) error {
	// A serializable read: a member cut off from its quorum still verifies
	// tokens (as Verify reads them), so that skiff servers can say so; a
	// revision older than the cluster's only makes the watch replay more.
	resp, err := t.kv.Get(ctx, t.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
	if err != nil {
		return fmt.Errorf("read tokens: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.watching {
		return nil
	}
	t.watching = true
	// The watch lives as long as the etcd client: it ends when it closes.
	wc := t.kv.Watch(clientv3.WithRequireLeader(context.Background()), t.prefix,
		clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		for wr := range wc {
			t.mu.Lock()
			if wr.Err() != nil {
				t.forgetAllLocked()
				t.mu.Unlock()
				return
			}
			for _, ev := range wr.Events {
				delete(t.verified, strings.TrimPrefix(string(ev.Kv.Key), t.prefix))
			}
			t.changes++
			t.mu.Unlock()
		}
		t.mu.Lock()
		t.forgetAllLocked()
		t.mu.Unlock()
	}()
	return nil
}

// forgetAllLocked forgets every verified token and stops remembering
// until a new watch runs.
func (t *Tokens) forgetAllLocked() {
	t.watching = false
	t.changes++
	clear(t.verified)
}

// List returns all tokens (hashes included, secrets never).
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	resp, err := t.kv.Get(ctx, t.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]Token, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var tok Token
		if err := json.Unmarshal(kv.Value, &tok); err == nil {
			out = append(out, tok)
		}
	}
	return out, nil
}

// Revoke deletes a token by ID.
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	resp, err := t.kv.Delete(ctx, t.prefix+id)
	t.mu.Lock()
	delete(t.verified, id)
	t.changes++
	t.mu.Unlock()
	if err != nil {
		return err
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("token %s: %w", id, errNotFound)
	}
	return nil
}
