package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/wgsidecar/sidecar/monitor"
	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/wrap"
)

// Monitor returns the node's live event stream: packets passing from and
// to the peers (the tunnel device) and from and to the network (the UDP
// socket), packets dropped with their reasons, and the connections of the
// proxies and forwards. Listening costs the packet path one atomic load
// per batch while nobody listens.
func (n *Node) Monitor() *monitor.Monitor { return &n.mon }

// traceTUN reports every IP packet that crosses the tunnel device to the
// node's monitor (Write carries packets from the peers, Read packets to
// them), and the packets it knows will be dropped after it: those no peer
// will take, and those the stack will refuse.
type traceTUN struct {
	tun.Device
	n *Node
}

func (t traceTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	if mon := &t.n.mon; mon.Active() {
		for i := range n {
			pkt := bufs[i][offset : offset+sizes[i]]
			mon.Trace(monitor.ToPeer, pkt)
			if _, dst, _, perr := monitor.Inspect(pkt); perr == nil && !t.n.peerCovers(dst) {
				mon.Drop(monitor.ToPeer, monitor.NoPeer, pkt)
			}
		}
	}
	return n, err
}

func (t traceTUN) Write(bufs [][]byte, offset int) (int, error) {
	if mon := &t.n.mon; mon.Active() {
		for _, b := range bufs {
			pkt := b[offset:]
			mon.Trace(monitor.FromPeer, pkt)
			if r := t.n.inboundVerdict(pkt); r != 0 {
				mon.Drop(monitor.FromPeer, r, pkt)
			}
		}
	}
	return t.Device.Write(bufs, offset)
}

// peerCovers reports whether a peer's AllowedIPs cover a: WireGuard drops
// a packet to an address none covers. (It runs only while someone
// monitors.)
func (n *Node) peerCovers(a netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.peers {
		for _, pfx := range p.AllowedIPs {
			if pfx.Contains(a) {
				return true
			}
		}
	}
	return false
}

// inboundVerdict predicts whether the stack will refuse pkt, a packet from
// a peer, before any socket sees it: 0 if not, else why. (The stack itself
// tells of the refusals that depend on its sockets; see dropObserver.)
func (n *Node) inboundVerdict(pkt []byte) monitor.DropReason {
	_, dst, proto, err := monitor.Inspect(pkt)
	if err != nil {
		return monitor.Malformed
	}
	switch proto {
	case uint8(header.TCPProtocolNumber), uint8(header.UDPProtocolNumber):
	case uint8(header.ICMPv4ProtocolNumber):
		if dst.Is6() {
			return monitor.UnsupportedProtocol
		}
	case uint8(header.ICMPv6ProtocolNumber):
		if dst.Is4() {
			return monitor.UnsupportedProtocol
		}
	case 0, 43, 44, 60: // IPv6 extension headers: the stack reads past them
		if dst.Is4() {
			return monitor.UnsupportedProtocol
		}
	default:
		return monitor.UnsupportedProtocol
	}
	if dst.IsMulticast() || n.stack.Takes(dst) {
		return 0
	}
	return monitor.NotLocal
}

// dropObserver turns the stack's refusals into monitor drop events.
type dropObserver struct{ mon *monitor.Monitor }

func (o dropObserver) Active() bool { return o.mon.Active() }

func (o dropObserver) Dropped(d netstack.Drop, pkt []byte) {
	switch d {
	case netstack.DropNoListener:
		o.mon.Drop(monitor.FromPeer, monitor.NoListener, pkt)
	case netstack.DropRefused:
		o.mon.Drop(monitor.FromPeer, monitor.ForwardRefused, pkt)
	case netstack.DropQueueFull:
		o.mon.Drop(monitor.ToPeer, monitor.QueueFull, pkt)
	}
}

// traceBind reports every UDP datagram the WireGuard device sends and
// receives to the node's monitor (to-network, from-network), wrapped in
// the IP and UDP headers it had on the wire, and drops the datagrams that
// are no WireGuard message.
type traceBind struct {
	conn.Bind
	mon  *monitor.Monitor
	port atomic.Uint32 // the bound port, for the local end of the headers
}

