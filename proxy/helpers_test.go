package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/relay"
)

// hostDialer is a Dialer on the host network that reaches loopback only:
// "localhost" is its one name, and any other address is refused.
type hostDialer struct {
	// udpBind is where ListenPacket binds; "127.0.0.1:0" when empty.
	udpBind string

	mu     sync.Mutex
	lookup []string // names resolved, in order
}

func (d *hostDialer) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	d.mu.Lock()
	d.lookup = append(d.lookup, host)
	d.mu.Unlock()
	if host != "localhost" {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	switch network {
	case "ip4":
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	case "ip6":
		return []netip.Addr{netip.IPv6Loopback()}, nil
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, nil
}

func (d *hostDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	addrs, err := d.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var firstErr error
	for _, a := range addrs {
		if !a.IsLoopback() {
			return nil, fmt.Errorf("test dialer: %v is not loopback", a)
		}
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func (d *hostDialer) ListenPacket(network, address string) (net.PacketConn, error) {
	bind := d.udpBind
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	return net.ListenPacket("udp", bind)
}

func (d *hostDialer) lookups() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.lookup...)
}

// errDialer fails every dial with err.
type errDialer struct {
	hostDialer
	err error
}

func (d *errDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return nil, d.err
}

// testLogger sends a server's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// countingHandler counts log records by message.
type countingHandler struct {
	slog.Handler
	mu     sync.Mutex
	counts map[string]int
}

func newCountingHandler(t testing.TB) *countingHandler {
	return &countingHandler{Handler: testLogger(t).Handler(), counts: map[string]int{}}
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sharedCounts{Handler: h.Handler.WithAttrs(attrs), h: h}
}

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[msg]
}

// sharedCounts is a countingHandler with attributes: it counts into its
// parent.
type sharedCounts struct {
	slog.Handler
	h *countingHandler
}

func (s *sharedCounts) Handle(ctx context.Context, r slog.Record) error {
	s.h.mu.Lock()
	s.h.counts[r.Message]++
	s.h.mu.Unlock()
	return s.Handler.Handle(ctx, r)
}

func (s *sharedCounts) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sharedCounts{Handler: s.Handler.WithAttrs(attrs), h: s.h}
}

