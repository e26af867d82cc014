package monitor_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/wgsidecar/sidecar"
	"github.com/wgsidecar/sidecar/forward"
	"github.com/wgsidecar/sidecar/internal/testnet"
	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/sidecartest"
	"github.com/wgsidecar/sidecar/wgconf"
	"github.com/wgsidecar/sidecar/wgnoise"
)

// The drop tests make real traffic that a node must drop, one test per
// reason of the monitor's table, and check that the node's monitor reports
// the drop with its number and name at the right observation point.
// TestDropReasonsCovered makes sure no reason of the table goes untested.

// dropTests names the test that triggers each reason.
var dropTests = map[monitor.DropReason]string{
	monitor.NoPeer:              "TestDropNoPeer",
	monitor.NoListener:          "TestDropNoListener",
	monitor.Malformed:           "TestDropMalformed",
	monitor.QueueFull:           "TestDropQueueFull",
	monitor.ForwardRefused:      "TestDropForwardRefused",
	monitor.PolicyRefused:       "TestDropPolicyRefused",
	monitor.NotLocal:            "TestDropNotLocal",
	monitor.SourceNotAllowed:    "TestDropFromRawPeer",
	monitor.UnsupportedProtocol: "TestDropFromRawPeer",
	monitor.ConnLimit:           "TestDropConnLimit",
	monitor.HandshakeRefused:    "TestDropHandshakeRefused",
}

func TestDropReasonsCovered(t *testing.T) {
	for _, r := range monitor.Reasons() {
		if dropTests[r] == "" {
			t.Errorf("drop reason %d (%s) has no test that triggers it", r, r)
		}
	}
}

// dropWatch listens to a node's drop events.
type dropWatch struct {
	t *testing.T
	l *monitor.Listener
}

func watchDrops(t *testing.T, n *sidecar.Node) *dropWatch {
	l := n.Monitor().Listen(8192, monitor.Filter{Kinds: []monitor.Kind{monitor.KindDrop}})
	t.Cleanup(l.Close)
	return &dropWatch{t: t, l: l}
}

// expect waits for a drop with reason r at point p whose one-line form
// contains want, while poke (if not nil) makes traffic every 200 ms. It
// checks the line names the reason by number and name, and returns it.
func (w *dropWatch) expect(r monitor.DropReason, p monitor.Point, want string, poke func()) string {
	w.t.Helper()
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	if poke != nil {
		go poke()
	}
	var seen []string
	for {
		select {
		case ev := <-w.l.Events():
			line := monitor.FormatLine(ev)
			seen = append(seen, line)
			if ev.Reason != r || ev.Point != p || !strings.Contains(line, want) {
				continue
			}
			if tag := fmt.Sprintf("drop (%d %s)", r, r); !strings.Contains(line, tag) {
				w.t.Fatalf("drop line %q lacks %q", line, tag)
			}
			j, err := monitor.FormatJSON(ev)
			if err != nil || !strings.Contains(string(j), fmt.Sprintf(`"reason":%d,"reasonName":"%s"`, r, r)) {
				w.t.Fatalf("JSON %s (%v) lacks the reason", j, err)
			}
			return line
		case <-tick.C:
			if poke != nil {
				go poke()
			}
		case <-deadline:
			w.t.Fatalf("no %s drop (%d %s) containing %q; drops seen:\n%s", p, r, r, want, strings.Join(seen, "\n"))
		}
	}
}

