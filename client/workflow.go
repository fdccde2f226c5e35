package client

import (
	"context"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/workflow"
)

// Runs returns an object's run records, newest first.
//
// GET /v1/objects/KIND/[NS/]NAME/runs answers a JSON array of
// workflow.RunRecord.
func (c *Client) Runs(ctx context.Context, ref api.Ref) ([]workflow.RunRecord, error) {
	p, err := refPath(ref)
	if err != nil {
		return nil, err
	}
	var runs []workflow.RunRecord
	return runs, c.do(ctx, "GET", p+"/runs", nil, &runs)
}

// ControllerInfo is a registered controller as GET /v1/controllers lists it.
type ControllerInfo struct {
	Name    string             `json:"name"`
	Builtin bool               `json:"builtin,omitempty"`
	Spec    api.ControllerSpec `json:"spec"`
}

// Controllers lists the registered controllers, built-in and external.
func (c *Client) Controllers(ctx context.Context) ([]ControllerInfo, error) {
	var l []ControllerInfo
	return l, c.do(ctx, "GET", "/v1/controllers", nil, &l)
}

// VerifyController checks a Controller registration without registering
// it. It returns what is wrong with it, nothing if it would be accepted.
//
// POST /v1/controllers/verify with the object as body answers
// {"errors": ["...", ...]}; empty or absent errors mean the registration is
// fine. A server that rejects the object itself as invalid (400, code
// "invalid") is reported the same way, as one error line.
func (c *Client) VerifyController(ctx context.Context, obj api.Object) ([]string, error) {
	var r struct {
		Errors []string `json:"errors"`
	}
	if err := c.do(ctx, "POST", "/v1/controllers/verify", obj, &r); err != nil {
		if IsCode(err, "invalid") {
			return []string{err.Error()}, nil
		}
		return nil, err
	}
	return r.Errors, nil
}
