package client

import (
	"context"
	"net/url"
	"time"
)

// Lease is what the servers answer a heartbeat with: how long they count
// the node alive after it (Lease), and how much longer they wait before
// moving its failover:fast pods (Margin). A node fences within the lease
// and stops its fast pods within the margin.
type Lease struct {
	Lease, Margin time.Duration
}

// Heartbeat renews a node's lease and reports the status fields its agent
// owns ("status.capacity": ...); the server writes only those that
// changed.
func (c *Client) Heartbeat(ctx context.Context, node string, status map[string]any) (Lease, error) {
	var r struct {
		Lease  string `json:"lease"`
		Margin string `json:"failoverMargin"`
	}
	if err := c.do(ctx, "POST", "/v1/nodes/"+url.PathEscape(node)+"/heartbeat", map[string]any{"status": status}, &r); err != nil {
		return Lease{}, err
	}
	var l Lease
	l.Lease, _ = time.ParseDuration(r.Lease)
	l.Margin, _ = time.ParseDuration(r.Margin)
	return l, nil
}