func dialBriefly(n *sidecar.Node, network, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c, err := n.DialContext(ctx, network, addr)
	if err != nil {
		return
	}
	defer c.Close()
	if network == "udp" {
		c.Write([]byte("hello"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		c.Read(make([]byte, 16))
	}
}

// The tests of drops decided in or next to the WireGuard device run over
// both devices (sidecartest.ForEachDevice): wgdev without WrapTUN takes the
// stack's packets in push mode, with it reads them from the tunnel device.

func TestDropNoPeer(t *testing.T) { sidecartest.ForEachDevice(t, dropNoPeer) }

func dropNoPeer(t *testing.T, own bool) {
	// Node 0's address is a /24, so its stack routes the whole subnet
	// into the tunnel, but only 10.99.0.2 has a peer.
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own, Configure: func(i int, cfg *wgconf.Config) {
		if i == 0 {
			cfg.Interface.Addresses[0] = netip.MustParsePrefix("10.99.0.1/24")
		}
	}})
	w := watchDrops(t, nodes[0])
	line := w.expect(monitor.NoPeer, monitor.ToPeer, "10.99.0.1:", func() { dialBriefly(nodes[0], "tcp", "10.99.0.77:80") })
	if !strings.Contains(line, "-> 10.99.0.77:80 tcp SYN") {
		t.Errorf("no-peer drop %q is not the SYN to 10.99.0.77:80", line)
	}
}

func TestDropNoListener(t *testing.T) {
	a, b := sidecartest.NewPair(t)
	w := watchDrops(t, b)
	w.expect(monitor.NoListener, monitor.FromPeer, "-> 10.99.0.2:9 tcp SYN", func() { dialBriefly(a, "tcp", "10.99.0.2:9") })
	w.expect(monitor.NoListener, monitor.FromPeer, "-> [fd00:99::2]:9 udp len=5", func() { dialBriefly(a, "udp", "[fd00:99::2]:9") })
	// The stack counts its drops whether or not anyone monitors.
	if d := b.Stack().Drops(netstack.DropNoListener); d < 2 {
		t.Errorf("Stack().Drops(DropNoListener) = %d after a TCP and a UDP drop", d)
	}
}

func TestDropNotLocal(t *testing.T) {
	a, b := sidecartest.NewPair(t)
	// a sends the whole /24 to b, which has only 10.99.0.2.
	peers := a.PeerConfig()
	peers[0].AllowedIPs = append(peers[0].AllowedIPs, netip.MustParsePrefix("10.99.0.0/24"))
	if err := a.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	w := watchDrops(t, b)
	w.expect(monitor.NotLocal, monitor.FromPeer, "-> 10.99.0.77:443 tcp SYN", func() { dialBriefly(a, "tcp", "10.99.0.77:443") })
}

func TestDropMalformed(t *testing.T) { sidecartest.ForEachDevice(t, dropMalformed) }

func dropMalformed(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
	a, b := nodes[0], nodes[1]
	w := watchDrops(t, b)
	// A datagram to the WireGuard port that is no WireGuard message.
	junk, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", b.ListenPort()))
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	w.expect(monitor.Malformed, monitor.FromNetwork, fmt.Sprintf("%s -> 127.0.0.1:%d udp len=11", junk.LocalAddr(), b.ListenPort()), func() {
		junk.Write([]byte("not wg, no."))
	})
	// A peer that seals a packet of no IP version: the device drops it
	// after decrypting it; the event names the peer.
	hand := newHandPeer(t, b, "10.99.0.50/32")
	line := w.expect(monitor.Malformed, monitor.FromPeer, "invalid IP version from peer(", func() {
		hand.send(make([]byte, 20)) // version 0
	})
	if short := wgconf.PublicKey(hand.public()).String()[:4]; !strings.Contains(line, short) {
		t.Errorf("invalid-version line %q does not name the peer %s…", line, short)
	}
	// The link to a stays up.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, "10.99.0.2"); err != nil {
		t.Errorf("ping after the junk: %v", err)
	}
}

// handPeer is a WireGuard peer of a node driven by hand with wgnoise over a
// loopback UDP socket: it seals whatever bytes it is given as a packet,
// which no WireGuard device would send.
type handPeer struct {
	mu   sync.Mutex
	conn *net.UDPConn
	key  wgnoise.PrivateKey
	kp   *wgnoise.Keypair
}

