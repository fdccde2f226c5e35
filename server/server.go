// Package server is skiff's HTTP API: authentication by bearer token,
// authorization by identity kind and role, the object endpoints over the
// versioned store, watches, tokens, health and metrics.
//
// It is not the composition root: package daemon starts etcd, builds a
// Server and serves it over TLS.
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/fieldpath"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/api/labels"
	"skiff.dev/skiff/ownership"
	"skiff.dev/skiff/store"
	"skiff.dev/skiff/workflow"
)

// RequestTimeout bounds every request but the streaming ones (watch, work
// long polls, logs, exec, image imports).
const RequestTimeout = time.Minute

// streaming reports whether a request streams for longer than a request.
func streaming(endpoint string, r *http.Request) bool {
	switch endpoint {
	case "watch", "work", "images", "backup":
		return true
	}
	return strings.HasSuffix(r.URL.Path, "/logs") || strings.HasSuffix(r.URL.Path, "/exec")
}

// MaxImageBytes bounds an image archive sent for import.
const MaxImageBytes = 16 << 30

// MaxBodyBytes bounds every other request body, and so every object: a write
// stores an object twice in one etcd request (see store.MaxRequestBytes).
const MaxBodyBytes = 2 << 20

// Server serves the API. Build it with New.
type Server struct {
	store   *store.Store
	tokens  *Tokens
	orch    *Orchestrator
	mux     *http.ServeMux
	metrics *metrics

	quorum *quorum // answers 503 while the etcd member has no leader

	nodesMu sync.RWMutex
	nodes   map[string]http.Handler // node name → its agent's API, for agents in this process
	ca      *CA                     // signs node certificates; set by SetTLS
	nodeTLS *tls.Config             // how the server calls agents' APIs; set by SetTLS
	members *Membership             // answers /v1/servers; set by SetMembership

	lists chan struct{} // a slot per apply/list request in progress (MaxListsInFlight)
}

// SetTLS gives the server the cluster CA (to sign nodes' serving
// certificates) and its own certificate (to call nodes' APIs as a client
// they trust).
func (s *Server) SetTLS(ca *CA, cert tls.Certificate) {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	s.ca = ca
	s.nodeTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// AttachNode makes the API of an agent running in this process reachable
// for logs and exec of the pods on its node.
func (s *Server) AttachNode(name string, h http.Handler) {
	s.nodesMu.Lock()
	defer s.nodesMu.Unlock()
	if s.nodes == nil {
		s.nodes = map[string]http.Handler{}
	}
	s.nodes[name] = h
}

// New returns a server over a store, a token registry and the workflow
// orchestrator (which also holds the field owners the API enforces).
func New(st *store.Store, tokens *Tokens, orch *Orchestrator) *Server {
	s := &Server{store: st, tokens: tokens, orch: orch, mux: http.NewServeMux(), metrics: newMetrics(),
		lists: make(chan struct{}, MaxListsInFlight)}
	orch.life.release = s.releasePod
	s.quorum = newQuorum(orch.kv)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.route("GET /v1/whoami", "whoami", s.whoami)
	s.route("POST /v1/apply", "apply", s.apply)
	s.route("POST /v1/apply/list", "apply", s.applyList) // applylist.go
	s.route("/v1/objects/", "objects", s.objects)
	s.route("GET /v1/watch/{kind}", "watch", s.watch)
	s.route("POST /v1/tokens", "tokens", s.createToken)
	s.route("GET /v1/tokens", "tokens", s.listTokens)
	s.route("DELETE /v1/tokens/{id}", "tokens", s.revokeToken)
	s.route("GET /v1/work", "work", s.takeWork)
	s.route("POST /v1/work/{id}/log", "work", s.logWork)
	s.route("POST /v1/work/{id}/done", "work", s.completeWork)
	s.route("POST /v1/work/done", "work", s.completeWorkList)
	s.route("POST /v1/nodes/{node}/images", "images", s.importImage)
	s.route("POST /v1/nodes/{node}/forget", "nodes", s.forgetNode)
	s.route("POST /v1/nodes/{node}/heartbeat", "heartbeat", s.heartbeat)
	s.route("POST /v1/nodes/{node}/certificate", "nodes", s.nodeCertificate)
	s.route("GET /v1/controllers", "controllers", s.listControllers)
	s.route("POST /v1/controllers/verify", "controllers", s.verifyController)
	s.route("GET /v1/backup", "backup", s.backup)
	s.route("GET /v1/servers", "servers", s.listServers) // members.go
	s.route("POST /v1/servers", "servers", s.addServer)
	s.route("DELETE /v1/servers/{name}", "servers", s.removeServer)
	return s
}

func (s *Server) owners() *ownership.Registry { return s.orch.Owners() }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

type handler func(w http.ResponseWriter, r *http.Request, tok Token) error

// route registers an authenticated handler and measures it.
func (s *Server) route(pattern, name string, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		limit := int64(MaxBodyBytes)
		if name == "images" {
			limit = MaxImageBytes
		}
		r.Body = http.MaxBytesReader(rec, r.Body, limit)
		if streaming(name, r) {
			ctx, cancel := s.quorum.watch(r.Context())
			defer cancel()
			s.serve(name, rec, r.WithContext(ctx), h)
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), RequestTimeout)
			defer cancel()
			s.serve(name, rec, r.WithContext(ctx), h)
		}
		s.metrics.observe(name, r.Method, rec.status, time.Since(start))
	})
}

