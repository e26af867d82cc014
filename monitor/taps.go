package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgsidecar/sidecar/netstack"
	"github.com/wgsidecar/sidecar/wrap"
)

// The taps are the node's observation points. Each reports to a Monitor
// what crosses it, and the drops decided where it sits; each costs the
// packet path one atomic load per batch while nobody listens.

// TapTUN wraps the tunnel device between the stack and WireGuard: Write
// carries packets from the peers (FromPeer), Read packets to them
// (ToPeer). A packet read for an address that routed says no peer takes
// is reported dropped (NoPeer): WireGuard discards it silently. routed is
// given the destination address's bytes and must be safe for concurrent
// use; it is called only while someone listens.
func TapTUN(dev tun.Device, m *Monitor, routed func(dst []byte) bool) tun.Device {
	return &tunTap{Device: dev, m: m, routed: routed}
}

type tunTap struct {
	tun.Device
	m      *Monitor
	routed func(dst []byte) bool
}

func (t *tunTap) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	if t.m.Active() {
		for i := range n {
			t.toPeer(bufs[i][offset : offset+sizes[i]])
		}
	}
	return n, err
}

func (t *tunTap) toPeer(pkt []byte) {
	t.m.Trace(ToPeer, pkt)
	if _, dst, _, perr := Inspect(pkt); perr == nil && !t.routed(dst.AsSlice()) {
		t.m.Drop(ToPeer, NoPeer, pkt)
	}
}

// TapSend is TapTUN's Read side for a stack that pushes its packets to
// WireGuard (netstack.Stack.SetSender): each packet of a batch,
// bufs[i][offset:], is reported as it goes to send.
func TapSend(send func(bufs [][]byte, offset int) error, m *Monitor, routed func(dst []byte) bool) func(bufs [][]byte, offset int) error {
	t := &tunTap{m: m, routed: routed}
	return func(bufs [][]byte, offset int) error {
		if m.Active() {
			for _, b := range bufs {
				t.toPeer(b[offset:])
			}
		}
		return send(bufs, offset)
	}
}

func (t *tunTap) Write(bufs [][]byte, offset int) (int, error) {
	if t.m.Active() {
		for _, b := range bufs {
			t.m.Trace(FromPeer, b[offset:])
		}
	}
	return t.Device.Write(bufs, offset)
}

// ObserveStack makes m hear of the packets st refuses, with the stack's
// own reasons.
func ObserveStack(st *netstack.Stack, m *Monitor) { st.SetDropObserver(stackDrops{m}) }

type stackDrops struct{ m *Monitor }

func (o stackDrops) Active() bool { return o.m.Active() }

func (o stackDrops) Dropped(d netstack.Drop, pkt []byte) {
	if r, p := StackReason(d); r != 0 {
		o.m.Drop(p, r, pkt)
	}
}

// StackReason names a refusal of the stack as a drop reason, with the
// point where it happens; 0 for a Drop it does not know.
func StackReason(d netstack.Drop) (DropReason, Point) {
	switch d {
	case netstack.DropNoListener:
		return NoListener, FromPeer
	case netstack.DropRefused:
		return ForwardRefused, FromPeer
	case netstack.DropQueueFull:
		return QueueFull, ToPeer
	case netstack.DropMalformed:
		return Malformed, FromPeer
	case netstack.DropUnsupported:
		return UnsupportedProtocol, FromPeer
	case netstack.DropNotLocal:
		return NotLocal, FromPeer
	}
	return 0, 0
}

// TapBind wraps WireGuard's UDP socket: every datagram sent (ToNetwork)
// and received (FromNetwork), wrapped in the IP and UDP headers it had on
// the wire, and a received datagram that is no WireGuard message reported
// dropped (Malformed): wireguard-go drops it unread.
func TapBind(b conn.Bind, m *Monitor) conn.Bind { return &bindTap{Bind: b, m: m} }

type bindTap struct {
	conn.Bind
	m    *Monitor
	port atomic.Uint32 // the bound port, for the local end of the headers
}

func (b *bindTap) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	b.port.Store(uint32(actual))
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		wrapped[i] = func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(packets, sizes, eps)
			if b.m.Active() {
				for i := range n {
					b.received(packets[i][:sizes[i]], eps[i])
				}
			}
			return n, err
		}
	}
	return wrapped, actual, nil
}

func (b *bindTap) received(msg []byte, ep conn.Endpoint) {
	local := netip.AddrPortFrom(ep.SrcIP(), uint16(b.port.Load()))
	pkt := UDPDatagram(wrap.EndpointAddr(ep), local, msg)
	b.m.Trace(FromNetwork, pkt)
	if WireGuardMessage(msg) == "" {
		b.m.Drop(FromNetwork, Malformed, pkt)
	}
}

func (b *bindTap) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.m.Active() {
		local := netip.AddrPortFrom(ep.SrcIP(), uint16(b.port.Load()))
		remote := wrap.EndpointAddr(ep)
		for _, msg := range bufs {
			b.m.Trace(ToNetwork, UDPDatagram(local, remote, msg))
		}
	}
	return b.Bind.Send(bufs, ep)
}

// DeviceLogger is wireguard-go's logger for a node: its messages go to log
// (the verbose ones at debug level), and those that tell of a packet the
// device dropped inside it become drop events on m. The device has no
// other way to tell of them, so the format strings matched are its own
// (device/receive.go), which wgdev writes too; the drop tests send each
// kind of packet through both devices and fail if one goes unseen.
func DeviceLogger(log *slog.Logger, m *Monitor) *device.Logger {
	wg := log.With("component", "wireguard")
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			deviceDrop(m, format, args)
			if wg.Enabled(context.Background(), slog.LevelDebug) {
				wg.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { wg.Error(fmt.Sprintf(format, args...)) },
	}
}

func deviceDrop(m *Monitor, format string, args []any) {
	if !m.Active() {
		return
	}
	switch format {
	case "IPv4 packet with disallowed source address from %v", "IPv6 packet with disallowed source address from %v":
		m.DropDetail(FromPeer, SourceNotAllowed, fmt.Sprintf("from %v", args...))
	case "Packet with invalid IP version from %v":
		m.DropDetail(FromPeer, Malformed, fmt.Sprintf("invalid IP version from %v", args...))
	case "Received invalid initiation message from %s":
		m.DropDetail(FromNetwork, HandshakeRefused, fmt.Sprintf("from %v", args...))
	}
}

// QueueDropLogger returns a function that logs, each time it is called,
// how many packets were dropped since its last call because the stack's
// queue to the WireGuard device was full (the bound that keeps a stalled
// device from holding unbounded memory); drops is the stack's running
// count (netstack.Stack.QueueDrops). The watchdog's tick calls it; it is
// not safe for concurrent use.
func QueueDropLogger(drops func() uint64, log *slog.Logger) func() {
	var logged uint64
	return func() {
		if d := drops(); d > logged {
			log.Warn("tunnel queue full: packets to the peers dropped (TCP sends them again; UDP datagrams are lost)",
				"dropped", d-logged, "queue", 4096)
			logged = d
		}
	}
}