// newHandPeer adds a peer with the given allowed IPs to node and completes
// a handshake with it.
func newHandPeer(t *testing.T, node *sidecar.Node, allowed ...string) *handPeer {
	t.Helper()
	k, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	p := &handPeer{key: wgnoise.PrivateKey(k)}
	peer := wgconf.Peer{PublicKey: wgconf.PublicKey(p.public())}
	for _, a := range allowed {
		peer.AllowedIPs = append(peer.AllowedIPs, netip.MustParsePrefix(a))
	}
	if err := node.SetPeers(append(node.PeerConfig(), peer)); err != nil {
		t.Fatal(err)
	}
	p.conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(node.ListenPort()))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	nodeKey := wgnoise.PublicKey(node.PublicKey())
	hs, err := wgnoise.NewHandshake(wgnoise.NewIdentity(p.key), nodeKey, wgnoise.PresharedKey{})
	if err != nil {
		t.Fatal(err)
	}
	init, err := hs.CreateInitiation(1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wgnoise.NewCookies(nodeKey).Stamp(init[:], time.Now())
	if _, err := p.conn.Write(init[:]); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 2048)
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := p.conn.Read(resp)
	if err != nil {
		t.Fatalf("no handshake response: %v", err)
	}
	if err := hs.ConsumeResponse(resp[:n]); err != nil {
		t.Fatalf("handshake response: %v", err)
	}
	if p.kp, err = hs.BeginSession(time.Now()); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *handPeer) public() wgnoise.PublicKey { return p.key.PublicKey() }

// send seals pkt as one transport message and sends it.
func (p *handPeer) send(pkt []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf := make([]byte, wgnoise.TransportHeaderSize+wgnoise.PaddedLen(len(pkt))+wgnoise.TagSize)
	copy(buf[wgnoise.TransportHeaderSize:], pkt)
	ctr, _ := p.kp.NextCounter()
	p.conn.Write(buf[:p.kp.Seal(buf, len(pkt), 0, ctr)])
}

// stallTUN holds the WireGuard device's reads from the stack while
// stalled, so that the stack's queue towards the tunnel fills up.
type stallTUN struct {
	tun.Device
	mu   sync.Mutex
	gate chan struct{} // nil: not stalled
}

func (s *stallTUN) stall() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *stallTUN) release() {
	s.mu.Lock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
	s.mu.Unlock()
}

func (s *stallTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		<-g
	}
	return s.Device.Read(bufs, sizes, offset)
}

func TestDropQueueFull(t *testing.T) { sidecartest.ForEachDevice(t, dropQueueFull) }

func dropQueueFull(t *testing.T, own bool) {
	stall := &stallTUN{}
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own, NodeOptions: func(i int, o *sidecar.Options) {
		if i == 0 {
			o.WrapTUN = func(d tun.Device) tun.Device { stall.Device = d; return stall }
		}
	}})
	a := nodes[0]
	w := watchDrops(t, a)
	// gVisor holds each UDP socket to its send buffer, so it takes many
	// sockets to fill the queue; writes give up after a moment rather than
	// wait for buffer space.
	var conns []net.Conn
	for i := range 64 {
		c, err := a.Dial("udp", fmt.Sprintf("10.99.0.2:%d", 9000+i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// The device may be blocked in a Read from before the stall; one
	// packet lets it return, then the stall holds the next.
	stall.stall()
	conns[0].Write([]byte("wake"))
	defer stall.release()
	var once sync.Once
	defer func() {
		if d := a.Stack().QueueDrops(); d == 0 {
			t.Error("Stack().QueueDrops() = 0 after queue-full drops")
		}
	}()
	w.expect(monitor.QueueFull, monitor.ToPeer, "-> 10.99.0.2:9", func() {
		once.Do(func() {
			msg := make([]byte, 64)
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
				for range 1000 {
					if _, err := c.Write(msg); err != nil {
						break
					}
				}
			}
		})
	})
}

func TestDropForwardRefused(t *testing.T) {
	tcpTarget, udpTarget := testnet.ClosedAddr(t, "tcp"), testnet.ClosedAddr(t, "udp")
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		if i == 1 {
			cfg.TCPServerTunnels = []wgconf.TCPServerTunnel{{ListenPort: 8080, Target: tcpTarget}}
			cfg.UDPServerTunnels = []wgconf.UDPServerTunnel{{ListenPort: 5353, Target: udpTarget}}
		}
	}})
	a, b := nodes[0], nodes[1]
	w := watchDrops(t, b)
	w.expect(monitor.ForwardRefused, monitor.FromPeer, "tcp-forward 10.99.0.1:", func() { dialBriefly(a, "tcp", "10.99.0.2:8080") })
	w.expect(monitor.ForwardRefused, monitor.FromPeer, "-> 10.99.0.2:5353 udp len=5", func() { dialBriefly(a, "udp", "10.99.0.2:5353") })
	// A port without a forward is still no-listener, from the forward
	// server now.
	w.expect(monitor.NoListener, monitor.FromPeer, "tcp 10.99.0.1:", func() { dialBriefly(a, "tcp", "10.99.0.2:8081") })
}