// serve checks a request's quorum and token, runs its handler, and
// answers a failure.
func (s *Server) serve(name string, rec *statusRecorder, r *http.Request, h handler) {
	err := func() error {
		// Servers report on themselves without a quorum too.
		if name != "servers" {
			if err := s.quorum.check(r.Context()); err != nil {
				return err
			}
		}
		tok, err := s.authenticate(r)
		if err != nil {
			return err
		}
		return h(rec, r, tok)
	}()
	if err != nil {
		writeError(rec, r, err)
	}
}

func (s *Server) authenticate(r *http.Request) (Token, error) {
	h := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || secret == "" {
		return Token{}, &statusError{kind: errUnauthenticated, msg: "no token: send Authorization: Bearer TOKEN (skiff's CLI reads it from its config)"}
	}
	tok, err := s.tokens.Verify(r.Context(), secret)
	if errors.Is(err, ErrBadToken) {
		return Token{}, &statusError{kind: errUnauthenticated, msg: "token is invalid or revoked"}
	}
	return tok, err
}

// readBody reads a request body within MaxBodyBytes.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, &statusError{kind: errTooLarge, msg: "request body larger than " + strconv.Itoa(MaxBodyBytes>>20) + " MiB"}
	}
	return b, err
}

// decodeBody reads a JSON body into v, refusing unknown fields; a body
// that is not what usage describes is a 400 saying so.
func decodeBody(r *http.Request, v any, usage string) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("%s: %v", usage, err)
	}
	return nil
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, tok Token) error {
	writeJSON(w, 200, map[string]string{"identity": tok.Identity, "role": tok.Role})
	return nil
}

// WriteResult is the answer to a write.
type WriteResult struct {
	Op     store.Op   `json:"op"`
	Object api.Object `json:"object"`
}

func expectParam(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("expect")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, badRequest("expect=%q is not a revision", v)
	}
	return n, nil
}

// apply creates an object or replaces its operator intent (labels, spec).
func (s *Server) apply(w http.ResponseWriter, r *http.Request, tok Token) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	obj, err := api.DecodeObject(body)
	if err != nil {
		return err
	}
	expect, err := expectParam(r)
	if err != nil {
		return err
	}
	res, err := s.applyObject(r.Context(), tok, obj, expect)
	if err != nil {
		return err
	}
	writeResult(w, res.Op, stripFor(s.owners(), tok, res.Object))
	return nil
}

