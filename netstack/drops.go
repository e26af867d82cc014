package netstack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Drop says why the stack refused a packet; see [Stack.SetDropObserver].
type Drop uint8

const (
	// DropNoListener: no socket and no handler took a TCP segment or UDP
	// datagram; the stack answers with a RST or an ICMP port unreachable.
	DropNoListener Drop = iota + 1
	// DropRefused: the first datagram of a UDP flow whose handler found
	// its target refused ([UDPRequest.Unreachable]); answered with ICMP.
	DropRefused
	// DropQueueFull: the queue from the stack to the tunnel device was
	// full; TCP retransmits, a UDP datagram is lost.
	DropQueueFull
	// DropMalformed: a packet from the tunnel whose IP or transport
	// header is cut short or inconsistent.
	DropMalformed
	// DropUnsupported: a packet from the tunnel for a protocol the stack
	// does not serve (it serves TCP, UDP and ICMP of the packet's family).
	DropUnsupported
	// DropNotLocal: a packet from the tunnel for an address the stack
	// does not take (neither its own nor, when it serves subnets or exit
	// traffic, any).
	DropNotLocal

	numDrops
)

// DropObserver is told of the packets the stack refuses. Active is asked
// first, on the packet path, and must be cheap; only when it returns true
// is the packet copied and Dropped called, with a packet the observer may
// keep. Both are called from the stack's goroutines, concurrently.
type DropObserver interface {
	Active() bool
	Dropped(d Drop, packet []byte)
}

// Drops returns how many packets the stack refused for d since it was
// made. DropNoListener, DropRefused and DropQueueFull are counted whether
// or not an observer is active; the packets from the tunnel that the stack
// refuses on sight (DropMalformed, DropUnsupported, DropNotLocal) are
// screened, and so counted, only while one is, so that the packet path
// pays nothing for them otherwise.
func (ns *Stack) Drops(d Drop) uint64 {
	if d >= numDrops {
		return 0
	}
	return ns.drops[d].Load()
}

// QueueDrops returns how many packets the stack could not queue for the
// tunnel device because its queue (4096 packets) was full: TCP sends them
// again, UDP datagrams are lost.
func (ns *Stack) QueueDrops() uint64 { return ns.Drops(DropQueueFull) }

// SetDropObserver makes o the stack's drop observer (nil for none). It may
// be called at any time.
func (ns *Stack) SetDropObserver(o DropObserver) {
	if o == nil {
		ns.dropObs.Store(nil)
		return
	}
	ns.dropObs.Store(&o)
}

// observeDrop counts pkt as refused for d and tells the observer, if one
// is set and active.
func (ns *Stack) observeDrop(d Drop, pkt *stack.PacketBuffer) {
	ns.drops[d].Add(1)
	p := ns.dropObs.Load()
	if p == nil || !(*p).Active() {
		return
	}
	view := pkt.ToView()
	b := append([]byte(nil), view.AsSlice()...)
	view.Release()
	(*p).Dropped(d, b)
}

// screenInbound tells the active observer of the packets from the tunnel
// that the stack will refuse on sight, before they are delivered (and
// dropped by it): see inboundRefusal. It costs one atomic load per batch
// while no observer is active.
func (ns *Stack) screenInbound(bufs [][]byte, offset int) {
	p := ns.dropObs.Load()
	if p == nil || !(*p).Active() {
		return
	}
	for _, b := range bufs {
		pkt := b[offset:]
		if d := ns.inboundRefusal(pkt); d != 0 {
			ns.drops[d].Add(1)
			(*p).Dropped(d, append([]byte(nil), pkt...))
		}
	}
}

// inboundRefusal says why the stack will refuse pkt, a packet from the
// tunnel, as soon as it sees it, or 0 when it will not: a header cut
// short, a transport protocol it does not serve, a destination it does not
// take. (Refusals that depend on its sockets are reported where they
// happen: DropNoListener, DropRefused.)
func (ns *Stack) inboundRefusal(pkt []byte) Drop {
	dst, proto, l4, ok := splitIP(pkt)
	if !ok {
		return DropMalformed
	}
	switch proto {
	case fragment: // reassembled first; its pieces carry no full header
	case header.TCPProtocolNumber:
		if len(l4) < header.TCPMinimumSize || int(header.TCP(l4).DataOffset()) < header.TCPMinimumSize || int(header.TCP(l4).DataOffset()) > len(l4) {
			return DropMalformed
		}
	case header.UDPProtocolNumber:
		if len(l4) < header.UDPMinimumSize {
			return DropMalformed
		}
	case header.ICMPv4ProtocolNumber, header.ICMPv6ProtocolNumber:
		if (proto == header.ICMPv4ProtocolNumber) != dst.Is4() {
			return DropUnsupported
		}
		if len(l4) < header.ICMPv6MinimumSize {
			return DropMalformed
		}
	default:
		return DropUnsupported
	}
	if dst.IsMulticast() || ns.Takes(dst) {
		return 0
	}
	return DropNotLocal
}

// fragment is splitIP's protocol for a fragment of a packet: IPv6's
// fragment header, and IPv4's number for it too.
const fragment = tcpip.TransportProtocolNumber(44)

// splitIP reads an IP packet's destination, transport protocol and
// transport bytes, following IPv6 extension headers the stack reads past
// (hop-by-hop, routing, destination options). ok is false for a header cut
// short or inconsistent.
func splitIP(pkt []byte) (dst netip.Addr, proto tcpip.TransportProtocolNumber, l4 []byte, ok bool) {
	if len(pkt) == 0 {
		return dst, 0, nil, false
	}
	switch pkt[0] >> 4 {
	case 4:
		ip := header.IPv4(pkt)
		hl := int(ip.HeaderLength())
		if len(pkt) < header.IPv4MinimumSize || hl < header.IPv4MinimumSize || hl > len(pkt) {
			return dst, 0, nil, false
		}
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		if ip.More() || ip.FragmentOffset() != 0 {
			return dst, fragment, nil, true
		}
		return dst, ip.TransportProtocol(), pkt[hl:], true
	case 6:
		if len(pkt) < header.IPv6MinimumSize {
			return dst, 0, nil, false
		}
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		next, rest := pkt[6], pkt[header.IPv6MinimumSize:]
		for next == 0 || next == 43 || next == 60 { // extension headers: 8-byte units after the first 8
			if len(rest) < 8 || len(rest) < 8+8*int(rest[1]) {
				return dst, 0, nil, false
			}
			next, rest = rest[0], rest[8+8*int(rest[1]):]
		}
		return dst, tcpip.TransportProtocolNumber(next), rest, true
	}
	return dst, 0, nil, false
}
