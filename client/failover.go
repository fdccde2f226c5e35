package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Failover between servers.
//
// A config lists every server of the cluster (Config.Servers). A request
// goes first to the server that answered the last request (at first, the
// first listed), and moves on to the next, in the order listed and
// wrapping around, when that server
//
//   - cannot be reached: the connection is refused, or not made within
//     DialTimeout (a dead machine, a cut link), or the TLS handshake does
//     not finish within HandshakeTimeout;
//   - breaks the connection: a connection that stays silent is found dead
//     by HTTP/2 pings within PingInterval+PingTimeout, so a request or a
//     watch on it fails instead of hanging;
//   - answers 503 Service Unavailable (its etcd member has no leader: it is
//     cut off from the majority, or the cluster is electing) or 421
//     Misdirected Request (it cannot serve this request, another can).
//     Such an answer means the server did not carry the request out.
//   - answers 502 Bad Gateway (it passed the request on to the leader
//     and got no answer) or 504 Gateway Timeout (its etcd took a write
//     and gave up waiting for a quorum: the write may still be committed
//     later). That is treated like a connection broken after sending:
//     the outcome is unknown.
//
// Whether a request is tried again elsewhere also depends on whether it
// may already have been carried out. A request whose headers were sent
// before the connection failed may have reached the server, and its
// outcome is unknown. Reads (GET), heartbeats and writes with an expected
// revision (expect=N) are then tried again on the next server, because
// doing them twice does no harm: a read changes nothing, a heartbeat
// renews the same lease, and a write with an expected revision applies
// at most once (the second attempt is refused with a conflict if the
// first took effect; Apply resolves that case, see there). Any other
// write (an apply or delete without expect, a status patch, a work
// item's completion) is not sent again: the caller gets an error that
// matches ErrOutcomeUnknown and decides, after reading the object,
// whether to write again. Resending it blindly could apply it twice, or
// after someone else's newer write, undoing theirs.
//
// A watch (Watch) whose stream breaks, or that a server ends because its
// member lost the leader, resumes from the last revision it delivered,
// on the next server: store revisions are the same on every server of a
// cluster, so no event is lost or repeated.
//
// The timeouts below bound how long a dead server can hold a request up;
// they are not request deadlines (DefaultTimeout and the caller's context
// are).
const (
	// DialTimeout bounds connecting to one server.
	DialTimeout = 2 * time.Second
	// HandshakeTimeout bounds the TLS handshake with one server.
	HandshakeTimeout = 3 * time.Second
	// PingInterval is how long a connection may be silent before the
	// client pings the server; PingTimeout how long it then waits for the
	// answer before it closes the connection, failing what is under way
	// on it.
	PingInterval = 4 * time.Second
	PingTimeout  = 3 * time.Second
)

// ErrOutcomeUnknown is matched (errors.Is) by the error of a write whose
// request may have reached a server that then did not answer (it died,
// or the connection broke, or the caller's deadline passed while it
// worked). The write may or may not have been applied: read the object
// to find out. See the failover notes above for which writes the client
// tries again itself.
var ErrOutcomeUnknown = errors.New("the server did not answer: the write may or may not have been applied")

// outcomeUnknown wraps the error of a request that may have been carried
// out. It matches ErrOutcomeUnknown and what it wraps.
type outcomeUnknown struct{ err error }

func (e *outcomeUnknown) Error() string {
	return e.err.Error() + " (" + ErrOutcomeUnknown.Error() + ")"
}
func (e *outcomeUnknown) Unwrap() []error { return []error{ErrOutcomeUnknown, e.err} }

// replayable reports whether a request may be sent again after it may
// have reached a server: reads, heartbeats and writes with an expected
// revision. See the failover notes above.
func replayable(method, path string) bool {
	if method == http.MethodGet || method == http.MethodHead {
		return true
	}
	p, query, _ := strings.Cut(path, "?")
	if strings.HasPrefix(p, "/v1/nodes/") && strings.HasSuffix(p, "/heartbeat") {
		return true
	}
	if query == "" {
		return false // no expect (and no map to parse it into)
	}
	q, _ := url.ParseQuery(query)
	return q.Get("expect") != ""
}

// unavailable reports whether an answer's status says that the server did
// not carry the request out and another server may: 503 or 421.
func unavailable(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusMisdirectedRequest
}

// servers keeps the order in which a client tries its servers: from the
// one that answered last (guarded by atomics, no lock).
type servers struct {
	urls []string
	last atomic.Int32 // index in urls of the server that answered last
}

// order returns the indexes of the servers in the order to try them.
func (s *servers) order() []int {
	n := len(s.urls)
	first := int(s.last.Load())
	out := make([]int, n)
	for i := range n {
		out[i] = (first + i) % n
	}
	return out
}

// answered makes server i the first to try next time.
func (s *servers) answered(i int) { s.last.Store(int32(i)) }

// failed makes the server after i the first to try next time, unless
// another request has moved the start on already.
func (s *servers) failed(i int) {
	s.last.CompareAndSwap(int32(i), int32((i+1)%len(s.urls)))
}

// attemptError is one server's failure, for the error of a request that
// no server carried out.
func attemptError(srv string, err error) error {
	return fmt.Errorf("%s: %w", srv, err)
}

// noServer is the error of a request no server carried out.
func noServer(urls []string, errs []error) error {
	if len(errs) == 1 {
		return fmt.Errorf("no skiff server answered: %w", errs[0])
	}
	return fmt.Errorf("no skiff server answered (%s): %w", strings.Join(urls, ", "), errors.Join(errs...))
}

// sleepCtx waits d or until ctx ends, and says whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
