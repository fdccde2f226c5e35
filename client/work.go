package client

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"

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
