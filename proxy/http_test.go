package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/leaktest"
)

func TestHTTPCurlPlain(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web, headers := startWeb(t, "127.0.0.1")
	web6, _ := startWeb(t, "::1")
	d := &hostDialer{}
	s := startHTTP(t, HTTPConfig{}, d)
	proxyURL := "http://" + s.Addr().String()

	out, err := curl(t, "-x", proxyURL, "http://localhost:"+port(web.Listener.Addr())+"/plain")
	if err != nil {
		t.Fatal(err)
	}
	if out != "hello /plain" {
		t.Errorf("body %q", out)
	}
	h := <-headers
	if got := h.Get("Via"); got != "1.1 wgsidecar" {
		t.Errorf("upstream saw Via %q; want %q", got, "1.1 wgsidecar")
	}
	for _, k := range []string{"Proxy-Connection", "Proxy-Authorization"} {
		if v, ok := h[k]; ok {
			t.Errorf("upstream saw hop-by-hop %s: %q", k, v)
		}
	}
	if got := d.lookups(); len(got) == 0 || got[0] != "localhost" {
		t.Errorf("Dialer resolved %q; want localhost", got)
	}

	out, err = curl(t, "-x", proxyURL, "http://[::1]:"+port(web6.Listener.Addr())+"/v6")
	if err != nil {
		t.Fatal(err)
	}
	if out != "hello /v6" {
		t.Errorf("IPv6 body %q", out)
	}
	s.Close()
}

// tlsServer starts an HTTPS server on loopback and writes its
// certificate to a file for curl's --cacert.
func tlsServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "secret %s", r.URL.Path)
	}))
	t.Cleanup(ts.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return ts, ca
}

func TestHTTPCurlConnectTLS(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	ts, ca := tlsServer(t)
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})

	out, err := curl(t, "-x", "http://"+s.Addr().String(), "--cacert", ca, ts.URL+"/tls")
	if err != nil {
		t.Fatal(err)
	}
	if out != "secret /tls" {
		t.Errorf("body %q", out)
	}
	// A plain http:// URL tunnelled with CONNECT too (-p).
	web, _ := startWeb(t, "127.0.0.1")
	out, err = curl(t, "-p", "-x", "http://"+s.Addr().String(), "http://localhost:"+port(web.Listener.Addr())+"/tunnelled")
	if err != nil {
		t.Fatal(err)
	}
	if out != "hello /tunnelled" {
		t.Errorf("body %q", out)
	}
	s.Close()
}

func TestHTTPCurlAuth(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web, headers := startWeb(t, "127.0.0.1")
	ts, ca := tlsServer(t)
	s := startHTTP(t, HTTPConfig{Username: "u", Password: "p"}, &hostDialer{})
	proxyURL := "http://" + s.Addr().String()
	plain := "http://localhost:" + port(web.Listener.Addr()) + "/auth"

	t.Run("plain without credentials", func(t *testing.T) {
		out, err := curl(t, "-x", proxyURL, "-o", "/dev/null", "-w", "%{http_code}", "-D", "-", plain)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(out, "407") || !strings.Contains(out, `Proxy-Authenticate: Basic realm="wgsidecar"`) {
			t.Errorf("got %q; want 407 with Proxy-Authenticate", out)
		}
	})
	t.Run("plain wrong password", func(t *testing.T) {
		out, err := curl(t, "-x", proxyURL, "--proxy-user", "u:x", "-o", "/dev/null", "-w", "%{http_code}", plain)
		if err != nil {
			t.Fatal(err)
		}
		if out != "407" {
			t.Errorf("status %q; want 407", out)
		}
	})
	t.Run("plain with credentials", func(t *testing.T) {
		out, err := curl(t, "-x", proxyURL, "--proxy-user", "u:p", plain)
		if err != nil {
			t.Fatal(err)
		}
		if out != "hello /auth" {
			t.Errorf("body %q", out)
		}
		if h := <-headers; h.Get("Proxy-Authorization") != "" {
			t.Errorf("credentials went upstream")
		}
	})
	t.Run("connect without credentials", func(t *testing.T) {
		out, err := curl(t, "-x", proxyURL, "--cacert", ca, "-w", "%{http_connect}", ts.URL)
		if err == nil || out != "407" {
			t.Errorf("got %q, %v; want curl to fail with CONNECT answered 407", out, err)
		}
	})
	t.Run("connect with credentials", func(t *testing.T) {
		out, err := curl(t, "-x", "http://u:p@"+s.Addr().String(), "--cacert", ca, ts.URL+"/x")
		if err != nil {
			t.Fatal(err)
		}
		if out != "secret /x" {
			t.Errorf("body %q", out)
		}
	})
	s.Close()
}

