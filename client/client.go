// Package client is the Go client of skiff's API, used by the CLI, agents
// and external controllers. It depends only on the api vocabulary, never on
// the server.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"skiff.dev/skiff/api"
)

// Client talks to one cluster. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client
	srv  *servers
	// The headers of a request without a body and with one (JSON),
	// made once and shared by every request: the transport only reads
	// them.
	headers, jsonHeaders http.Header
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cfg.CA)) {
		return nil, errors.New("config: ca holds no PEM certificate")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("config: no servers")
	}
	// Short connect and handshake timeouts, and pings on silent HTTP/2
	// connections, let a request move on from a dead server quickly (see
	// failover.go).
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext:         (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: HandshakeTimeout,
		ForceAttemptHTTP2:   true,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: PingInterval, PingTimeout: PingTimeout},
	}
	auth := []string{"Bearer " + cfg.Token}
	return &Client{cfg: cfg, http: &http.Client{Transport: tr}, srv: &servers{urls: cfg.Servers},
		headers:     http.Header{"Authorization": auth},
		jsonHeaders: http.Header{"Authorization": auth, "Content-Type": {"application/json"}},
	}, nil
}

// Error is a failed API request.
type Error struct {
	Status  int
	Code    string // invalid, unauthenticated, forbidden, not_found, exists, conflict, ...
	Message string
}

func (e *Error) Error() string { return e.Message }

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// do sends a request to the first server that serves it (see failover.go)
// and decodes its answer into out.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := decodeBody(resp.Body, out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %v", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = encodeBody(body); err != nil {
			return nil, err
		}
	}
	// A call without a deadline of its own gets one, except streams and
	// long polls, which bound themselves.
	if _, ok := ctx.Deadline(); !ok && !strings.HasPrefix(path, "/v1/watch/") && !strings.HasPrefix(path, "/v1/work?") &&
		!strings.Contains(path, "/logs?") {
		ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
		return c.sendWith(ctx, cancel, method, path, payload, body != nil)
	}
	return c.sendWith(ctx, func() {}, method, path, payload, body != nil)
}

// DefaultTimeout bounds a call whose context has no deadline (streams
// and long polls excepted).
const DefaultTimeout = 2 * time.Minute

// cancelOnClose releases a call's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error { err := c.ReadCloser.Close(); c.cancel(); return err }

// sendWith sends a request to the servers in turn (see the failover notes
// in failover.go) and returns the first answer that is not "unavailable".
// An answer of 400 or more is returned as an *Error.
func (c *Client) sendWith(ctx context.Context, cancel context.CancelFunc, method, path string, payload []byte, hasBody bool) (*http.Response, error) {
	resp, _, err := c.attempt(ctx, method, path, payload, hasBody)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// UnavailableWait bounds how long a request keeps going round the servers
// while at least one of them answers 503 (an election under way) and none
// serves.
const UnavailableWait = 15 * time.Second

// attempt does the work of sendWith and also says which server answered
// (its index in the config).
func (c *Client) attempt(ctx context.Context, method, path string, payload []byte, hasBody bool) (*http.Response, int, error) {
	replay := replayable(method, path)
	uncertain := false // an attempt may have been carried out
	var errs []error
	var waitUntil time.Time
	for round := 0; ; round++ {
		errs = errs[:0]
		busy := false // a server answered 503: the cluster is there, electing
		for _, i := range c.srv.order() {
			srv := c.srv.urls[i]
			// The trace goes in the request's context from the start:
			// req.WithContext would copy the request.
			var wrote atomic.Bool
			tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				WroteHeaders: func() { wrote.Store(true) },
			})
			req, err := http.NewRequestWithContext(tctx, method, strings.TrimRight(srv, "/")+path, bytes.NewReader(payload))
			if err != nil {
				return nil, i, err
			}
			req.Header = c.headers
			if hasBody {
				req.Header = c.jsonHeaders
			}
			resp, err := c.http.Do(req)
			if err != nil {
				sent := wrote.Load()
				if ctx.Err() != nil {
					if (sent || uncertain) && !replay {
						return nil, i, &outcomeUnknown{fmt.Errorf("%s %s: %w", method, path, ctx.Err())}
					}
					return nil, i, ctx.Err()
				}
				c.srv.failed(i)
				errs = append(errs, attemptError(srv, err))
				if sent && !replay {
					return nil, i, &outcomeUnknown{fmt.Errorf("%s %s: %s: %w", method, path, srv, err)}
				}
				uncertain = uncertain || sent
				continue // try the next server
			}
			if resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout {
				// A server passed the request on (to the leader) and got
				// no answer, or its etcd gave up waiting on a write it
				// had taken: like a dropped connection after sending.
				err := readError(resp, method, path)
				if !replay {
					return nil, i, &outcomeUnknown{err}
				}
				c.srv.failed(i)
				errs = append(errs, attemptError(srv, err))
				uncertain = true
				continue
			}
			if unavailable(resp.StatusCode) {
				c.srv.failed(i)
				busy = busy || resp.StatusCode == http.StatusServiceUnavailable
				errs = append(errs, attemptError(srv, readError(resp, method, path)))
				continue
			}
			c.srv.answered(i)
			if resp.StatusCode >= 400 {
				err := error(readError(resp, method, path))
				if uncertain {
					// An earlier attempt may have been carried out: a
					// conflict or a missing object may be its doing.
					err = &outcomeUnknown{err}
				}
				return nil, i, err
			}
			return resp, i, nil
		}
		// No server served. While one says it is electing, wait for it.
		if !busy {
			break
		}
		if waitUntil.IsZero() {
			waitUntil = time.Now().Add(UnavailableWait)
		}
		if time.Now().After(waitUntil) || !sleepCtx(ctx, min(100*time.Millisecond<<min(round, 4), time.Second)) {
			break
		}
	}
	err := noServer(c.srv.urls, errs)
	if uncertain && !replay {
		err = &outcomeUnknown{err}
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return nil, -1, err
}