func (b *traceBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	b.port.Store(uint32(actual))
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		wrapped[i] = func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(packets, sizes, eps)
			if b.mon.Active() {
				for i := range n {
					b.received(packets[i][:sizes[i]], eps[i])
				}
			}
			return n, err
		}
	}
	return wrapped, actual, nil
}

func (b *traceBind) received(msg []byte, ep conn.Endpoint) {
	local := netip.AddrPortFrom(ep.SrcIP(), uint16(b.port.Load()))
	pkt := monitor.UDPDatagram(wrap.EndpointAddr(ep), local, msg)
	b.mon.Trace(monitor.FromNetwork, pkt)
	if monitor.WireGuardMessage(msg) == "" { // wireguard-go drops it unread
		b.mon.Drop(monitor.FromNetwork, monitor.Malformed, pkt)
	}
}

func (b *traceBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.mon.Active() {
		local := netip.AddrPortFrom(ep.SrcIP(), uint16(b.port.Load()))
		remote := wrap.EndpointAddr(ep)
		for _, msg := range bufs {
			b.mon.Trace(monitor.ToNetwork, monitor.UDPDatagram(local, remote, msg))
		}
	}
	return b.Bind.Send(bufs, ep)
}

// deviceDrops maps wireguard-go's log lines about packets it dropped inside
// the device to monitor events. The format strings are wireguard-go's own
// (device/receive.go); a test sends each kind of packet and fails if one
// goes unseen.
func deviceDrops(mon *monitor.Monitor, format string, args []any) {
	if !mon.Active() {
		return
	}
	switch format {
	case "IPv4 packet with disallowed source address from %v", "IPv6 packet with disallowed source address from %v":
		mon.DropDetail(monitor.FromPeer, monitor.SourceNotAllowed, fmt.Sprintf("from %v", args...))
	case "Packet with invalid IP version from %v":
		mon.DropDetail(monitor.FromPeer, monitor.Malformed, fmt.Sprintf("invalid IP version from %v", args...))
	case "Received invalid initiation message from %s":
		mon.DropDetail(monitor.FromNetwork, monitor.HandshakeRefused, fmt.Sprintf("from %v", args...))
	}
}

// monitorQueue bounds each control-socket listener's backlog.
const monitorQueue = 4096

// Stream serves the control socket's monitor: one JSON-encoded
// monitor.Event a line. The query may filter by type (kind=trace,drop,
// conn), src, dst and addr (a prefix or an address).
func (a controlAPI) Stream(ctx context.Context, q map[string][]string, emit func([]byte) error) error {
	f, err := monitorFilter(q)
	if err != nil {
		return err
	}
	l := a.n.mon.Listen(monitorQueue, f)
	defer l.Close()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-l.Events():
			if !ok {
				return nil
			}
			line, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if err := emit(line); err != nil {
				return err
			}
		}
	}
}

// monitorFilter reads a filter from a query string.
func monitorFilter(q map[string][]string) (monitor.Filter, error) {
	var f monitor.Filter
	for _, v := range q["kind"] {
		for _, name := range strings.Split(v, ",") {
			k, ok := map[string]monitor.Kind{"trace": monitor.KindTrace, "drop": monitor.KindDrop, "conn": monitor.KindConn}[name]
			if !ok {
				return f, fmt.Errorf("unknown event type %q (want trace, drop or conn)", name)
			}
			f.Kinds = append(f.Kinds, k)
		}
	}
	for key, dst := range map[string]*netip.Prefix{"src": &f.Src, "dst": &f.Dst, "addr": &f.Addr} {
		if v := q[key]; len(v) > 0 {
			p, err := parsePrefix(v[0])
			if err != nil {
				return f, fmt.Errorf("%s: %w", key, err)
			}
			*dst = p
		}
	}
	return f, nil
}

// parsePrefix takes a prefix or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	return netip.ParsePrefix(s)
}
