package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"syscall"
)

// ErrNotRunning is wrapped by the Client's errors when no sidecar answers
// on the socket: the path does not exist, or nothing listens there.
var ErrNotRunning = errors.New("no sidecar is running there")

// maxResponse bounds an answer's size: a window of the largest flow table
// fits with room to spare.
const maxResponse = 256 << 20

// Client asks a sidecar's control socket. It keeps no connection open
// between requests; the zero value is not usable, use NewClient.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}}
}

// Path is the socket's path.
func (c *Client) Path() string { return c.path }

// Get asks for apiPath (PathStatus, PathFlows) and returns the answer's
// body as the server sent it.
func (c *Client) Get(ctx context.Context, apiPath string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, apiPath)
}

// Reload asks POST /v1/reload: the sidecar reads its file again.
func (c *Client) Reload(ctx context.Context) (*Reload, error) {
	body, err := c.do(ctx, http.MethodPost, PathReload)
	if err != nil {
		return nil, err
	}
	var r Reload
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("sidecar at %s: bad answer to %s: %w", c.path, PathReload, err)
	}
	return &r, nil
}

func (c *Client) do(ctx context.Context, method, apiPath string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://sidecar"+apiPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", c.path, err)
	}
	if len(body) > maxResponse {
		return nil, fmt.Errorf("control socket %s: answer larger than %d bytes", c.path, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("sidecar at %s: %s", c.path, e.Error)
		}
		return nil, fmt.Errorf("sidecar at %s: %s", c.path, resp.Status)
	}
	return body, nil
}

// Stream asks for a stream (PathMonitor, with a query string) and calls fn
// with each line until the stream ends, ctx ends, or fn fails.
func (c *Client) Stream(ctx context.Context, apiPath string, fn func(line []byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sidecar"+apiPath, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("sidecar at %s: %s", c.path, e.Error)
		}
		return fmt.Errorf("sidecar at %s: %s", c.path, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	return nil
}

// Status asks GET /v1/status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.getJSON(ctx, PathStatus, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Flows asks GET /v1/flows.
func (c *Client) Flows(ctx context.Context) (*Flows, error) {
	var f Flows
	if err := c.getJSON(ctx, PathFlows, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

func (c *Client) getJSON(ctx context.Context, apiPath string, v any) error {
	body, err := c.Get(ctx, apiPath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("sidecar at %s: bad answer to %s: %w", c.path, apiPath, err)
	}
	return nil
}

// dialError explains why the socket could not be reached.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("control socket %s: %w (the socket does not exist; is the sidecar up, with this socket?)", c.path, ErrNotRunning)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("control socket %s: %w (nothing listens on it; the sidecar that made it has ended)", c.path, ErrNotRunning)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("control socket %s: permission denied (it belongs to another user)", c.path)
	}
	return fmt.Errorf("control socket %s: %w", c.path, err)
}