// applyObject writes obj's intent as tok, expecting revision expect (0:
// any).
func (s *Server) applyObject(ctx context.Context, tok Token, obj api.Object, expect int64) (store.Result, error) {
	ref := obj.Ref()
	if simulator(tok) != "" && ref.Kind == "Node" {
		var err error
		if tok, err = asNode(tok, ref.Name); err != nil { // registers its nodes
			return store.Result{}, err
		}
	}
	if err := authorizeApply(tok, ref); err != nil {
		return store.Result{}, err
	}
	if obj.Kind == "Controller" {
		if err := s.orch.Verify(ctx, obj); err != nil {
			return store.Result{}, err
		}
	}
	owners := s.owners()
	// Copy on write: next shares obj's labels and spec and cur's status
	// and changes neither, so the store keeps what it wrote decoded
	// (store/shared.go) and the pod's next write, and the workflows'
	// watch, need not decode it. The caller only reads obj and the result.
	res, err := s.store.MutateShared(ctx, ref, store.Write{Changer: tok.Identity, Cause: "apply", Expect: expect},
		func(cur *api.Object) (*api.Object, error) {
			next := obj
			if cur != nil {
				next = *cur
				next.Labels, next.Spec = obj.Labels, obj.Spec
			}
			if err := checkFields(owners, tok, cur, &next); err != nil {
				return nil, err
			}
			return &next, nil
		})
	if err == nil && obj.Kind == "Controller" {
		s.reloadControllers(ctx)
	}
	return res, err
}

