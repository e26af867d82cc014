package systest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/internal/leaktest"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/proxy"
	"github.com/wgsidecar/sidecar/sidecartest"
)

// forEachDevice runs f once per WireGuard device (sidecartest.Devices),
// one subtest after the other: each checks for leaked goroutines, which
// parallel subtests would see in each other.
func forEachDevice(t *testing.T, f func(t *testing.T, own bool)) {
	for _, d := range sidecartest.Devices {
		t.Run(d.Name, func(t *testing.T) { f(t, d.Own) })
	}
}

// proxyPeers starts two nodes, on wgdev if own is set; node b serves HTTP on port 80 ("b answers
// HOST") and a UDP echo on port 7 ("echo:DATA") on both its tunnel
// addresses. The test fails if anything is left running at its end.
func proxyPeers(t *testing.T, own bool) (a, b *sidecar.Node) {
	t.Helper()
	t.Cleanup(leaktest.Check(t)) // registered first, so it runs last
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
	a, b = nodes[0], nodes[1]
	var wg sync.WaitGroup
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "b answers %s", r.Host)
	})}
	wg.Go(func() { srv.Serve(ln) })
	pc, err := b.ListenPacket("udp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServePackets(t, pc, func(b []byte, _ net.Addr) []byte { return append([]byte("echo:"), b...) })
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return a, b
}

