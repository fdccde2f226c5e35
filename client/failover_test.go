package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"skiff.dev/skiff/api"
)

// testServer is one fake API server; its handler can be swapped while
// it runs, and it counts requests.
type testServer struct {
	*httptest.Server
	mu   sync.Mutex
	h    http.HandlerFunc
	hits int
}

func (s *testServer) set(h http.HandlerFunc) { s.mu.Lock(); s.h = h; s.mu.Unlock() }
func (s *testServer) count() int             { s.mu.Lock(); defer s.mu.Unlock(); return s.hits }

func newTestServer(t *testing.T, h http.HandlerFunc) *testServer {
	ts := &testServer{h: h}
	ts.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.mu.Lock()
		ts.hits++
		h := ts.h
		ts.mu.Unlock()
		h(w, r)
	}))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// testClient returns a client of the servers, in that order.
func testClient(t *testing.T, srvs ...*testServer) *Client {
	t.Helper()
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.URL)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvs[0].Certificate().Raw})
	c, err := New(Config{Servers: urls, Token: "t", CA: string(ca)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func answer(v any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

func fail(status int, code string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": code + " here", "code": code})
	}
}

// drop reads the request and then breaks the connection without an
// answer, as a server killed mid-request does.
func drop(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	panic(http.ErrAbortHandler)
}

func whoami(t *testing.T, c *Client) string {
	t.Helper()
	id, _, err := c.Whoami(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFailoverDeadServer(t *testing.T) {
	a := newTestServer(t, answer(map[string]string{"identity": "a"}))
	b := newTestServer(t, answer(map[string]string{"identity": "b"}))
	c := testClient(t, a, b)
	if id := whoami(t, c); id != "a" {
		t.Fatalf("first request answered by %s, want a (the first listed)", id)
	}
	a.Close()
	if id := whoami(t, c); id != "b" {
		t.Fatalf("with a dead, answered by %s, want b", id)
	}
	// The client starts at the server that answered last.
	before := b.count()
	if id := whoami(t, c); id != "b" || b.count() != before+1 {
		t.Fatalf("answered by %s after %d requests to b, want b once more", id, b.count()-before)
	}
}

func TestFailoverUnavailable(t *testing.T) {
	a := newTestServer(t, fail(503, "unavailable"))
	b := newTestServer(t, answer(map[string]string{"identity": "b"}))
	c := testClient(t, a, b)
	if id := whoami(t, c); id != "b" {
		t.Fatalf("answered by %s, want b (a answers 503)", id)
	}
	// A write without expect is moved on too: a 503 was not carried out.
	b.set(answer(WriteResult{Op: "created"}))
	res, err := c.Apply(context.Background(), api.Object{Kind: "Pod", Name: "p"}, 0)
	if err != nil || res.Op != "created" {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	// Other errors are the answer.
	a.set(fail(409, "conflict"))
	b.set(fail(409, "conflict"))
	c.srv.answered(0)
	if _, err := c.Apply(context.Background(), api.Object{Kind: "Pod", Name: "p"}, 3); !IsCode(err, "conflict") || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("apply: %v, want a plain conflict", err)
	}
	if b.count() != 2 {
		t.Fatalf("b got %d requests, want 2 (the conflict came from a)", b.count())
	}
}

func TestFailoverAllUnavailableWaits(t *testing.T) {
	a := newTestServer(t, fail(503, "unavailable"))
	b := newTestServer(t, fail(503, "unavailable"))
	c := testClient(t, a, b)
	// The cluster elects a leader after a while.
	go func() {
		time.Sleep(300 * time.Millisecond)
		b.set(answer(map[string]string{"identity": "b"}))
	}()
	if id := whoami(t, c); id != "b" {
		t.Fatalf("answered by %s, want b once it serves", id)
	}
}

func TestFailoverWriteOutcomeUnknown(t *testing.T) {
	a := newTestServer(t, drop)
	b := newTestServer(t, answer(WriteResult{Op: "created"}))
	c := testClient(t, a, b)
	_, err := c.Apply(context.Background(), api.Object{Kind: "Pod", Name: "p"}, 0)
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("apply without expect through a dropped connection: %v, want ErrOutcomeUnknown", err)
	}
	if b.count() != 0 {
		t.Fatalf("the write was sent again to b (%d requests): it may have been applied by a", b.count())
	}
}

func TestFailoverExpectRetried(t *testing.T) {
	want := api.Object{Kind: "Pod", Namespace: "default", Name: "p", Spec: map[string]any{"n": 7}}
	a := newTestServer(t, drop)
	b := newTestServer(t, answer(WriteResult{Op: "configured", Object: api.Object{Kind: "Pod", Name: "p"}}))
	c := testClient(t, a, b)

	// Not applied by a: b applies it.
	res, err := c.Apply(context.Background(), want, 4)
	if err != nil || res.Op != "configured" {
		t.Fatalf("apply with expect: %+v, %v", res, err)
	}

	// Applied by a before it died: b refuses with a conflict, and the
	// client finds its write at revision 5.
	c.srv.answered(0)
	var mu sync.Mutex
	var paths []string
	b.set(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.Method == "POST" {
			fail(409, "conflict")(w, r)
			return
		}
		o := want
		o.Meta.Revision = 5
		answer(o)(w, r)
	})
	res, err = c.Apply(context.Background(), want, 4)
	if err != nil || res.Object.Meta.Revision != 5 {
		t.Fatalf("apply with expect, applied by the dead server: %+v, %v; want revision 5", res, err)
	}
	if got := strings.Join(paths, ", "); got != "POST /v1/apply, GET /v1/objects/pods/default/p/revisions/5" {
		t.Fatalf("requests to b: %s", got)
	}

	// Someone else's write at revision 5: the conflict stands, and the
	// outcome of the first attempt is unknown.
	c.srv.answered(0)
	other := want
	other.Spec = map[string]any{"n": 8}
	b.set(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			fail(409, "conflict")(w, r)
			return
		}
		answer(other)(w, r)
	})
	_, err = c.Apply(context.Background(), want, 4)
	if !IsCode(err, "conflict") || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("apply with expect, someone else's revision 5: %v, want a conflict of unknown outcome", err)
	}
}

