package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// FuzzSOCKS5Request feeds arbitrary bytes to the server side of the
// SOCKS5 handshake (greeting, authentication, request), with and without
// credentials configured, and checks what it answers.
func FuzzSOCKS5Request(f *testing.F) {
	const (
		greet    = "\x05\x01\x00"
		greetPW  = "\x05\x02\x00\x02"
		authOK   = "\x01\x01u\x01p"
		v4target = "\x01\x7f\x00\x00\x01\x00\x50"
	)
	for _, seed := range []struct {
		in   string
		auth bool
	}{
		{greet + "\x05\x01\x00" + v4target, false},
		{greet + "\x05\x03\x00" + v4target, false},
		{greet + "\x05\x01\x00\x03\x0bexample.com\x01\xbb", false},
		{greet + "\x05\x01\x00\x04" + strings.Repeat("\x00", 15) + "\x01\x00\x50", false},
		{greet + "\x05\x02\x00" + v4target, false},
		{greet + "\x05\x01\x00\x05", false},
		{greet + "\x05\x01\x00\x03\x00\x00\x50", false},
		{greetPW + authOK + "\x05\x01\x00" + v4target, true},
		{greetPW + "\x01\x01u\x01x", true},
		{greet + "\x05\x01\x00" + v4target, true},
		{greetPW + authOK + "\x05\x01\x00" + v4target, false},
		{"\x05\x00", false},
		{"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", false},
		{"GET / HTTP/1.1\r\n\r\n", false},
		{"", false},
	} {
		f.Add([]byte(seed.in), seed.auth)
	}
	f.Fuzz(func(t *testing.T, data []byte, auth bool) {
		p := &socks5{auth: auth, user: sha256.Sum256([]byte("u")), pass: sha256.Sum256([]byte("p"))}
		var out bytes.Buffer
		in := bytes.NewReader(data)
		req, err := p.handshake(struct {
			io.Reader
			io.Writer
		}{in, &out})

		// What the proxy wrote: a method selection, then perhaps an
		// authentication status, then perhaps a failure reply.
		o := out.Bytes()
		if len(o) == 0 {
			if err == nil {
				t.Fatal("handshake succeeded without a method selection")
			}
			return
		}
		if len(o) < 2 || o[0] != socksVersion {
			t.Fatalf("method selection %x", o)
		}
		method := o[1]
		if method != methodNoAuth && method != methodUserPass && method != methodNoAcceptable {
			t.Fatalf("method %#x chosen", method)
		}
		if auth && method == methodNoAuth {
			t.Fatal("no authentication accepted although credentials are configured")
		}
		o = o[2:]
		if method == methodUserPass && len(o) > 0 {
			if len(o) < 2 || o[0] != authVersion || o[1] > authStatusFailed {
				t.Fatalf("auth status %x", o)
			}
			if o[1] == authStatusFailed && (err == nil || len(o) != 2) {
				t.Fatalf("failed authentication went on: %x, %v", o, err)
			}
			o = o[2:]
		}
		if len(o) > 0 {
			// A failure reply: VER REP RSV 0.0.0.0:0.
			if err == nil || len(o) != 10 || o[0] != socksVersion || o[1] == repSucceeded || !bytes.Equal(o[2:], []byte{0, atypIPv4, 0, 0, 0, 0, 0, 0}) {
				t.Fatalf("reply %x after %v", o, err)
			}
		}
		if err != nil {
			return
		}
		if method == methodNoAcceptable {
			t.Fatal("handshake succeeded with no acceptable method")
		}
		if req.cmd != cmdConnect && req.cmd != cmdUDPAssociate {
			t.Fatalf("command %d returned", req.cmd)
		}
		if req.dst.name == "" && !req.dst.ip.IsValid() {
			t.Fatal("no destination")
		}
		if len(req.dst.name) > 255 || req.dst.ip.Is4In6() {
			t.Fatalf("destination %v", req.dst)
		}
		if _, _, err := net.SplitHostPort(req.dst.String()); err != nil {
			t.Fatalf("destination %q does not split: %v", req.dst.String(), err)
		}
		// Nothing past the request is read: it belongs to the relay.
		if in.Len() > 0 && req.dst.name == "" && req.dst.ip.Is4() {
			rest := data[len(data)-in.Len()-2:]
			if rest[0] != byte(req.dst.port>>8) || rest[1] != byte(req.dst.port) {
				t.Fatalf("read past the request: %x left", data[len(data)-in.Len():])
			}
		}
	})
}

// mapDialer sends every dial to one address.
type mapDialer struct{ to string }

func (d mapDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.to)
}

func (d mapDialer) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func (d mapDialer) ListenPacket(network, address string) (net.PacketConn, error) {
	return nil, errors.New("no UDP here")
}

// FuzzHTTPProxyRequest sends arbitrary bytes to the HTTP proxy as a
// client would, over loopback TCP (a pipe cannot half-close), and checks
// that the proxy answers with HTTP or closes, and never hangs. Every
// destination leads to one upstream server.
func FuzzHTTPProxyRequest(f *testing.F) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		io.WriteString(w, r.Method+" "+r.URL.String()+" "+http.StatusText(int(n%600)))
	}))
	f.Cleanup(upstream.Close)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("PROXY_FUZZ_LOG") != "" {
		log = testLogger(f)
	}
	s, err := ListenHTTP(HTTPConfig{BindAddress: "127.0.0.1:0", Logger: log}, mapDialer{to: upstream.Listener.Addr().String()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })

	for _, seed := range []string{
		"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\nGET http://example.com/b HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
		"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello",
		"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 50\r\n\r\nshort",
		"PUT http://example.com/ HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT example.com HTTP/1.1\r\n\r\n",
		"CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"GET /relative HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET http://example.com/ HTTP/1.0\r\n\r\n",
		"GET http://u:p@example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Te\r\nTe: trailers\r\nUpgrade: h2c\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET ftp://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX: " + strings.Repeat("y", 70<<10) + "\r\n\r\n",
		"GARBAGE\r\n\r\n",
		"\x05\x01\x00",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		<-done
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the proxy neither answered nor closed within 10 s; got %.200q", got)
		}
		if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.")) {
			t.Fatalf("answer is not HTTP: %.200q", got)
		}
	})
}