func TestDropPolicyRefused(t *testing.T) {
	socksAddr := fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t, "tcp"))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t, "tcp"))
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		if i == 0 {
			cfg.Socks5 = []wgconf.Socks5{{BindAddress: socksAddr, Username: "alice", Password: "right"}}
			cfg.HTTP = []wgconf.HTTPProxy{{BindAddress: httpAddr, Username: "alice", Password: "right"}}
		}
	}})
	w := watchDrops(t, nodes[0])
	w.expect(monitor.PolicyRefused, monitor.FromApp, "socks5 127.0.0.1:", func() {
		c, err := net.Dial("tcp", socksAddr)
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte{5, 1, 2}) // version 5, one method: user/password
		io.ReadFull(c, make([]byte, 2))
		c.Write(append(append([]byte{1, 5}, "alice"...), append([]byte{5}, "wrong"...)...))
		io.ReadFull(c, make([]byte, 2))
	})
	w.expect(monitor.PolicyRefused, monitor.FromApp, "http 127.0.0.1:", func() {
		proxyURL, _ := url.Parse("http://" + httpAddr)
		client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 2 * time.Second}
		if resp, err := client.Get("http://10.99.0.2/"); err == nil {
			resp.Body.Close()
		}
		client.CloseIdleConnections()
	})
}