// A watch whose stream breaks resumes on the next server from the last
// revision it delivered, which may hold changes to several objects (writes
// that arrive together share a revision): it asks for that revision again
// and skips what it delivered, losing and repeating nothing.
func TestWatchResumes(t *testing.T) {
	type change struct {
		rev  int64
		name string
	}
	stream := func(cs ...change) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			for _, c := range cs {
				fmt.Fprintf(w, `{"type":"configured","revision":%d,"object":{"kind":"Pod","name":%q}}`+"\n", c.rev, c.name)
			}
			w.(http.Flusher).Flush()
			// and the server goes away
		}
	}
	// a breaks after p's change at 12; q's, at 12 too, was not sent.
	a := newTestServer(t, stream(change{11, "p"}, change{12, "p"}))
	var afterB string
	b := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		afterB = r.URL.Query().Get("after")
		stream(change{12, "p"}, change{12, "q"}, change{13, "p"})(w, r)
		<-r.Context().Done()
	})
	c := testClient(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	err := c.Watch(ctx, "Pod", "", 10, func(ev Event) error {
		got = append(got, fmt.Sprintf("%d%s", ev.Revision, ev.Object.Name))
		if len(got) == 4 {
			return io.EOF
		}
		return nil
	})
	if err != io.EOF {
		t.Fatalf("watch: %v", err)
	}
	if fmt.Sprint(got) != "[11p 12p 12q 13p]" || afterB != "11" {
		t.Fatalf("events %v, resumed on b after %s; want [11p 12p 12q 13p] and after 11", got, afterB)
	}
}

// A server that passed a write to the leader and got no answer says 502:
// the write is not sent elsewhere, its outcome is unknown; a read is.
// So does one whose etcd took a write and timed out waiting (504).
func TestBadGatewayIsOutcomeUnknown(t *testing.T) {
	for _, status := range []int{502, 504} {
		a := newTestServer(t, fail(status, "unavailable"))
		b := newTestServer(t, answer(map[string]string{"identity": "b"}))
		c := testClient(t, a, b)
		if _, err := c.Delete(context.Background(), api.Ref{Kind: "Pod", Name: "p"}, 0); !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("delete through a %d: %v, want an error matching ErrOutcomeUnknown", status, err)
		}
		if b.count() != 0 {
			t.Fatalf("the delete was sent to b too after a %d (%d requests)", status, b.count())
		}
		if id := whoami(t, c); id != "b" {
			t.Fatalf("read answered by %s, want b (a answers %d)", id, status)
		}
	}
}

// ApplyList sends a long manifest in parts, each within the server's
// bounds on objects and bytes, in order, and gathers the results.
func TestApplyListParts(t *testing.T) {
	var sizes []int
	var maxBody int
	var mu sync.Mutex
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ Items []api.Object }
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		sizes = append(sizes, len(req.Items))
		maxBody = max(maxBody, len(body))
		mu.Unlock()
		var ans applyListAnswer
		for _, o := range req.Items {
			ans.Items = append(ans.Items, WriteResult{Op: "created", Object: o})
		}
		answer(ans)(w, r)
	})
	c := testClient(t, srv)
	pod := func(i int, pad int) api.Object {
		return api.Object{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("p%04d", i),
			Spec: map[string]any{"note": strings.Repeat("x", pad)}}
	}
	var objs []api.Object
	for i := range 2500 {
		objs = append(objs, pod(i, 10))
	}
	res, err := c.ApplyList(context.Background(), objs)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sizes) != "[1000 1000 500]" || len(res) != 2500 || res[2499].Object.Name != "p2499" {
		t.Errorf("2,500 small objects: parts %v, %d results; want [1000 1000 500] and all 2,500 in order", sizes, len(res))
	}

	sizes, objs = nil, nil
	for i := range 10 {
		objs = append(objs, pod(i, 300<<10))
	}
	if res, err = c.ApplyList(context.Background(), objs); err != nil || len(res) != 10 {
		t.Fatalf("10 objects of 300 KiB: %d results, %v", len(res), err)
	}
	if maxBody > applyListBytes || len(sizes) != 4 {
		t.Errorf("10 objects of 300 KiB: parts %v, largest body %d bytes; want 4 parts of at most %d bytes", sizes, maxBody, applyListBytes)
	}
}