// writeResult answers a write with a WriteResult, the object encoded
// without reflection (api.AppendObject: encoding/json's bytes).
func writeResult(w http.ResponseWriter, op store.Op, o api.Object) {
	b, err := appendWriteResult(make([]byte, 0, 1024), op, o)
	if err != nil {
		writeJSON(w, 200, WriteResult{Op: op, Object: o}) // encoding/json says what is wrong
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	w.Write(b)
}

// appendWriteResult appends a WriteResult as encoding/json encodes it
// with HTML escaping off.
func appendWriteResult(b []byte, op store.Op, o api.Object) ([]byte, error) {
	b = append(b, `{"op":`...)
	b = api.AppendString(b, string(op))
	b = append(b, `,"object":`...)
	b, err := api.AppendObject(b, &o)
	return append(b, '}'), err
}

// objectPath is a parsed /v1/objects/... path.
type objectPath struct {
	kind api.KindInfo
	ns   string // namespaced kinds: "" lists all namespaces
	name string
	sub  []string
}

// parseObjectPath parses KIND[/NS][/NAME[/SUB...]]; the kind decides
// whether a namespace segment is present.
func parseObjectPath(p string) (objectPath, error) {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	k, err := api.LookupKind(segs[0])
	if err != nil {
		return objectPath{}, err
	}
	op := objectPath{kind: k}
	rest := segs[1:]
	if k.Namespaced && len(rest) > 0 {
		op.ns, rest = rest[0], rest[1:]
		if err := api.ValidateName(op.ns); err != nil {
			return objectPath{}, badRequest("namespace %v", err)
		}
	}
	if len(rest) > 0 {
		op.name, op.sub = rest[0], rest[1:]
		if err := api.ValidateName(op.name); err != nil {
			return objectPath{}, badRequest("name %v", err)
		}
	}
	return op, nil
}

func (p objectPath) ref() api.Ref { return api.Ref{Kind: p.kind.Name, Namespace: p.ns, Name: p.name} }

func (s *Server) objects(w http.ResponseWriter, r *http.Request, tok Token) error {
	p, err := parseObjectPath(strings.TrimPrefix(r.URL.Path, "/v1/objects/"))
	if err != nil {
		return err
	}
	if err := scopeMayRead(tok, p.kind, p.ns); err != nil {
		return err
	}
	if p.name == "" {
		if r.Method != http.MethodGet {
			return errMethod
		}
		return s.list(w, r, tok, p)
	}
	sub := strings.Join(p.sub, "/")
	switch {
	case sub == "" && r.Method == http.MethodGet:
		o, err := s.store.Get(r.Context(), p.ref())
		if err != nil {
			return err
		}
		if err := nodeMayRead(tok, &o); err != nil {
			return err
		}
		s.withLease(&o)
		writeJSON(w, 200, stripFor(s.owners(), tok, o))
	case sub == "" && r.Method == http.MethodDelete:
		return s.delete(w, r, tok, p.ref())
	case sub == "runs" && r.Method == http.MethodGet:
		if passed, err := s.toLeader(w, r, true); passed { // it has the runs in progress
			return err
		}
		runs, err := s.orch.Runs(r.Context(), p.ref())
		if err != nil {
			return err
		}
		if runs == nil {
			runs = []workflow.RunRecord{}
		}
		writeJSON(w, 200, runs)
	case sub == "status" && r.Method == http.MethodPut:
		return s.putStatus(w, r, tok, p.ref())
	case sub == "status" && r.Method == http.MethodPatch:
		return s.patchStatus(w, r, tok, p.ref())
	case (sub == "logs" && r.Method == http.MethodGet || sub == "exec" && r.Method == http.MethodPost) && p.kind.Name == "Pod":
		return s.toNode(w, r, tok, p.ref(), sub)
	case (sub == "history" || len(p.sub) == 2 && p.sub[0] == "revisions") && (identityOf(tok).Kind == identity.Node || simulator(tok) != ""):
		return forbidden("%s may not read the history of %s: nodes read only the current pods placed on them", tok.Identity, p.ref())
	case sub == "history" && r.Method == http.MethodGet:
		f, err := identity.ParseFilter(r.URL.Query()["changer"])
		if err != nil {
			return badRequest("%v", err)
		}
		h, err := s.store.History(r.Context(), p.ref(), f)
		if err != nil {
			return err
		}
		if h == nil {
			h = []store.Entry{}
		}
		writeJSON(w, 200, h)
	case len(p.sub) == 2 && p.sub[0] == "revisions" && r.Method == http.MethodGet:
		rev, err := strconv.ParseInt(p.sub[1], 10, 64)
		if err != nil || rev < 1 {
			return badRequest("revision %q is not a positive number", p.sub[1])
		}
		o, err := s.store.At(r.Context(), p.ref(), rev)
		if err != nil {
			return err
		}
		writeJSON(w, 200, stripFor(s.owners(), tok, o))
	case sub == "rollback" && r.Method == http.MethodPost:
		if err := authorizeDelete(tok, p.ref(), "roll back"); err != nil {
			return err
		}
		var req struct {
			To int64 `json:"to"`
		}
		body, err := readBody(r)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &req); err != nil || req.To < 1 {
			return badRequest(`rollback needs {"to": REVISION}`)
		}
		old, err := s.store.At(r.Context(), p.ref(), req.To)
		if err != nil {
			return err
		}
		if old.Kind == "Controller" {
			if err := s.orch.Verify(r.Context(), old); err != nil {
				return err
			}
		}
		owners := s.owners()
		res, err := s.store.Mutate(r.Context(), p.ref(), store.Write{Changer: tok.Identity, Cause: fmt.Sprintf("rollback to %d", req.To)},
			func(cur *api.Object) (*api.Object, error) {
				next := old.DeepCopy()
				next.Status, next.Meta.Deleting = nil, nil
				if cur != nil {
					next.Status, next.Meta.Owner, next.Meta.Deleting = cur.Status, cur.Meta.Owner, cur.Meta.Deleting
				}
				if err := checkFields(owners, tok, cur, &next); err != nil {
					return nil, err
				}
				return &next, nil
			})
		if err != nil {
			return err
		}
		writeJSON(w, 200, WriteResult{Op: res.Op, Object: res.Object})
	default:
		return &statusError{kind: errNotFound, msg: r.Method + " " + r.URL.Path + ": no such endpoint"}
	}
	return nil
}