func TestDropConnLimit(t *testing.T) {
	a, b := sidecartest.NewPair(t)
	ln, err := b.Listen("tcp", "10.99.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	testnet.Serve(t, ln, testnet.Discard)
	f, err := forward.ListenTCP("127.0.0.1:0", "10.99.0.2:80", a, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for open, _ := f.Conns(); open == 0; open, _ = f.Conns() {
		time.Sleep(5 * time.Millisecond)
	}
	w := watchDrops(t, a)
	line := w.expect(monitor.ConnLimit, monitor.FromApp, "tcp-forward 127.0.0.1:", func() {
		if c, err := net.Dial("tcp", f.Addr().String()); err == nil {
			c.Close()
		}
	})
	if !strings.Contains(line, "limit of 1 connections") {
		t.Errorf("conn-limit line %q does not say the limit", line)
	}
}

// rawPeer is a plain wireguard-go device peered with a node, whose tunnel
// side the test writes raw IP packets into: a WireGuard peer that sends
// what no well-behaved stack would.
type rawPeer struct {
	tun *tuntest.ChannelTUN
	dev *device.Device
	key wgconf.PrivateKey
}

func newRawPeer(t *testing.T, node *sidecar.Node, allowed ...string) *rawPeer {
	t.Helper()
	key, err := wgconf.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	ct := tuntest.NewChannelTUN()
	dev := device.NewDevice(ct.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	pub := node.PublicKey()
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n",
		key.Hex(), pub.Hex(), node.ListenPort())
	if err := dev.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	if allowed != nil {
		peer := wgconf.Peer{PublicKey: key.Public()}
		for _, a := range allowed {
			peer.AllowedIPs = append(peer.AllowedIPs, netip.MustParsePrefix(a))
		}
		if err := node.SetPeers(append(node.PeerConfig(), peer)); err != nil {
			t.Fatal(err)
		}
	}
	return &rawPeer{tun: ct, dev: dev, key: key}
}

// send queues pkt for the device to encrypt and send, without waiting.
func (p *rawPeer) send(pkt []byte) {
	select {
	case p.tun.Outbound <- pkt:
	case <-time.After(time.Second):
	}
}

// ipv4Packet builds an IPv4 packet with a valid header checksum.
func ipv4Packet(src, dst string, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+len(payload))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), Protocol: uint8(proto), TTL: 64,
		SrcAddr: tcpip.AddrFromSlice(netip.MustParseAddr(src).AsSlice()),
		DstAddr: tcpip.AddrFromSlice(netip.MustParseAddr(dst).AsSlice()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(pkt[header.IPv4MinimumSize:], payload)
	return pkt
}

func TestDropFromRawPeer(t *testing.T) { sidecartest.ForEachDevice(t, dropFromRawPeer) }

func dropFromRawPeer(t *testing.T, own bool) {
	b := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})[1]
	raw := newRawPeer(t, b, "10.99.0.50/32")
	w := watchDrops(t, b)
	// A transport protocol the stack has no handler for (SCTP).
	w.expect(monitor.UnsupportedProtocol, monitor.FromPeer, "10.99.0.50 -> 10.99.0.2 proto 132", func() {
		raw.send(ipv4Packet("10.99.0.50", "10.99.0.2", 132, make([]byte, 16)))
	})
	// A TCP packet cut off inside its header.
	w.expect(monitor.Malformed, monitor.FromPeer, "10.99.0.50 -> 10.99.0.2", func() {
		raw.send(ipv4Packet("10.99.0.50", "10.99.0.2", header.TCPProtocolNumber, make([]byte, 10)))
	})
	// A source address outside what the node allows this peer:
	// WireGuard itself drops it; the event names the peer.
	line := w.expect(monitor.SourceNotAllowed, monitor.FromPeer, "from peer(", func() {
		raw.send(ipv4Packet("10.99.0.51", "10.99.0.2", header.UDPProtocolNumber, make([]byte, 16)))
	})
	pub := raw.key.Public()
	if short := pub.String()[:4]; !strings.Contains(line, short) {
		t.Errorf("source-not-allowed line %q does not name the peer %s…", line, short)
	}
}

func TestDropHandshakeRefused(t *testing.T) { sidecartest.ForEachDevice(t, dropHandshakeRefused) }

func dropHandshakeRefused(t *testing.T, own bool) {
	b := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})[1]
	// A device that knows b, but that b does not know.
	stranger := newRawPeer(t, b)
	w := watchDrops(t, b)
	line := w.expect(monitor.HandshakeRefused, monitor.FromNetwork, "from 127.0.0.1:", func() {
		stranger.send(ipv4Packet("10.99.0.60", "10.99.0.2", header.UDPProtocolNumber, make([]byte, 16)))
	})
	if _, port, _ := net.SplitHostPort(strings.TrimPrefix(line[strings.Index(line, "from "):], "from ")); port == "" {
		t.Errorf("handshake-refused line %q does not name the sender's address", line)
	}
}

// TestPhysicalTraces sees the WireGuard datagrams of a ping at the
// physical observation points of both nodes, each with its message type.
func TestPhysicalTraces(t *testing.T) { sidecartest.ForEachDevice(t, physicalTraces) }