// startSOCKS5 starts a SOCKS5 proxy on loopback and closes it when the
// test ends.
func startSOCKS5(t testing.TB, cfg SOCKS5Config, d relay.Dialer) *Server {
	t.Helper()
	if cfg.BindAddress == "" {
		cfg.BindAddress = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := ListenSOCKS5(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// startHTTP starts an HTTP proxy on loopback and closes it when the test
// ends.
func startHTTP(t testing.TB, cfg HTTPConfig, d relay.Dialer) *Server {
	t.Helper()
	if cfg.BindAddress == "" {
		cfg.BindAddress = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := ListenHTTP(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// startWeb starts an HTTP server on loopback ("127.0.0.1" or "::1") that
// answers "hello <path>" and records each request's header.
func startWeb(t testing.TB, ip string) (*httptest.Server, <-chan http.Header) {
	t.Helper()
	headers := make(chan http.Header, 16)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case headers <- r.Header.Clone():
		default:
		}
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ts.Listener.Close()
	ts.Listener = ln
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, headers
}

// port returns the port of a listener's address.
func port(a net.Addr) string {
	return strconv.Itoa(int(addrPortOf(a).Port()))
}

// tcpServer is a TCP server the test started with startTCP.
type tcpServer struct{ ln net.Listener }

// startTCP serves handle on a TCP listener at addr (see testnet.Serve),
// until the test ends.
func startTCP(t testing.TB, network, addr string, handle func(net.Conn)) *tcpServer {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, handle)
	return &tcpServer{ln: ln}
}

func (s *tcpServer) Addr() string { return s.ln.Addr().String() }

// echo copies what it reads back until EOF, then half-closes.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

// udpEcho answers each datagram with "echo:" and the datagram, until the
// test ends.
func udpEcho(t testing.TB, addr string) net.Addr {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServePackets(t, pc, func(b []byte, _ net.Addr) []byte { return append([]byte("echo:"), b...) })
	return pc.LocalAddr()
}

// curl runs the real curl (see testnet.Curl).
func curl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return testnet.Curl(t, args...)
}

// encodeAddr encodes host:port as a SOCKS5 address (ATYP onwards).
func encodeAddr(hostport string) []byte {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		panic(err)
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		panic(err)
	}
	var b []byte
	if ip, err := netip.ParseAddr(host); err == nil {
		b = appendAddr(nil, netip.AddrPortFrom(ip, uint16(p)))
		if ip.Is4In6() { // keep the mapped form on the wire
			b = append([]byte{atypIPv6}, ip.AsSlice()...)
			b = binary.BigEndian.AppendUint16(b, uint16(p))
		}
		return b
	}
	b = append([]byte{atypDomain, byte(len(host))}, host...)
	return binary.BigEndian.AppendUint16(b, uint16(p))
}

// socksError is a SOCKS5 reply other than success.
type socksError byte

func (e socksError) Error() string { return fmt.Sprintf("socks5 reply %#02x", byte(e)) }

// socksHandshake greets, authenticates when user is set, and sends a
// request with cmd for dst (encoded). It returns the reply's bound address.
func socksHandshake(c net.Conn, user, pass string, cmd byte, dst []byte) (netip.AddrPort, error) {
	method := byte(methodNoAuth)
	if user != "" {
		method = methodUserPass
	}
	if _, err := c.Write([]byte{socksVersion, 1, method}); err != nil {
		return netip.AddrPort{}, err
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("method selection: %w", err)
	}
	if b != [2]byte{socksVersion, method} {
		return netip.AddrPort{}, fmt.Errorf("method selection %x", b)
	}
	if user != "" {
		msg := append([]byte{authVersion, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := c.Write(msg); err != nil {
			return netip.AddrPort{}, err
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return netip.AddrPort{}, fmt.Errorf("auth status: %w", err)
		}
		if b != [2]byte{authVersion, authStatusSucceeded} {
			return netip.AddrPort{}, fmt.Errorf("auth status %x", b)
		}
	}
	if _, err := c.Write(append([]byte{socksVersion, cmd, 0}, dst...)); err != nil {
		return netip.AddrPort{}, err
	}
	return readReply(c)
}

// readReply reads a SOCKS5 reply; a failure code comes back as a
// socksError.
func readReply(r io.Reader) (netip.AddrPort, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("reply: %w", err)
	}
	a, err := readAddr(r, hdr[3])
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("reply address: %w", err)
	}
	if hdr[0] != socksVersion || hdr[2] != 0 {
		return netip.AddrPort{}, fmt.Errorf("bad reply header %x", hdr)
	}
	if hdr[1] != repSucceeded {
		return netip.AddrPort{}, socksError(hdr[1])
	}
	return netip.AddrPortFrom(a.ip, a.port), nil
}

// socksConnect dials target through the SOCKS5 proxy at proxyAddr.
func socksConnect(proxyAddr, target, user, pass string) (net.Conn, netip.AddrPort, error) {
	c, err := net.DialTimeout("tcp", proxyAddr, 10*time.Second)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	bnd, err := socksHandshake(c, user, pass, cmdConnect, encodeAddr(target))
	if err != nil {
		c.Close()
		return nil, netip.AddrPort{}, err
	}
	c.SetDeadline(time.Time{})
	return c, bnd, nil
}

// udpClient is a SOCKS5 UDP ASSOCIATE client.
type udpClient struct {
	ctrl  net.Conn
	pc    *net.UDPConn
	relay netip.AddrPort
}

// socksAssociate opens a UDP association through the proxy at proxyAddr,
// sending from a UDP socket bound to local.
func socksAssociate(proxyAddr, local string) (*udpClient, error) {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local)))
	if err != nil {
		return nil, err
	}
	ctrl, err := net.DialTimeout("tcp", proxyAddr, 10*time.Second)
	if err != nil {
		pc.Close()
		return nil, err
	}
	ctrl.SetDeadline(time.Now().Add(20 * time.Second))
	relay, err := socksHandshake(ctrl, "", "", cmdUDPAssociate, encodeAddr(pc.LocalAddr().String()))
	if err != nil {
		ctrl.Close()
		pc.Close()
		return nil, err
	}
	ctrl.SetDeadline(time.Time{})
	return &udpClient{ctrl: ctrl, pc: pc, relay: relay}, nil
}

// send sends payload to dst (host:port) through the association.
func (u *udpClient) send(dst string, payload []byte) error {
	return u.sendRaw(append(append([]byte{0, 0, 0}, encodeAddr(dst)...), payload...))
}

// sendRaw sends a datagram, header included, to the relay.
func (u *udpClient) sendRaw(pkt []byte) error {
	_, err := u.pc.WriteToUDPAddrPort(pkt, u.relay)
	return err
}

// recv waits up to timeout for a datagram from the relay and returns its
// sender and data.
func (u *udpClient) recv(timeout time.Duration) (netip.AddrPort, []byte, error) {
	buf := make([]byte, 65536)
	u.pc.SetReadDeadline(time.Now().Add(timeout))
	for {
		n, from, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, nil, err
		}
		if from != u.relay {
			continue
		}
		pkt := buf[:n]
		if len(pkt) < 4 || pkt[0] != 0 || pkt[1] != 0 || pkt[2] != 0 {
			return netip.AddrPort{}, nil, fmt.Errorf("bad header %x", pkt)
		}
		a, hl, err := parseAddr(pkt[3:])
		if err != nil {
			return netip.AddrPort{}, nil, err
		}
		if a.name != "" {
			return netip.AddrPort{}, nil, errors.New("reply names a domain")
		}
		return netip.AddrPortFrom(a.ip, a.port), pkt[3+hl:], nil
	}
}

func (u *udpClient) Close() {
	u.ctrl.Close()
	u.pc.Close()
}