func TestHTTPCurlKeepAlive(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	var upstreamConns atomic.Int32
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	web.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			upstreamConns.Add(1)
		}
	}
	web.Start()
	defer web.Close()
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})

	out, err := curl(t, "-x", "http://"+s.Addr().String(), "-w", " %{num_connects}\n",
		web.URL+"/one", web.URL+"/two", web.URL+"/three")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/one 1\n/two 0\n/three 0\n"; out != want {
		t.Errorf("got %q; want %q (one connection to the proxy, reused)", out, want)
	}
	web.Close()
	if n := upstreamConns.Load(); n != 1 {
		t.Errorf("proxy opened %d upstream connections; want 1, kept alive", n)
	}
	s.Close()
}

// TestHTTPForwardStreaming checks that request and response bodies stream
// through the proxy at the same time: the upstream echoes each line as it
// comes, and the client writes the next line only after reading the echo
// of the last.
func TestHTTPForwardStreaming(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "echo "+line)
			rc.Flush()
		}
	}))
	defer web.Close()
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})
	proxyURL, _ := url.Parse("http://" + s.Addr().String())
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	defer tr.CloseIdleConnections()

	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", web.URL+"/stream", pr)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 5 {
		line := fmt.Sprintf("line %d\n", i)
		if _, err := io.WriteString(pw, line); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if got != "echo "+line {
			t.Errorf("got %q; want %q", got, "echo "+line)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the last line: %q, %v", rest, err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	s.Close()
}

func TestHTTPHopByHop(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	headers := make(chan http.Header, 1)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headers <- r.Header.Clone()
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Resp-End", "2")
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	}))
	defer web.Close()
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})

	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET %s/hop HTTP/1.1\r\nHost: elsewhere.invalid\r\nConnection: keep-alive, X-Hop\r\n"+
		"X-Hop: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: websocket\r\n"+
		"Via: 1.0 other\r\nX-End: 2\r\n\r\n", web.URL)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "body" {
		t.Errorf("body %q, %v", body, err)
	}
	h := <-headers
	for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade"} {
		if v, ok := h[k]; ok {
			t.Errorf("upstream got hop-by-hop %s: %q", k, v)
		}
	}
	if h.Get("X-End") != "2" {
		t.Errorf("end-to-end X-End lost: %v", h)
	}
	if got := h.Values("Via"); len(got) != 2 || got[0] != "1.0 other" || got[1] != "1.1 wgsidecar" {
		t.Errorf("Via %q; want the client's and ours", got)
	}
	for _, k := range []string{"X-Resp-Hop", "Keep-Alive"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("client got hop-by-hop %s: %q", k, v)
		}
	}
	if resp.Header.Get("X-Resp-End") != "2" || resp.Header.Get("Via") != "1.1 wgsidecar" {
		t.Errorf("response header %v", resp.Header)
	}
	if resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer %v; want X-Sum: 42", resp.Trailer)
	}
	c.Close()
	s.Close()
}

// rawHTTP sends a raw request to the proxy and returns its response, the
// body read in full.
func rawHTTP(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		// The proxy may answer (and close) before reading it all.
		io.WriteString(c, req)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%.40q: %v", req, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestHTTPErrors(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})
	slow := startHTTP(t, HTTPConfig{}, &errDialer{err: &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("dial: %w", context.DeadlineExceeded)}})
	huge := strings.Repeat("x", 70<<10)
	// An upstream that reads the whole body before it answers.
	reader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "read %d bytes, %v", len(b), err)
	}))
	defer reader.Close()

	for _, tc := range []struct {
		name     string
		s        *Server
		req      string
		status   int
		bodyPart string
	}{
		{"relative URL", s, "GET /path HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "absolute URL"},
		{"options for the proxy itself", s, "OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n", 200, ""},
		{"ftp", s, "GET ftp://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "scheme"},
		{"malformed", s, "GARBAGE\r\n\r\n", 400, ""},
		{"no host header", s, "GET http://localhost/ HTTP/1.1\r\n\r\n", 400, ""},
		{"connect without port", s, "CONNECT localhost HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "host:port"},
		{"connect port zero", s, "CONNECT localhost:0 HTTP/1.1\r\nHost: localhost:0\r\n\r\n", 400, "port"},
		{"refused", s, "GET http://" + refused + "/ HTTP/1.1\r\nHost: x\r\n\r\n", 502, "refused"},
		{"connect refused", s, "CONNECT " + refused + " HTTP/1.1\r\nHost: x\r\n\r\n", 502, "refused"},
		{"no such host", s, "GET http://nowhere.invalid/ HTTP/1.1\r\nHost: x\r\n\r\n", 502, "no such host"},
		{"connect no such host", s, "CONNECT nowhere.invalid:443 HTTP/1.1\r\nHost: x\r\n\r\n", 502, "no such host"},
		{"timeout", slow, "GET http://10.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n", 504, "deadline"},
		{"connect timeout", slow, "CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: x\r\n\r\n", 504, "deadline"},
		{"port out of range", s, "GET http://localhost:99999/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad port"},
		{"malformed chunked body", s, "POST " + reader.URL + "/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "request body"},
		{"oversize header", s, "GET http://localhost/ HTTP/1.1\r\nHost: x\r\nX-Huge: " + huge + "\r\n\r\n", 431, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawHTTP(t, tc.s.Addr().String(), tc.req)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.bodyPart) {
				t.Errorf("got %s %q; want %d with %q", resp.Status, body, tc.status, tc.bodyPart)
			}
		})
	}
	s.Close()
	slow.Close()
}

func TestHTTPConnectHalfClose(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	reply := bytes.Repeat([]byte("answer "), 100_000)
	up := startTCP(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil || string(req) != "early question" {
			return
		}
		c.Write(reply)
	})
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// The first bytes for the tunnel go in the same write as the
	// request, before the proxy's answer.
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\nearly ", up.Addr())
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	io.WriteString(c, "question")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, reply) {
		t.Errorf("got %d bytes; want the whole %d-byte answer", len(got), len(reply))
	}
	c.Close()
	s.Close()
}