// delete removes an object, through its down workflow when its kind has
// one: the object is marked as being deleted, its steps run, then it goes.
func (s *Server) delete(w http.ResponseWriter, r *http.Request, tok Token, ref api.Ref) error {
	if err := authorizeDelete(tok, ref, "delete"); err != nil {
		return err
	}
	expect, err := expectParam(r)
	if err != nil {
		return err
	}
	wr := store.Write{Changer: tok.Identity, Expect: expect}
	if s.orch.HasDown(ref.Kind) {
		res, err := s.store.RequestDeletion(r.Context(), ref, wr)
		if err != nil {
			return err
		}
		writeJSON(w, 200, WriteResult{Op: "deleting", Object: res.Object})
		return nil
	}
	o, err := s.store.Delete(r.Context(), ref, wr)
	if err != nil {
		return err
	}
	if ref.Kind == "Controller" {
		s.reloadControllers(r.Context()) // as applyObject does
	}
	writeJSON(w, 200, WriteResult{Op: store.Deleted, Object: o})
	return nil
}

// reloadControllers takes in the stored registrations on this server now,
// not a moment later from its watch: after an apply or delete of a
// Controller returns, `skiff controllers` lists what is registered, and
// (on the leader) what is applied next runs with it.
func (s *Server) reloadControllers(ctx context.Context) {
	if err := s.orch.reload(ctx); err != nil {
		slog.Error("load controllers", "err", err)
	}
}

