package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"skiff.dev/skiff/api"
)

// Logs streams a pod container's log lines to w ("" container: the pod's
// only one). follow keeps streaming until ctx ends.
func (c *Client) Logs(ctx context.Context, ref api.Ref, container string, tail int, follow bool, w io.Writer) error {
	p, err := refPath(ref)
	if err != nil {
		return err
	}
	q := url.Values{}
	if container != "" {
		q.Set("container", container)
	}
	if tail > 0 {
		q.Set("tail", strconv.Itoa(tail))
	}
	if follow {
		q.Set("follow", "1")
	}
	resp, err := c.send(ctx, "GET", p+"/logs?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Exec runs a command in a pod's container, streaming stdin to it and its
// output back, and returns its exit code.
func (c *Client) Exec(ctx context.Context, ref api.Ref, container string, cmd []string, tty bool, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	p, err := refPath(ref)
	if err != nil {
		return -1, err
	}
	args, _ := json.Marshal(cmd)
	q := url.Values{"cmd": {string(args)}}
	if container != "" {
		q.Set("container", container)
	}
	if tty {
		q.Set("tty", "1")
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var lastErr error
	for _, srv := range c.cfg.Servers {
		req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(srv, "/")+p+"/exec?"+q.Encode(), stdin)
		if err != nil {
			return -1, err
		}
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
		resp, err := c.http.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 400 {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			return -1, apiError(resp, b, strings.TrimSpace(string(b)))
		}
		for {
			stream, payload, err := readFrame(resp.Body)
			if err != nil {
				return -1, fmt.Errorf("exec: the stream ended without an exit code: %v", err)
			}
			switch stream {
			case 1:
				stdout.Write(payload)
			case 2:
				stderr.Write(payload)
			case 3:
				if len(payload) != 4 {
					return -1, errors.New("exec: bad exit frame")
				}
				return int(int32(uint32(payload[0])<<24 | uint32(payload[1])<<16 | uint32(payload[2])<<8 | uint32(payload[3]))), nil
			case 4:
				return -1, fmt.Errorf("exec: %s", payload)
			}
		}
	}
	return -1, fmt.Errorf("no skiff server answered: %w", lastErr)
}

// readFrame reads one exec frame: a stream byte, a 4-byte big-endian
// length, the payload (the agent's exec protocol).
func readFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint32(h[1])<<24 | uint32(h[2])<<16 | uint32(h[3])<<8 | uint32(h[4])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return h[0], p, err
}

// ImportImage sends an image archive (OCI layout or docker save) to a
// node's agent and returns the images it imported as NAME@DIGEST.
func (c *Client) ImportImage(ctx context.Context, node, name string, archive io.Reader) ([]string, error) {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	var lastErr error
	for _, srv := range c.cfg.Servers {
		req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(srv, "/")+"/v1/nodes/"+url.PathEscape(node)+"/images?"+q.Encode(), archive)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
		resp, err := c.http.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode >= 400 {
			return nil, apiError(resp, b, strings.TrimSpace(string(b)))
		}
		var out struct {
			Images []string `json:"images"`
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, fmt.Errorf("import: bad answer: %v", err)
		}
		return out.Images, nil
	}
	return nil, fmt.Errorf("no skiff server answered: %w", lastErr)
}

// ForgetNode revokes a node's credentials and deletes its Node (admin).
func (c *Client) ForgetNode(ctx context.Context, node string) (int, error) {
	var r struct {
		TokensRevoked int `json:"tokensRevoked"`
	}
	err := c.do(ctx, "POST", "/v1/nodes/"+url.PathEscape(node)+"/forget", nil, &r)
	return r.TokensRevoked, err
}

// NodeCertificate asks the server to sign a node's serving certificate
// (node identities only, for their own node).
func (c *Client) NodeCertificate(ctx context.Context, node string, csrPEM []byte) ([]byte, error) {
	var r struct {
		Certificate string `json:"certificate"`
	}
	err := c.do(ctx, "POST", "/v1/nodes/"+url.PathEscape(node)+"/certificate", map[string]string{"csr": string(csrPEM)}, &r)
	return []byte(r.Certificate), err
}