// socksAddrBytes encodes ap as a SOCKS5 address (ATYP, address, port).
func socksAddrBytes(ap netip.AddrPort) []byte {
	b := []byte{0x01}
	if ap.Addr().Is6() {
		b[0] = 0x04
	}
	b = append(b, ap.Addr().AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// socksRequest greets the SOCKS5 proxy on c without authentication and
// sends a request; it returns the reply code and bound address.
func socksRequest(c net.Conn, cmd byte, dst netip.AddrPort) (byte, netip.AddrPort, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	msg := append([]byte{5, 1, 0, 5, cmd, 0}, socksAddrBytes(dst)...)
	if _, err := c.Write(msg); err != nil {
		return 0, netip.AddrPort{}, err
	}
	var hdr [2 + 4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	if hdr[0] != 5 || hdr[1] != 0 || hdr[2] != 5 {
		return 0, netip.AddrPort{}, fmt.Errorf("bad answer %x", hdr)
	}
	n := 4
	if hdr[5] == 0x04 {
		n = 16
	}
	rest := make([]byte, n+2)
	if _, err := io.ReadFull(c, rest); err != nil {
		return 0, netip.AddrPort{}, err
	}
	ip, _ := netip.AddrFromSlice(rest[:n])
	return hdr[3], netip.AddrPortFrom(ip, binary.BigEndian.Uint16(rest[n:])), nil
}

func TestProxySOCKS5ThroughTunnel(t *testing.T) { forEachDevice(t, proxySOCKS5ThroughTunnel) }

func proxySOCKS5ThroughTunnel(t *testing.T, own bool) {
	a, _ := proxyPeers(t, own)
	s := serveProxy(t)(proxy.ListenSOCKS5(proxy.SOCKS5Config{BindAddress: "127.0.0.1:0"}, a))
	for _, host := range []string{"10.99.0.2", "[fd00:99::2]"} {
		out, err := testnet.Curl(t, "--socks5-hostname", s.Addr().String(), "http://"+host+"/")
		if err != nil {
			t.Fatal(err)
		}
		if want := "b answers " + host; out != want {
			t.Errorf("got %q; want %q", out, want)
		}
	}

	// A port nobody listens on: b's stack answers with a RST, which the
	// client sees as "connection refused" (0x05); an address no peer
	// routes is unreachable.
	for _, tc := range []struct {
		dst  netip.AddrPort
		want byte
	}{
		{netip.MustParseAddrPort("10.99.0.2:81"), 0x05},
		{netip.MustParseAddrPort("[fd00:99::2]:81"), 0x05},
		{netip.MustParseAddrPort("10.98.0.1:80"), 0x04},
	} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		rep, _, err := socksRequest(c, 0x01, tc.dst)
		c.Close()
		if err != nil || rep != tc.want {
			t.Errorf("CONNECT %v: reply %#02x, %v; want %#02x", tc.dst, rep, err, tc.want)
		}
	}
	s.Close()
}

// connRecords collects the connection records a node's monitor reports
// while the test runs; take returns those seen so far.
func connRecords(t *testing.T, n *sidecar.Node) (take func() []monitor.ConnRecord) {
	l := n.Monitor().Listen(1024, monitor.Filter{Kinds: []monitor.Kind{monitor.KindConn}})
	var mu sync.Mutex
	var recs []monitor.ConnRecord
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range l.Events() {
			if ev.Conn != nil {
				mu.Lock()
				recs = append(recs, *ev.Conn)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return func() []monitor.ConnRecord {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(recs)
	}
}

// waitRecord waits for a record that ok accepts.
func waitRecord(t *testing.T, take func() []monitor.ConnRecord, what string, ok func(monitor.ConnRecord) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := take()
		if slices.ContainsFunc(recs, ok) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection record: %s; records: %+v", what, recs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxyHTTPThroughTunnel(t *testing.T) { forEachDevice(t, proxyHTTPThroughTunnel) }

func proxyHTTPThroughTunnel(t *testing.T, own bool) {
	a, _ := proxyPeers(t, own)
	s := serveProxy(t)(proxy.ListenHTTP(proxy.HTTPConfig{BindAddress: "127.0.0.1:0", Username: "u", Password: "p"}, a))
	records := connRecords(t, a)
	proxyURL := "http://u:p@" + s.Addr().String()
	for _, host := range []string{"10.99.0.2", "[fd00:99::2]"} {
		for _, mode := range []string{"forward", "connect"} {
			args := []string{"-x", proxyURL, "http://" + host + "/"}
			if mode == "connect" {
				args = append([]string{"--proxytunnel"}, args...)
			}
			out, err := testnet.Curl(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if want := "b answers " + host; out != want {
				t.Errorf("%s: got %q; want %q", mode, out, want)
			}
		}
	}
	out, err := testnet.Curl(t, "-x", proxyURL, "-w", " %{http_code}", "http://10.99.0.2:81/")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix([]byte(out), []byte(" 502")) || !bytes.Contains([]byte(out), []byte("refused")) {
		t.Errorf("refused port: %q; want 502 with the reason", out)
	}
	// Each request and tunnel left a record with its bytes.
	body := uint64(len("b answers 10.99.0.2"))
	waitRecord(t, records, "forwarded request", func(r monitor.ConnRecord) bool {
		return r.Kind == "http" && r.To == "10.99.0.2" && r.Verdict == "ok 200" && r.BytesIn == body && r.BytesOut == 0
	})
	waitRecord(t, records, "CONNECT tunnel", func(r monitor.ConnRecord) bool {
		return r.Kind == "http-connect" && r.To == "10.99.0.2:80" && r.Verdict == "ok" && r.BytesIn > body && r.BytesOut > 0
	})
	waitRecord(t, records, "refused port", func(r monitor.ConnRecord) bool {
		return r.Kind == "http" && r.To == "10.99.0.2:81" && strings.HasPrefix(r.Verdict, "error: ")
	})
	s.Close()
}

func TestProxySOCKS5UDPThroughTunnel(t *testing.T) { forEachDevice(t, proxySOCKS5UDPThroughTunnel) }

func proxySOCKS5UDPThroughTunnel(t *testing.T, own bool) {
	a, _ := proxyPeers(t, own)
	s := serveProxy(t)(proxy.ListenSOCKS5(proxy.SOCKS5Config{BindAddress: "127.0.0.1:0"}, a))
	records := connRecords(t, a)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctrl, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	rep, relay, err := socksRequest(ctrl, 0x03, pc.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil || rep != 0 {
		t.Fatalf("UDP ASSOCIATE: reply %#02x, %v", rep, err)
	}
	buf := make([]byte, 2048)
	for _, dst := range []netip.AddrPort{
		netip.MustParseAddrPort("10.99.0.2:7"),
		netip.MustParseAddrPort("[fd00:99::2]:7"),
	} {
		msg := "hello " + dst.String()
		pkt := append(append([]byte{0, 0, 0}, socksAddrBytes(dst)...), msg...)
		// The first datagrams may meet a WireGuard handshake in
		// progress; send again until an answer comes.
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := pc.WriteToUDPAddrPort(pkt, relay); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(time.Second))
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err == nil {
				if from != relay {
					t.Fatalf("answer from %v, not the relay %v", from, relay)
				}
				want := append(append([]byte{0, 0, 0}, socksAddrBytes(dst)...), "echo:"+msg...)
				if !bytes.Equal(buf[:n], want) {
					t.Errorf("got %q; want %q", buf[:n], want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer from %v: %v", dst, err)
			}
		}
	}
	from := ctrl.LocalAddr().String()
	ctrl.Close()
	// The association's record: the datagrams' payloads each way (sent
	// again while a handshake was in progress, so at least one of each).
	waitRecord(t, records, "UDP association", func(r monitor.ConnRecord) bool {
		return r.Kind == "socks5-udp" && r.From == from && r.Verdict == "ok" &&
			r.BytesOut >= uint64(len("hello 10.99.0.2:7")+len("hello [fd00:99::2]:7")) && r.BytesIn >= r.BytesOut
	})
	s.Close()
}

// TestProxySOCKS5HalfCloseThroughTunnel: the client shuts down writing
// after its request; the server in the tunnel answers only after seeing
// that end, and the client receives the whole answer.
func TestProxySOCKS5HalfCloseThroughTunnel(t *testing.T) {
	forEachDevice(t, proxySOCKS5HalfCloseThroughTunnel)
}

func proxySOCKS5HalfCloseThroughTunnel(t *testing.T, own bool) {
	a, b := proxyPeers(t, own)
	answer := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	ln, err := b.Listen("tcp", ":9")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		if q, err := io.ReadAll(c); err == nil && string(q) == "question" {
			c.Write(answer)
		}
	})
	s := serveProxy(t)(proxy.ListenSOCKS5(proxy.SOCKS5Config{BindAddress: "127.0.0.1:0"}, a))
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rep, _, err := socksRequest(c, 0x01, netip.MustParseAddrPort("[fd00:99::2]:9")); err != nil || rep != 0 {
		t.Fatalf("CONNECT: reply %#02x, %v", rep, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "question")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, answer) {
		t.Errorf("got %d bytes; want the whole %d-byte answer", len(got), len(answer))
	}
	s.Close()
}

// TestProxyHTTPCloseWithTunnel closes the proxy while a CONNECT tunnel
// through the node is open: the client sees the end, nothing is left.
func TestProxyHTTPCloseWithTunnel(t *testing.T) { forEachDevice(t, proxyHTTPCloseWithTunnel) }

func proxyHTTPCloseWithTunnel(t *testing.T, own bool) {
	a, _ := proxyPeers(t, own)
	s := serveProxy(t)(proxy.ListenHTTP(proxy.HTTPConfig{BindAddress: "127.0.0.1:0"}, a))
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "CONNECT 10.99.0.2:80 HTTP/1.1\r\nHost: 10.99.0.2:80\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v", err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: tunnel\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "b answers tunnel" {
		t.Errorf("through the tunnel: %q", body)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after Close: %q, %v; want the tunnel closed", rest, err)
	}
}

// serveProxy takes a proxy's Listen results: it fails the test on an error
// and otherwise returns the server, closed when the test ends.
func serveProxy(t *testing.T) func(*proxy.Server, error) *proxy.Server {
	return func(s *proxy.Server, err error) *proxy.Server {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}
