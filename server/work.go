package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
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

// workItem checks that the caller may report on an item.
func (s *Server) workItem(r *http.Request, tok Token) (*workflow.WorkItem, error) {
	id := r.PathValue("id")
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
	it, err := s.workItem(r, tok)
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
	it, err := s.workItem(r, tok)
	if err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var res workflow.Result
	if err := json.Unmarshal(body, &res); err != nil {
		return badRequest(`completion needs {"writes": {"status.x": ...}} or {"error": "..."}`)
	}
	if err := s.orch.Engine.Complete(it.ID, res); err != nil {
		if errors.Is(err, workflow.ErrStale) {
			return staleItem(it.ID)
		}
		return err
	}
	writeJSON(w, 200, map[string]string{"completed": it.ID})
	return nil
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
