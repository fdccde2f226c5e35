package server

import (
	"encoding/json"
	"fmt"
	"net/http"

	"skiff.dev/skiff/api"
)

// MaxApplyList is how many objects one POST /v1/apply/list takes.
const MaxApplyList = 1000

// ApplyListResult answers POST /v1/apply/list: the results of the objects
// applied, in order, and, if one of them failed, why; the objects after it
// were not tried. (The answer is a 200 either way: it says what was
// written.)
type ApplyListResult struct {
	Items []WriteResult   `json:"items"`
	Error *ApplyListError `json:"error,omitempty"`
}

// ApplyListError is why an object of a list was not applied: the answer
// a POST /v1/apply of it alone would have had, and its HTTP status.
type ApplyListError struct {
	ErrorBody
	Status int `json:"status"`
}

// MaxListsInFlight bounds the apply/list requests a server works on at
// once; more wait their turn with their bodies unread. A list holds its
// body and its objects decoded while it applies them one after another
// (a thousand writes take about a second), so many large lists at once
// held hundreds of MiB: 50 lists of 1,000 pods, ~400 MiB more than the
// same pods in lists of 100. Sixteen lists keep etcd's transactions as
// full as more would.
const MaxListsInFlight = 16

// applyList applies the objects of {"items": [...]} in order, each as
// POST /v1/apply would, and stops at the first that fails: a manifest of
// many objects in one request, with what a loop of applies would do.
func (s *Server) applyList(w http.ResponseWriter, r *http.Request, tok Token) error {
	if r.URL.RawQuery != "" {
		return badRequest("apply/list takes no parameters (expect is for one object: POST /v1/apply)")
	}
	select {
	case s.lists <- struct{}{}:
		defer func() { <-s.lists }()
	case <-r.Context().Done():
		return r.Context().Err()
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	items, err := decodeApplyList(body)
	if err != nil {
		return err
	}
	// Every object is checked before any is written, as the CLI checks a
	// manifest: a bad document changes nothing.
	objs := make([]api.Object, len(items))
	for i, it := range items {
		if objs[i], err = api.DecodeObjectTree(it); err != nil {
			return fmt.Errorf("items[%d]: %w", i, err)
		}
	}
	owners := s.owners()
	b := append(make([]byte, 0, 512*len(objs)), `{"items":[`...)
	var failed error
	for i, obj := range objs {
		res, err := s.applyObject(r.Context(), tok, obj, 0)
		if err != nil {
			failed = fmt.Errorf("%s: %w", obj.Ref(), err)
			break
		}
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendWriteResult(b, res.Op, stripFor(owners, tok, res.Object)); err != nil {
			return fmt.Errorf("%s: written, but its answer: %w", obj.Ref(), err)
		}
	}
	b = append(b, ']')
	if failed != nil {
		status, body := errorAnswer(r, failed)
		eb, err := json.Marshal(ApplyListError{ErrorBody: body, Status: status})
		if err != nil {
			return err
		}
		b = append(append(b, `,"error":`...), eb...)
	}
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	w.Write(b)
	return nil
}

// decodeApplyList reads {"items": [...]} into the items' JSON trees.
func decodeApplyList(body []byte) ([]any, error) {
	tree, err := api.DecodeBody(body)
	if err != nil {
		return nil, err
	}
	m, _ := tree.(map[string]any)
	items, ok := m["items"].([]any)
	for k := range m {
		if k != "items" {
			ok = false
		}
	}
	switch {
	case !ok:
		return nil, badRequest(`apply/list takes {"items": [OBJECT, ...]}`)
	case len(items) > MaxApplyList:
		return nil, badRequest("apply/list takes at most %d objects; this has %d: send them in parts", MaxApplyList, len(items))
	}
	return items, nil
}
