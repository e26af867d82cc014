package testnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Listener is what a tunnel node (sidecar.Node, a netstack.Net wrapper)
// offers to listen on: Listen("tcp", ":80") listens on all of its
// addresses.
type Listener interface {
	Listen(network, address string) (net.Listener, error)
}

// ServeHTTP runs an HTTP server on node's tunnel port 80 that answers
// every request with "<name> saw <caller's address>", until the test ends.
func ServeHTTP(t testing.TB, node Listener, name string) {
	t.Helper()
	ln, err := node.Listen("tcp", ":80")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s saw %s", name, r.RemoteAddr)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
}

// Get fetches url with c within 20 s and returns the body, failing the
// test on any error.
func Get(t testing.TB, c *http.Client, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return string(b)
}

// GetStatus fetches url with the default client and returns the status
// code and body, failing the test on any error.
func GetStatus(t testing.TB, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	return do(t, req)
}

// GetBearer is GetStatus with "Authorization: Bearer token", as the
// collector's reads want.
func GetBearer(t testing.TB, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
