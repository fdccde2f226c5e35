package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/ownership"
	"skiff.dev/skiff/workflow"
)

// Work dispatch: controllers and nodes long-poll for work items meant for
// them, report log lines, and complete each item with field writes or an
// error. In-process controllers use the same engine without HTTP. Only
// the leader has work: a server that does not lead passes these requests
// to it (toLeader).

// MaxWorkWait bounds a long poll.
const MaxWorkWait = 60 * time.Second

// destination is the queue of the caller's work items: controller:NAME or
// node:NAME. A simulator takes from the queues of all its nodes (take), so
// it has none of its own.
func destination(tok Token) (string, error) {
	id := identityOf(tok)
	switch id.Kind {
	case identity.Controller:
		return "controller:" + id.Name, nil
	case identity.Node:
		return "node:" + id.Name, nil
	case identity.Simulator:
		return "", nil
	}
	return "", forbidden("%s takes no work: work items go to controllers and nodes", tok.Identity)
}

// mayReport checks that the caller is where a work item was dispatched:
// its controller, its node, or the simulator of its node.
func mayReport(tok Token, it *workflow.WorkItem) error {
	d := workflow.Destination(it)
	dest, err := destination(tok)
	switch prefix := simulator(tok); {
	case err != nil:
		return err
	case prefix != "" && it.Where == "node" && identity.Simulates(prefix, it.Node), prefix == "" && d == dest:
		return nil
	}
	return forbidden("%s may not report on work item %s: it belongs to %s", tok.Identity, it.ID, d)
}

// take takes up to max items for the caller, waiting until ctx ends for
// one: those of its destination, or, for a simulator, of all its nodes.
func (s *Server) take(ctx context.Context, tok Token, max int) ([]*workflow.WorkItem, error) {
	if prefix := simulator(tok); prefix != "" {
		match := func(dest string) bool {
			node, ok := strings.CutPrefix(dest, "node:")
			return ok && identity.Simulates(prefix, node)
		}
		return s.orch.Queue.TakeGroup(ctx, tok.Identity, match, max), nil
	}
	dest, err := destination(tok)
	if err != nil {
		return nil, err
	}
	return s.orch.Queue.Take(ctx, dest, max), nil
}

// MaxWorkBatch bounds the items one long poll returns.
const MaxWorkBatch = 4096

// takeWork answers GET /v1/work?wait=30s&max=16 with the items waiting for
// the caller, waiting up to wait for one to arrive.
func (s *Server) takeWork(w http.ResponseWriter, r *http.Request, tok Token) error {
	_, err := destination(tok)
	if err != nil {
		return err
	}
	if passed, err := s.toLeader(w, r, false); passed {
		return err
	}
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			return badRequest("wait=%q is not a duration", v)
		}
	}
	wait = min(wait, MaxWorkWait)
	max := 16
	if v := r.URL.Query().Get("max"); v != "" {
		if max, err = strconv.Atoi(v); err != nil || max < 1 {
			return badRequest("max=%q is not a positive number", v)
		}
	}
	max = min(max, MaxWorkBatch)
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	items, err := s.take(ctx, tok, max)
	if err != nil {
		return err
	}
	owners := s.owners()
	id := identityOf(tok)
	strip := id.Name
	if id.Kind == identity.Node || id.Kind == identity.Simulator {
		strip = ownership.AgentController
	}
	out := make([]workflow.WorkItem, 0, len(items))
	for _, it := range items {
		if r.Context().Err() != nil {
			// The taker is gone: put the rest back for the next poll.
			s.orch.Queue.Dispatch(it)
			continue
		}
		if s.orch.Engine.Taken(it.ID) != nil {
			continue // withdrawn meanwhile
		}
		c := *it
		c.Object = owners.Strip(it.Kind, strip, it.Object)
		out = append(out, c)
	}
	writeJSON(w, 200, out)
	return nil
}

// workItem checks that the caller may report on item id.
func (s *Server) workItem(tok Token, id string) (*workflow.WorkItem, error) {
	it, ok := s.orch.Engine.Item(id)
	if !ok {
		return nil, staleItem(id)
	}
	if err := mayReport(tok, it); err != nil {
		return nil, err
	}
	return it, nil
}