func physicalTraces(t *testing.T, own bool) {
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{OwnWireGuard: own})
	a, b := nodes[0], nodes[1]
	l := a.Monitor().Listen(4096, monitor.Filter{Kinds: []monitor.Kind{monitor.KindTrace}})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Ping(ctx, "10.99.0.2"); err != nil {
		t.Fatal(err)
	}
	// Both ends are known: the bind learns the local address each
	// datagram arrived on, and answers from it.
	wantTo := fmt.Sprintf("127.0.0.1:%d -> 127.0.0.1:%d udp len=", a.ListenPort(), b.ListenPort())
	wantFrom := fmt.Sprintf("127.0.0.1:%d -> 127.0.0.1:%d udp len=", b.ListenPort(), a.ListenPort())
	var to, from bool
	deadline := time.After(5 * time.Second)
	for !to || !from {
		select {
		case ev := <-l.Events():
			line := monitor.FormatLine(ev)
			if ev.Point == monitor.ToNetwork && strings.Contains(line, wantTo) && strings.HasSuffix(line, "wg data") {
				to = true
			}
			if ev.Point == monitor.FromNetwork && strings.Contains(line, wantFrom) && strings.HasSuffix(line, "wg data") {
				from = true
			}
		case <-deadline:
			t.Fatalf("physical traces missing: to-network %v, from-network %v", to, from)
		}
	}
}

// TestConnRecords follows one connection through a node's SOCKS5 proxy and
// one through a tunnel-to-local forward: each shows as a trace at its app
// point when it opens and as a conn record with its bytes when it ends.
func TestConnRecords(t *testing.T) {
	socksAddr := fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t, "tcp"))
	host := testnet.HostServer(t, testnet.Echo)
	nodes := sidecartest.NewNodes(t, 2, sidecartest.Options{Configure: func(i int, cfg *wgconf.Config) {
		if i == 0 {
			cfg.Socks5 = []wgconf.Socks5{{BindAddress: socksAddr}}
		} else {
			cfg.TCPServerTunnels = []wgconf.TCPServerTunnel{{ListenPort: 7000, Target: host}}
		}
	}})
	a, b := nodes[0], nodes[1]
	la := a.Monitor().Listen(256, monitor.Filter{Kinds: []monitor.Kind{monitor.KindConn, monitor.KindTrace}, Addr: netip.MustParsePrefix("127.0.0.0/8")})
	defer la.Close()
	lb := b.Monitor().Listen(256, monitor.Filter{Kinds: []monitor.Kind{monitor.KindConn, monitor.KindTrace}, Addr: netip.MustParsePrefix("10.99.0.1/32")})
	defer lb.Close()

	// Through a's SOCKS5 proxy to b's forward (port 7000), 1000 bytes
	// each way, then a half-close.
	c, err := net.Dial("tcp", socksAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{5, 1, 0})
	io.ReadFull(c, make([]byte, 2))
	c.Write([]byte{5, 1, 0, 1, 10, 99, 0, 2, 7000 >> 8, 7000 & 0xff})
	reply := make([]byte, 10)
	if _, err := io.ReadFull(c, reply); err != nil || reply[1] != 0 {
		t.Fatalf("socks5 connect: % x, %v", reply, err)
	}
	c.Write(make([]byte, 1000))
	c.(*net.TCPConn).CloseWrite()
	if n, _ := io.Copy(io.Discard, c); n != 1000 {
		t.Fatalf("echoed %d bytes; want 1000", n)
	}
	c.Close()

	// want waits for events, in order, each containing all of its parts.
	want := func(l *monitor.Listener, name string, wants ...[]string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		var seen []string
		for _, parts := range wants {
		next:
			for {
				select {
				case ev := <-l.Events():
					line := monitor.FormatLine(ev)
					seen = append(seen, line)
					for _, p := range parts {
						if !strings.Contains(line, p) {
							continue next
						}
					}
					break next
				case <-deadline:
					t.Fatalf("%s: no event with %q; seen:\n%s", name, parts, strings.Join(seen, "\n"))
				}
			}
		}
	}
	local := c.LocalAddr().String()
	want(la, "node a", []string{"from-app trace socks5 " + local + " -> 10.99.0.2:7000 open"},
		[]string{"conn socks5 " + local + " -> 10.99.0.2:7000 ok in=1000 out=1000 dur="})
	want(lb, "node b", []string{"to-app trace tcp-forward 10.99.0.1:", " -> " + host + " open"},
		[]string{"conn tcp-forward 10.99.0.1:", " -> " + host + " ok in=1000 out=1000 dur="})
}
