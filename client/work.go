package client

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// TakeWork long-polls for work items meant for this client's identity (a
// controller or a node), waiting up to wait for at least one.
func (c *Client) TakeWork(ctx context.Context, wait time.Duration, max int) ([]workflow.WorkItem, error) {
	q := url.Values{"wait": {wait.String()}, "max": {strconv.Itoa(max)}}
	var items []workflow.WorkItem
	return items, c.do(ctx, "GET", "/v1/work?"+q.Encode(), nil, &items)
}

// LogWork appends a structured log line to a work item's step record.
func (c *Client) LogWork(ctx context.Context, id, msg string, attrs map[string]any) error {
	return c.do(ctx, "POST", "/v1/work/"+url.PathEscape(id)+"/log", map[string]any{"msg": msg, "attrs": attrs}, nil)
}

// CompleteWork reports a work item's outcome: field writes on success
// ("status.volumes.nfs": {...}), or an error.
func (c *Client) CompleteWork(ctx context.Context, id string, res workflow.Result) error {
	return c.do(ctx, "POST", "/v1/work/"+url.PathEscape(id)+"/done", res, nil)
}

// Completion is a work item's outcome, for CompleteWorkList.
type Completion struct {
	ID string `json:"id"`
	workflow.Result
}

// MaxWorkList is how many outcomes CompleteWorkList sends in one request
// (the server's bound); it also keeps each request within
// applyListBytes, half the server's bound on a body.
const MaxWorkList = 4096

// CompleteWorkList reports many work items' outcomes at once, each as
// CompleteWork would, in one request per MaxWorkList items (or per MiB):
// far cheaper, for a client that completes thousands a second, than a
// request each. The outcomes are independent: errs[i] is nil when item i
// was completed, or its error, with the status and code that
// CompleteWork's would have (a stale item is a conflict). err is that
// of the first request that failed as a whole, if any; each item it
// carried has it as its error too.
func (c *Client) CompleteWorkList(ctx context.Context, list []Completion) (errs []error, err error) {
	errs = make([]error, len(list))
	body := []byte{'['}
	var sent []int // the items in body, by index in list
	send := func() {
		if len(sent) == 0 {
			return
		}
		if rerr := c.sendWorkList(ctx, append(body, ']'), sent, errs); rerr != nil {
			err = cmp.Or(err, rerr)
			for _, i := range sent {
				errs[i] = rerr
			}
		}
		body, sent = body[:1], sent[:0]
	}
	var b []byte
	for i := range list {
		if b, errs[i] = appendCompletion(b[:0], &list[i]); errs[i] != nil {
			continue
		}
		if len(sent) == MaxWorkList || len(sent) > 0 && len(body)+len(b) > applyListBytes {
			send()
		}
		if len(sent) > 0 {
			body = append(body, ',')
		}
		body = append(body, b...)
		sent = append(sent, i)
	}
	send()
	return errs, err
}

// sendWorkList sends a body of the items sent (indices in errs), and sets
// the errors of those the server refused.
func (c *Client) sendWorkList(ctx context.Context, body []byte, sent []int, errs []error) error {
	var ans []workDone
	if err := c.do(ctx, "POST", "/v1/work/done", rawJSON(body), &ans); err != nil {
		return err
	}
	if len(ans) != len(sent) {
		return fmt.Errorf("POST /v1/work/done: %d items sent, %d answered", len(sent), len(ans))
	}
	for j, i := range sent {
		if e := ans[j].Error; e != nil {
			errs[i] = &Error{Status: e.Status, Code: e.Code, Message: e.Error}
		}
	}
	return nil
}

// workDone is the server's answer for an item of POST /v1/work/done.
type workDone struct {
	ID    string          `json:"id"`
	Error *applyListError `json:"error"`
}

// appendCompletion appends c as json.Marshal encodes it.
func appendCompletion(b []byte, c *Completion) ([]byte, error) {
	start := len(b)
	b, err := appendResultMembers(api.AppendString(append(b, `{"id":`...), c.ID), &c.Result, true)
	if err != nil {
		return json.Marshal(c) // its error messages are not always the appenders'
	}
	return api.EscapeHTML(b, start), nil
}

// StepFunc does one work item. log adds a line to the step's record. It
// returns the fields to write, or an error that fails the attempt.
type StepFunc func(ctx context.Context, item *workflow.WorkItem, log func(msg string, attrs map[string]any)) (writes map[string]any, err error)

// Serve runs a controller: it takes work items for this client's identity
// and runs the StepFunc registered for each item's step, concurrently, until
// ctx ends. An item for a step with no StepFunc fails, naming the step.
func (c *Client) Serve(ctx context.Context, steps map[string]StepFunc) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		items, err := c.TakeWork(ctx, 30*time.Second, 64)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The server may be restarting: back off and poll again.
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		for i := range items {
			it := items[i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := workflow.Result{}
				fn := steps[it.Step]
				if fn == nil {
					res.Err = fmt.Sprintf("this controller has no handler for step %s", it.Step)
				} else {
					log := func(msg string, attrs map[string]any) { c.LogWork(ctx, it.ID, msg, attrs) }
					writes, err := fn(ctx, &it, log)
					if err != nil {
						res.Err = err.Error()
					} else {
						res.Writes = writes
					}
				}
				c.CompleteWork(context.WithoutCancel(ctx), it.ID, res)
			}()
		}
	}
	return nil
}