func staleItem(id string) error {
	return &statusError{kind: errConflict, msg: "work item " + id + " is no longer current: its run was superseded, it timed out, or it was already reported"}
}

// WorkLog is a log line reported for a work item.
type WorkLog struct {
	Msg   string         `json:"msg"`
	Attrs map[string]any `json:"attrs,omitempty"`
}

func (s *Server) logWork(w http.ResponseWriter, r *http.Request, tok Token) error {
	if passed, err := s.toLeader(w, r, false); passed {
		return err
	}
	it, err := s.workItem(tok, r.PathValue("id"))
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var l WorkLog
	if err := json.Unmarshal(body, &l); err != nil || l.Msg == "" {
		return badRequest(`log needs {"msg": "...", "attrs": {...}}`)
	}
	if err := s.orch.Engine.Log(it.ID, l.Msg, l.Attrs); err != nil {
		return staleItem(it.ID)
	}
	writeJSON(w, 200, map[string]string{"logged": it.ID})
	return nil
}

func (s *Server) completeWork(w http.ResponseWriter, r *http.Request, tok Token) error {
	if passed, err := s.toLeader(w, r, false); passed {
		return err
	}
	it, err := s.workItem(tok, r.PathValue("id"))
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var res workflow.Result
	if !decodeCompletion(body, &res) {
		return badRequest(`completion needs {"writes": {"status.x": ...}} or {"error": "..."}`)
	}
	if err := s.complete(it, res); err != nil {
		return err
	}
	writeJSON(w, 200, map[string]string{"completed": it.ID})
	return nil
}

// complete reports an item's outcome to the engine.
func (s *Server) complete(it *workflow.WorkItem, res workflow.Result) error {
	if err := s.orch.Engine.Complete(it.ID, res); err != nil {
		if errors.Is(err, workflow.ErrStale) {
			return staleItem(it.ID)
		}
		return err
	}
	return nil
}

// WorkCompletion is an item of POST /v1/work/done: a work item and its
// outcome, as POST /v1/work/{id}/done takes it.
type WorkCompletion struct {
	ID string `json:"id"`
	workflow.Result
}

// WorkDone answers an item of POST /v1/work/done: its id and, if it was
// not completed, why, with the answer POST /v1/work/{id}/done would have
// had (as apply/list answers an object that failed).
type WorkDone struct {
	ID    string          `json:"id"`
	Error *ApplyListError `json:"error,omitempty"`
}

// workDoneParallel bounds the items of one list completed at once. Each
// completion waits for its own etcd commit: one after the other, a list
// would take as many commits' time; at once, they are committed together,
// as many single reports in flight were.
const workDoneParallel = 256

// completeWorkList answers POST /v1/work/done: the outcomes of many work
// items, each handled as POST /v1/work/{id}/done would, in one request
// (a simulator of thousands of nodes reports thousands a second). The
// outcomes are independent: an item refused does not stop the others.
// The answer, a 200, has an entry for each item, in order.
func (s *Server) completeWorkList(w http.ResponseWriter, r *http.Request, tok Token) error {
	if passed, err := s.toLeader(w, r, false); passed {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	list, err := decodeCompletions(body)
	if err != nil {
		return err
	}
	errs := make([]error, len(list))
	do := func(i int) {
		it, err := s.workItem(tok, list[i].ID)
		if err == nil {
			err = s.complete(it, list[i].Result)
		}
		errs[i] = err
	}
	if len(list) == 1 {
		do(0)
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range min(len(list), workDoneParallel) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < len(list); i = int(next.Add(1)) - 1 {
					do(i)
				}
			}()
		}
		wg.Wait()
	}
	b := append(make([]byte, 0, 2+32*len(list)), '[')
	for i, c := range list {
		if i > 0 {
			b = append(b, ',')
		}
		if errs[i] == nil {
			b = append(api.AppendString(append(b, `{"id":`...), c.ID), '}')
			continue
		}
		status, eb := errorAnswer(r, errs[i])
		j, err := json.Marshal(WorkDone{ID: c.ID, Error: &ApplyListError{ErrorBody: eb, Status: status}})
		if err != nil {
			return err
		}
		b = append(b, j...)
	}
	b = append(b, "]\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	w.Write(b)
	return nil
}