// readError reads and closes the body of a failed answer to method path
// and returns it as an *Error.
func readError(resp *http.Response, method, path string) *Error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return apiError(resp, b, fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b))))
}

// apiError is the Error of a failed request whose body is b: the API's
// JSON error, or plain when the body is not one (a node's API answers in
// plain text).
func apiError(resp *http.Response, b []byte, plain string) *Error {
	var eb struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		eb.Error = plain
	}
	return &Error{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
}

// objectPath builds /v1/objects/KIND[/NS][/NAME].
func objectPath(kind, ns, name string) (string, error) {
	k, err := api.LookupKind(kind)
	if err != nil {
		return "", err
	}
	p := "/v1/objects/" + k.Plural
	if k.Namespaced && ns != "" {
		p += "/" + url.PathEscape(ns)
	}
	if name != "" {
		if k.Namespaced && ns == "" {
			p += "/" + api.DefaultNamespace
		}
		p += "/" + url.PathEscape(name)
	}
	return p, nil
}

func refPath(ref api.Ref) (string, error) { return objectPath(ref.Kind, ref.Namespace, ref.Name) }

// WriteResult says what a write did: created, configured, unchanged, deleted.
type WriteResult struct {
	Op     string     `json:"op"`
	Object api.Object `json:"object"`
}

// Apply creates an object or replaces its labels and spec. expect, when
// non-zero, is the revision the change is based on: the write then
// applies only if the object is still at that revision, and the object's
// next revision is expect+1.
//
// With expect, a write whose first attempt may have been carried out
// (its server died before answering) is sent again to another server
// (see failover.go). If that attempt is refused with a conflict, Apply
// reads revision expect+1: when it holds the labels and spec sent, the
// first attempt took effect and Apply returns it as its result.
// Otherwise the error matches ErrOutcomeUnknown and the conflict code.
// Without expect, such a write is not sent again: its error matches
// ErrOutcomeUnknown.
func (c *Client) Apply(ctx context.Context, obj api.Object, expect int64) (WriteResult, error) {
	p := "/v1/apply"
	if expect != 0 {
		p += "?expect=" + strconv.FormatInt(expect, 10)
	}
	var res WriteResult
	err := c.do(ctx, "POST", p, obj, &res)
	if expect != 0 && errors.Is(err, ErrOutcomeUnknown) && IsCode(err, "conflict") {
		if o, aerr := c.At(ctx, obj.Ref(), expect+1); aerr == nil && sameIntent(o, obj) {
			return WriteResult{Op: "configured", Object: o}, nil
		}
	}
	return res, err
}

