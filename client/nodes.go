package client

import (
	"context"
	"net/url"
	"time"
)

// Heartbeat renews a node's lease and reports the status fields its agent
// owns ("status.capacity": ...); the server writes only those that
// changed. It returns the lease the servers count the node alive for.
func (c *Client) Heartbeat(ctx context.Context, node string, status map[string]any) (time.Duration, error) {
	var r struct {
		Lease string `json:"lease"`
	}
	if err := c.do(ctx, "POST", "/v1/nodes/"+url.PathEscape(node)+"/heartbeat", map[string]any{"status": status}, &r); err != nil {
		return 0, err
	}
	d, _ := time.ParseDuration(r.Lease)
	return d, nil
}