const workListUsage = `work/done takes a list: [{"id": "...", "writes": {"status.x": ...}} or {"id": "...", "error": "..."}, ...]`

// decodeCompletions reads the body of POST /v1/work/done as json.Unmarshal
// does into a []WorkCompletion, without reflection when it can, and
// checks it.
func decodeCompletions(body []byte) ([]WorkCompletion, error) {
	var list []WorkCompletion
	r := api.NewJSONReader(body)
	if !readCompletions(&r, &list) || !r.End() {
		list = nil
		if err := json.Unmarshal(body, &list); err != nil {
			return nil, badRequest("%s", workListUsage)
		}
	}
	switch {
	case list == nil:
		return nil, badRequest("%s", workListUsage)
	case len(list) > MaxWorkBatch:
		return nil, badRequest("work/done takes at most %d items; this has %d: send them in parts", MaxWorkBatch, len(list))
	}
	for i, c := range list {
		if c.ID == "" {
			return nil, badRequest("items[%d] has no id: %s", i, workListUsage)
		}
	}
	return list, nil
}

// decodeCompletion reads the body of POST /v1/work/{id}/done into res as
// json.Unmarshal does, without reflection when it can, and reports
// whether it was JSON of a Result.
func decodeCompletion(body []byte, res *workflow.Result) bool {
	r := api.NewJSONReader(body)
	if r.Null() || readResult(&r, res, nil) {
		if r.End() {
			return true
		}
	}
	*res = workflow.Result{}
	return json.Unmarshal(body, res) == nil
}

func readCompletions(r *api.JSONReader, list *[]WorkCompletion) bool {
	if r.Null() {
		return true // as encoding/json: nil, and list starts nil
	}
	*list = []WorkCompletion{}
	return r.Elements(func() bool {
		*list = append(*list, WorkCompletion{})
		c := &(*list)[len(*list)-1]
		if r.Null() {
			return true // a null item stays zero
		}
		return readResult(r, &c.Result, &c.ID)
	})
}

// readResult reads a JSON object into res, and its "id" into id when id
// is not nil. It takes only the exact keys, and leaves anything else
// (another spelling of a key, an unknown key) to encoding/json.
func readResult(r *api.JSONReader, res *workflow.Result, id *string) bool {
	return r.Members(func(key []byte) bool {
		switch string(key) {
		case "id":
			return id != nil && r.String(id)
		case "error":
			return r.String(&res.Err)
		case "writes":
			return r.Tree(&res.Writes)
		}
		return false
	})
}

// ControllerInfo is a registered controller as listed by the API.
type ControllerInfo struct {
	Name    string             `json:"name"`
	Builtin bool               `json:"builtin,omitempty"`
	Spec    api.ControllerSpec `json:"spec"`
}

func (s *Server) listControllers(w http.ResponseWriter, r *http.Request, tok Token) error {
	c := s.orch.Compiled()
	out := make([]ControllerInfo, 0, len(c.Registrations))
	for _, reg := range c.Registrations {
		out = append(out, ControllerInfo{Name: reg.Name, Builtin: reg.Builtin, Spec: reg.Spec})
	}
	writeJSON(w, 200, out)
	return nil
}

func (s *Server) verifyController(w http.ResponseWriter, r *http.Request, tok Token) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	obj, err := api.DecodeObject(body)
	if err != nil {
		writeJSON(w, 200, map[string][]string{"errors": {err.Error()}})
		return nil
	}
	if obj.Kind != "Controller" {
		return badRequest("verify takes a Controller, not a %s", obj.Kind)
	}
	problems := []string{}
	if err := s.orch.Verify(r.Context(), obj); err != nil {
		var vf *VerifyFailed
		if !errors.As(err, &vf) {
			return err
		}
		problems = vf.Problems
	}
	writeJSON(w, 200, map[string][]string{"errors": problems})
	return nil
}