// MaxApplyList is how many objects ApplyList sends in one request (the
// server's bound); it also keeps each request within applyListBytes.
const MaxApplyList = 1000

// applyListBytes bounds the body of one ApplyList request, half the
// server's bound on a body: an object larger goes alone.
const applyListBytes = 1 << 20

// ApplyList applies objs in order, each as Apply would without expect,
// in one request per MaxApplyList objects (or per MiB), and stops at the
// first that fails: it returns the results of the objects applied before
// it and its error (an *Error naming it). A manifest of many objects goes
// much faster this way than object by object.
func (c *Client) ApplyList(ctx context.Context, objs []api.Object) ([]WriteResult, error) {
	var done []WriteResult
	body := []byte(`{"items":[`)
	n := 0
	send := func() error {
		var ans applyListAnswer
		if err := c.do(ctx, "POST", "/v1/apply/list", rawJSON(append(body, "]}"...)), &ans); err != nil {
			return err
		}
		done = append(done, ans.Items...)
		if ans.Error != nil {
			return &Error{Status: ans.Error.Status, Code: ans.Error.Code, Message: ans.Error.Error}
		}
		if len(ans.Items) != n {
			return fmt.Errorf("apply/list: %d objects sent, %d results and no error", n, len(ans.Items))
		}
		body, n = body[:len(`{"items":[`)], 0
		return nil
	}
	for _, o := range objs {
		b, err := encodeBody(o)
		if err != nil {
			return done, fmt.Errorf("%s: %w", o.Ref(), err)
		}
		if n > 0 && (n == MaxApplyList || len(body)+len(b) > applyListBytes) {
			if err := send(); err != nil {
				return done, err
			}
		}
		if n > 0 {
			body = append(body, ',')
		}
		body = append(body, b...)
		n++
	}
	if n > 0 {
		if err := send(); err != nil {
			return done, err
		}
	}
	return done, nil
}

// rawJSON is a request body encoded already.
type rawJSON []byte

type applyListAnswer struct {
	Items []WriteResult   `json:"items"`
	Error *applyListError `json:"error"`
}

type applyListError struct {
	Error  string `json:"error"`
	Code   string `json:"code"`
	Status int    `json:"status"`
}