// TestHTTPForwardHalfClose checks that a client that shuts down writing
// right after its request still gets the answer, even one that takes a
// while.
func TestHTTPForwardHalfClose(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
		io.WriteString(w, "late answer")
	}))
	defer web.Close()
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})
	for _, proto := range []string{"HTTP/1.0", "HTTP/1.1"} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "GET %s/ %s\r\nHost: x\r\n\r\n", web.URL, proto)
		c.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "late answer" {
			t.Errorf("%s: %s %q, %v; want 200 late answer", proto, resp.Status, body, err)
		}
		c.Close()
	}
	s.Close()
}

func TestHTTPMaxConns(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	web, _ := startWeb(t, "127.0.0.1")
	s := startHTTP(t, HTTPConfig{MaxConns: 1}, &hostDialer{})
	first, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// A request on the first connection makes sure it was admitted.
	first.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(first, "GET %s/ HTTP/1.1\r\nHost: x\r\n\r\n", web.URL)
	resp, err := http.ReadResponse(bufio.NewReader(first), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	second, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	second.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(second, "GET %s/ HTTP/1.1\r\nHost: x\r\n\r\n", web.URL)
	if got, _ := io.ReadAll(second); !strings.HasPrefix(string(got), "HTTP/1.1 503 ") || !strings.Contains(string(got), "connection limit") {
		t.Errorf("connection over the limit got %q; want 503 naming the connection limit", got)
	}
	second.Close()
	out, err := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+s.Addr().String(), web.URL+"/over")
	if out != "503" {
		t.Errorf("curl over the limit: %q, %v; want 503", out, err)
	}

	first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := curl(t, "-x", "http://"+s.Addr().String(), web.URL+"/again")
		if err == nil && out == "hello /again" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a connection closed: %q, %v", out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Close()
}

// TestHTTPClose checks that Close ends tunnels, idle keep-alive
// connections and requests waiting on the upstream, and leaves no
// goroutine.
func TestHTTPClose(t *testing.T) {
	t.Cleanup(leaktest.Check(t))
	up := startTCP(t, "tcp", "127.0.0.1:0", echo)
	block := make(chan struct{})
	entered := make(chan struct{}, 1)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	defer web.Close()
	defer close(block)
	s := startHTTP(t, HTTPConfig{}, &hostDialer{})

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}
	tunnel, tbr := dial()
	defer tunnel.Close()
	fmt.Fprintf(tunnel, "CONNECT %s HTTP/1.1\r\nHost: x\r\n\r\n", up.Addr())
	if resp, err := http.ReadResponse(tbr, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v", err)
	}
	idle, ibr := dial()
	defer idle.Close()
	fmt.Fprintf(idle, "GET %s/ HTTP/1.1\r\nHost: x\r\n\r\n", web.URL)
	resp, err := http.ReadResponse(ibr, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	waiting, wbr := dial()
	defer waiting.Close()
	fmt.Fprintf(waiting, "GET %s/block HTTP/1.1\r\nHost: x\r\n\r\n", web.URL)
	<-entered

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for name, r := range map[string]io.Reader{"tunnel": tbr, "idle": ibr, "waiting": wbr} {
		if got, err := io.ReadAll(r); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s connection: %q, %v; want it closed", name, got, err)
		}
	}
}