// ListResult is the answer to a list: the objects and the store revision to
// watch from.
type ListResult struct {
	Items    []api.Object `json:"items"`
	Revision int64        `json:"revision"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, tok Token, p objectPath) error {
	sel, err := labels.Parse(r.URL.Query().Get("selector"))
	if err != nil {
		return badRequest("selector: %v", err)
	}
	if err := nodeMayList(tok, p.kind.Name); err != nil {
		return err
	}
	objs, rev, err := s.store.List(r.Context(), p.kind.Name, p.ns)
	if err != nil {
		return err
	}
	items := objs[:0]
	owners := s.owners()
	for _, o := range objs {
		if sel.Matches(o.Labels) && nodeMayRead(tok, &o) == nil {
			s.withLease(&o)
			items = append(items, stripFor(owners, tok, o))
		}
	}
	if items == nil {
		items = []api.Object{}
	}
	writeJSON(w, 200, ListResult{Items: items, Revision: rev})
	return nil
}

// putStatus replaces an object's status. Status is what controllers and
// nodes observe; it is never operator intent.
func (s *Server) putStatus(w http.ResponseWriter, r *http.Request, tok Token, ref api.Ref) error {
	if err := authorizeStatus(tok, ref); err != nil {
		return err
	}
	tok, err := s.actAs(r.Context(), tok, ref)
	if err != nil {
		return err
	}
	var req struct {
		Status map[string]any `json:"status"`
	}
	if err := decodeBody(r, &req, `status write needs {"status": {...}}`); err != nil {
		return err
	}
	expect, err := expectParam(r)
	if err != nil {
		return err
	}
	owners := s.owners()
	res, err := s.store.Mutate(r.Context(), ref, store.Write{Changer: tok.Identity, Cause: "status", Expect: expect},
		func(cur *api.Object) (*api.Object, error) {
			if cur == nil {
				return nil, nil
			}
			if err := nodeMayWrite(tok, cur); err != nil {
				return nil, err
			}
			// The writer replaces what it can see of status; fields it
			// cannot see (other controllers') stay as they are.
			next := cur.DeepCopy()
			seen, want, have := stripFor(owners, tok, *cur).Status, req.Status, next.Status
			if seen == nil {
				seen = map[string]any{}
			}
			if want == nil {
				want = map[string]any{}
			}
			if have == nil {
				have = map[string]any{}
			}
			merged, err := fieldpath.Apply(fieldpath.DeepCopy(have), fieldpath.Diff(seen, want))
			if err != nil {
				return nil, badRequest("status: %v", err)
			}
			next.Status, _ = merged.(map[string]any)
			if len(next.Status) == 0 {
				next.Status = nil
			}
			if err := checkFields(owners, tok, cur, &next); err != nil {
				return nil, err
			}
			return &next, nil
		})
	if err != nil {
		return err
	}
	writeJSON(w, 200, WriteResult{Op: res.Op, Object: stripFor(owners, tok, res.Object)})
	return nil
}

// toNode passes a logs or exec request to the agent of the pod's node.
func (s *Server) toNode(w http.ResponseWriter, r *http.Request, tok Token, ref api.Ref, what string) error {
	id := identityOf(tok)
	if id.Kind != identity.Operator {
		return forbidden("%s may not %s pod %s: only operators do", tok.Identity, what, ref)
	}
	if what == "exec" && tok.Role == RoleView {
		return forbidden("%s has the view role and may not exec into %s", tok.Identity, ref)
	}
	pod, err := s.store.Get(r.Context(), ref)
	if err != nil {
		return err
	}
	node, _ := pod.Status["node"].(string)
	if node == "" {
		return &statusError{kind: errConflict, msg: fmt.Sprintf("%s is not on a node yet: see skiff why %s", ref, "pod/"+ref.Name)}
	}
	h, err := s.nodeAPI(r.Context(), node)
	if err != nil {
		return err
	}
	if what == "exec" {
		http.NewResponseController(w).EnableFullDuplex()
	}
	q := r.URL.Query()
	q.Set("namespace", ref.Namespace)
	q.Set("pod", ref.Name)
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + what
	r2.URL.RawQuery = q.Encode()
	r2.Body = r.Body
	h.ServeHTTP(w, r2)
	return nil
}

// nodeAPI returns a handler reaching a node's agent API: in process, or
// over HTTPS at the address the node reports (status.agentURL), with the
// server's certificate as client certificate and the node's checked
// against the cluster CA.
func (s *Server) nodeAPI(ctx context.Context, node string) (http.Handler, error) {
	s.nodesMu.RLock()
	h := s.nodes[node]
	s.nodesMu.RUnlock()
	if h != nil {
		return h, nil
	}
	n, err := s.store.Get(ctx, api.Ref{Kind: "Node", Name: node})
	if err != nil {
		return nil, err
	}
	raw, _ := n.Status["agentURL"].(string)
	u, err := url.Parse(raw)
	if raw == "" || err != nil || u.Scheme != "https" || s.nodeTLS == nil {
		return nil, &statusError{kind: errConflict, msg: fmt.Sprintf("node %s reports no agent address (status.agentURL); is its agent running with --listen?", node)}
	}
	tlsCfg := s.nodeTLS.Clone()
	tlsCfg.ServerName = "" // checked below: the node's certificate must be node:NAME
	tlsCfg.InsecureSkipVerify = true
	roots := s.nodeTLS.RootCAs
	tlsCfg.VerifyPeerCertificate = func(certs [][]byte, _ [][]*x509.Certificate) error {
		leaf, err := x509.ParseCertificate(certs[0])
		if err != nil {
			return err
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
			return fmt.Errorf("node %s's certificate: %w", node, err)
		}
		if leaf.Subject.CommonName != NodeCommonName(node) {
			return fmt.Errorf("the agent at %s is %s, not node %s", raw, leaf.Subject.CommonName, node)
		}
		return nil
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Del("Authorization")
		},
		Transport:     &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: false},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeJSON(w, http.StatusBadGateway, ErrorBody{Error: fmt.Sprintf("node %s's agent at %s: %v", node, raw, err), Code: "node_unreachable"})
		},
	}
	return proxy, nil
}

// nodeCertificate signs a node's serving certificate for its agent API.
func (s *Server) nodeCertificate(w http.ResponseWriter, r *http.Request, tok Token) error {
	node := r.PathValue("node")
	if tok.Identity != "node:"+node {
		return forbidden("%s may not get a certificate for node %s", tok.Identity, node)
	}
	if s.ca == nil {
		return &statusError{kind: errConflict, msg: "this server signs no node certificates"}
	}
	var req struct {
		CSR string `json:"csr"`
	}
	if err := decodeBody(r, &req, `certificate needs {"csr": PEM}`); err != nil {
		return err
	}
	cert, err := s.ca.SignNode([]byte(req.CSR), node)
	if err != nil {
		return badRequest("%v", err)
	}
	writeJSON(w, 200, map[string]string{"certificate": string(cert)})
	return nil
}

// forgetNode revokes every credential of a node and deletes its Node: the
// operator says it is gone.
func (s *Server) forgetNode(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "forget nodes"); err != nil {
		return err
	}
	node := r.PathValue("node")
	if err := api.ValidateName(node); err != nil {
		return badRequest("node name %v", err)
	}
	toks, err := s.tokens.List(r.Context())
	if err != nil {
		return err
	}
	revoked := 0
	for _, t := range toks {
		if t.Identity == "node:"+node {
			if err := s.tokens.Revoke(r.Context(), t.ID); err != nil {
				return err
			}
			revoked++
		}
	}
	_, err = s.store.Delete(r.Context(), api.Ref{Kind: "Node", Name: node}, store.Write{Changer: tok.Identity, Cause: "node forgotten"})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := s.orch.leases.forget(r.Context(), node); err != nil {
		return err
	}
	writeJSON(w, 200, map[string]any{"node": node, "tokensRevoked": revoked})
	return nil
}

// importImage passes an image archive to a node's agent.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeImageImport(tok); err != nil {
		return err
	}
	node := r.PathValue("node")
	h, err := s.nodeAPI(r.Context(), node)
	if err != nil {
		return err
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/images/import"
	h.ServeHTTP(w, r2)
	return nil
}

// patchStatus sets individual status fields: {"writes": {"status.phase":
// "Running"}}, as a step's completion does. Ownership is checked per field.
func (s *Server) patchStatus(w http.ResponseWriter, r *http.Request, tok Token, ref api.Ref) error {
	if err := authorizeStatus(tok, ref); err != nil {
		return err
	}
	tok, err := s.actAs(r.Context(), tok, ref)
	if err != nil {
		return err
	}
	var req struct {
		Writes map[string]any `json:"writes"`
	}
	const usage = `status patch needs {"writes": {"status.FIELD": VALUE, ...}}`
	if err := decodeBody(r, &req, usage); err != nil {
		return err
	}
	if len(req.Writes) == 0 {
		return badRequest(usage)
	}
	for p := range req.Writes {
		if !strings.HasPrefix(p, "status.") {
			return badRequest("status patch writes %s: only status fields", p)
		}
	}
	if identityOf(tok).Kind == identity.Node {
		cur, err := s.store.Get(r.Context(), ref)
		if err != nil {
			return err
		}
		if err := nodeMayWrite(tok, &cur); err != nil {
			return err
		}
	}
	if _, err := s.orch.Write(r.Context(), toRef(ref), tok.Identity, "", req.Writes); err != nil {
		var no *ownership.NotOwnerError
		if errors.As(err, &no) {
			return &statusError{kind: errForbidden, msg: err.Error()}
		}
		return err
	}
	o, err := s.store.Get(r.Context(), ref)
	if err != nil {
		return err
	}
	writeJSON(w, 200, WriteResult{Op: store.Configured, Object: stripFor(s.owners(), tok, o)})
	return nil
}

// watch streams changes as newline-delimited JSON events.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, tok Token) error {
	k, err := api.LookupKind(r.PathValue("kind"))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	after, err := strconv.ParseInt(q.Get("after"), 10, 64)
	if q.Get("after") != "" && (err != nil || after < 0) {
		return badRequest("after=%q is not a store revision", q.Get("after"))
	}
	ns := q.Get("namespace")
	if ns != "" {
		if err := api.ValidateName(ns); err != nil {
			return badRequest("namespace %v", err)
		}
	}
	if err := nodeMayList(tok, k.Name); err != nil {
		return err
	}
	if err := scopeMayRead(tok, k, ns); err != nil {
		return err
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(200)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if id := identityOf(tok).Kind; id != identity.Node && id != identity.Simulator && id != identity.Controller {
		// Operators see every object whole: the objects go out as stored.
		return watchRaw(w, fl, s.store.WatchRaw(ctx, k.Name, ns, after))
	}
	events := s.store.Watch(ctx, k.Name, ns, after)
	for ev := range events {
		if ev.Err != nil {
			enc.Encode(map[string]string{"error": ev.Err.Error()})
			return nil
		}
		if nodeMayRead(tok, &ev.Object) != nil {
			continue
		}
		ev.Object = stripFor(s.owners(), tok, ev.Object)
		if err := enc.Encode(ev); err != nil {
			return nil
		}
		if fl != nil && len(events) == 0 {
			fl.Flush() // once the changes at hand are written
		}
	}
	return nil
}

// watchRaw streams events whose objects are passed on as stored, as
// watch's encoder would write them: {"type", "object", "revision"}.
func watchRaw(w http.ResponseWriter, fl http.Flusher, events <-chan store.Event) error {
	var b []byte
	for ev := range events {
		if ev.Err != nil {
			json.NewEncoder(w).Encode(map[string]string{"error": ev.Err.Error()})
			return nil
		}
		b = append(b[:0], `{"type":`...)
		b = strconv.AppendQuote(b, string(ev.Type))
		b = append(b, `,"object":`...)
		b = append(b, ev.Raw...)
		b = append(b, `,"revision":`...)
		b = strconv.AppendInt(b, ev.Revision, 10)
		b = append(b, "}\n"...)
		if _, err := w.Write(b); err != nil {
			return nil
		}
		if fl != nil && len(events) == 0 {
			fl.Flush() // once the changes at hand are written
		}
	}
	return nil
}

// TokenRequest asks for a new token.
type TokenRequest struct {
	Identity   string   `json:"identity"`
	Role       string   `json:"role,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"` // confine an edit role to these
}

// TokenResponse carries a new token's secret, shown once.
type TokenResponse struct {
	Token  string `json:"token"`
	Record Token  `json:"record"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "create tokens"); err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req TokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return badRequest("token request: %v", err)
	}
	id, err := identity.Parse(req.Identity)
	if err != nil {
		return badRequest("%v", err)
	}
	secret, rec, err := s.tokens.Create(r.Context(), id, req.Role, tok.Identity, req.Namespaces...)
	if err != nil {
		return badRequest("%v", err)
	}
	rec.Hash = ""
	writeJSON(w, 200, TokenResponse{Token: secret, Record: rec})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "list tokens"); err != nil {
		return err
	}
	toks, err := s.tokens.List(r.Context())
	if err != nil {
		return err
	}
	for i := range toks {
		toks[i].Hash = ""
	}
	writeJSON(w, 200, toks)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, tok Token) error {
	if err := authorizeAdmin(tok, "revoke tokens"); err != nil {
		return err
	}
	if err := s.tokens.Revoke(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, 200, map[string]string{"revoked": r.PathValue("id")})
	return nil
}

// statusRecorder remembers the status code for metrics.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_api_requests_total", Help: "API requests by endpoint, method and status code.",
		}, []string{"endpoint", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "skiff_api_request_duration_seconds", Help: "API request latency by endpoint and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"endpoint", "method"}),
	}
	m.reg.MustRegister(m.requests, m.duration, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(endpoint, method string, code int, d time.Duration) {
	m.requests.WithLabelValues(endpoint, method, strconv.Itoa(code)).Inc()
	if endpoint != "watch" {
		m.duration.WithLabelValues(endpoint, method).Observe(d.Seconds())
	}
}