// sameIntent reports whether two objects have the same labels and spec,
// as JSON (numbers decoded from JSON and written in Go compare alike).
// An absent map and an empty one are alike.
func sameIntent(a, b api.Object) bool {
	intent := func(o api.Object) ([]byte, error) {
		v := []any{nil, nil}
		if len(o.Labels) > 0 {
			v[0] = o.Labels
		}
		if len(o.Spec) > 0 {
			v[1] = o.Spec
		}
		return json.Marshal(v)
	}
	ja, err1 := intent(a)
	jb, err2 := intent(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// Get returns one object.
func (c *Client) Get(ctx context.Context, ref api.Ref) (api.Object, error) {
	p, err := refPath(ref)
	if err != nil {
		return api.Object{}, err
	}
	var o api.Object
	return o, c.do(ctx, "GET", p, nil, &o)
}

// ListResult is a list and the store revision to watch from.
type ListResult struct {
	Items    []api.Object `json:"items"`
	Revision int64        `json:"revision"`
}

// List returns objects of a kind in namespace ns ("" for all namespaces)
// matching a label selector ("" for all).
func (c *Client) List(ctx context.Context, kind, ns, selector string) (ListResult, error) {
	p, err := objectPath(kind, ns, "")
	if err != nil {
		return ListResult{}, err
	}
	if selector != "" {
		p += "?selector=" + url.QueryEscape(selector)
	}
	var l ListResult
	return l, c.do(ctx, "GET", p, nil, &l)
}

// Delete removes an object.
func (c *Client) Delete(ctx context.Context, ref api.Ref, expect int64) (WriteResult, error) {
	p, err := refPath(ref)
	if err != nil {
		return WriteResult{}, err
	}
	if expect != 0 {
		p += "?expect=" + strconv.FormatInt(expect, 10)
	}
	var res WriteResult
	return res, c.do(ctx, "DELETE", p, nil, &res)
}

// PutStatus replaces an object's status (controllers and nodes only).
func (c *Client) PutStatus(ctx context.Context, ref api.Ref, status map[string]any, expect int64) (WriteResult, error) {
	p, err := refPath(ref)
	if err != nil {
		return WriteResult{}, err
	}
	p += "/status"
	if expect != 0 {
		p += "?expect=" + strconv.FormatInt(expect, 10)
	}
	var res WriteResult
	return res, c.do(ctx, "PUT", p, map[string]any{"status": status}, &res)
}

// PatchStatus sets individual status fields ({"status.phase": "Running"}),
// each of which the caller must own.
func (c *Client) PatchStatus(ctx context.Context, ref api.Ref, writes map[string]any) error {
	p, err := refPath(ref)
	if err != nil {
		return err
	}
	return c.do(ctx, "PATCH", p+"/status", map[string]any{"writes": writes}, nil)
}

// Entry is one line of history.
type Entry struct {
	Rev     int64     `json:"rev"`
	Time    time.Time `json:"time"`
	Changer string    `json:"changer"`
	Cause   string    `json:"cause"`
}

// History lists an object's revisions whose changer matches the patterns
// ("operator:*", "!controller:scheduler").
func (c *Client) History(ctx context.Context, ref api.Ref, changers []string) ([]Entry, error) {
	p, err := refPath(ref)
	if err != nil {
		return nil, err
	}
	q := url.Values{"changer": changers}
	p += "/history"
	if len(changers) > 0 {
		p += "?" + q.Encode()
	}
	var h []Entry
	return h, c.do(ctx, "GET", p, nil, &h)
}

// At returns the object as it was at revision rev.
func (c *Client) At(ctx context.Context, ref api.Ref, rev int64) (api.Object, error) {
	p, err := refPath(ref)
	if err != nil {
		return api.Object{}, err
	}
	var o api.Object
	return o, c.do(ctx, "GET", p+"/revisions/"+strconv.FormatInt(rev, 10), nil, &o)
}

// Rollback writes the labels and spec of revision `to` as a new revision.
func (c *Client) Rollback(ctx context.Context, ref api.Ref, to int64) (WriteResult, error) {
	p, err := refPath(ref)
	if err != nil {
		return WriteResult{}, err
	}
	var res WriteResult
	return res, c.do(ctx, "POST", p+"/rollback", map[string]int64{"to": to}, &res)
}

// Event is one change seen by Watch.
type Event struct {
	Type     string     `json:"type"` // created, configured, deleted
	Object   api.Object `json:"object"`
	Revision int64      `json:"revision"` // the store's; changes to several objects may share one
}

// Watch calls fn for each change to objects of kind (in ns, or all if "")
// after store revision `after`, until ctx ends, fn returns an error, or
// the stream fails for good. A stream that breaks, or that its server
// ends (it lost its etcd leader, or is shutting down), resumes from the
// last revision delivered on the next server that serves (see
// failover.go), without losing or repeating an event; Watch returns when
// no server does, or when the server reports an error in the stream (such
// as a revision compacted away: list again and watch from the list's
// revision). Changes to several objects may share a revision: a caller
// that keeps the revision of the last event it handled, to watch again
// later, watches after the revision before it and skips what it handled.
func (c *Client) Watch(ctx context.Context, kind, ns string, after int64, fn func(Event) error) error {
	k, err := api.LookupKind(kind)
	if err != nil {
		return err
	}
	pos := watchPos{after: after}
	for broken := 0; ; broken++ {
		delivered, err := c.watchOnce(ctx, k.Plural, ns, &pos, fn)
		var sb *streamBroken
		if !errors.As(err, &sb) {
			return err
		}
		if delivered {
			broken = 0
		}
		// A server that ends streams at once, over and over, is not
		// hammered: back off up to a second between tries.
		if !sleepCtx(ctx, min(50*time.Millisecond<<min(broken, 5), time.Second)) {
			return ctx.Err()
		}
	}
}

// streamBroken is a watch stream that ended without an error from the
// server: Watch resumes it.
type streamBroken struct{ err error }

func (e *streamBroken) Error() string { return e.err.Error() }
func (e *streamBroken) Unwrap() error { return e.err }

// watchPos is where a watch stands. One store revision may carry the
// changes of several objects (writes that arrive together share an etcd
// transaction): a stream that broke after some of a revision's events
// resumes after the revision before it, and the events of the last
// revision already delivered are skipped.
type watchPos struct {
	after int64                // the watch's start, until an event comes
	rev   int64                // the revision of the last event delivered
	seen  map[api.Ref]struct{} // the objects of rev's events delivered
}

// from is the revision a stream starts after.
func (p *watchPos) from() int64 {
	if p.rev == 0 {
		return p.after
	}
	return p.rev - 1
}

// take reports whether ev is new, and notes it if so.
func (p *watchPos) take(ev *Event) bool {
	ref := ev.Object.Ref()
	switch {
	case ev.Revision < p.rev:
		return false
	case ev.Revision == p.rev:
		if _, ok := p.seen[ref]; ok {
			return false
		}
	default:
		p.rev = ev.Revision
		clear(p.seen)
	}
	if p.seen == nil {
		p.seen = map[api.Ref]struct{}{}
	}
	p.seen[ref] = struct{}{}
	return true
}

// watchOnce runs one watch stream from pos, moving pos on with each event
// fn took. It says whether it delivered any event, and returns a
// *streamBroken when the stream broke or ended.
func (c *Client) watchOnce(ctx context.Context, plural, ns string, pos *watchPos, fn func(Event) error) (delivered bool, err error) {
	q := url.Values{"after": {strconv.FormatInt(pos.from(), 10)}}
	if ns != "" {
		q.Set("namespace", ns)
	}
	resp, srv, err := c.attempt(ctx, "GET", "/v1/watch/"+plural+"?"+q.Encode(), nil, false)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var ev watchLine
	for sc.Scan() {
		if err := decodeWatchLine(sc.Bytes(), &ev); err != nil {
			return delivered, fmt.Errorf("watch: bad event: %v", err)
		}
		if ev.Error != "" {
			return delivered, fmt.Errorf("watch: %s", ev.Error)
		}
		if !pos.take(&ev.Event) {
			continue // delivered before the stream broke
		}
		if err := fn(ev.Event); err != nil {
			return delivered, err
		}
		delivered = true
	}
	if ctx.Err() != nil {
		return delivered, ctx.Err()
	}
	c.srv.failed(srv)
	if err := sc.Err(); err != nil {
		return delivered, &streamBroken{fmt.Errorf("watch: %s: %w", c.srv.urls[srv], err)}
	}
	return delivered, &streamBroken{fmt.Errorf("watch: %s: stream ended", c.srv.urls[srv])}
}

// Whoami returns the identity and role of the client's token.
func (c *Client) Whoami(ctx context.Context) (identity, role string, err error) {
	var r struct{ Identity, Role string }
	err = c.do(ctx, "GET", "/v1/whoami", nil, &r)
	return r.Identity, r.Role, err
}

// CreateToken issues a token for an identity ("operator:alice") with an
// optional role (operators only). Namespaces, if any, confine the edit role
// to them; without any it is cluster-wide. The secret is returned once.
func (c *Client) CreateToken(ctx context.Context, ident, role string, namespaces ...string) (string, error) {
	var r struct {
		Token string `json:"token"`
	}
	req := struct {
		Identity   string   `json:"identity"`
		Role       string   `json:"role"`
		Namespaces []string `json:"namespaces,omitempty"`
	}{ident, role, namespaces}
	err := c.do(ctx, "POST", "/v1/tokens", req, &r)
	return r.Token, err
}

// Token is a token as listed (never its secret).
type Token struct {
	ID         string    `json:"id"`
	Identity   string    `json:"identity"`
	Role       string    `json:"role,omitempty"`
	Namespaces []string  `json:"namespaces,omitempty"` // an edit role confined to these; none: cluster-wide
	Created    time.Time `json:"created"`
	CreatedBy  string    `json:"createdBy"`
}

// ListTokens lists tokens (admin only).
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var t []Token
	return t, c.do(ctx, "GET", "/v1/tokens", nil, &t)
}

// RevokeToken deletes a token by ID (admin only).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/tokens/"+url.PathEscape(id), nil, nil)
}
