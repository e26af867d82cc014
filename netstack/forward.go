package netstack

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TCPRequest is a TCP connection attempt that no listener took: a SYN to a
// port of the stack's own address nobody listens on, or (in promiscuous
// mode) to an address that is not the stack's. The handler must call Accept
// or Refuse exactly once; until then the peer waits in SYN-SENT, so a
// handler can dial its target first and refuse when that fails.
type TCPRequest struct {
	// Src is the peer's end, Dst the address and port it asked for.
	Src, Dst  netip.AddrPort
	r         *tcp.ForwarderRequest
	keepalive time.Duration // the stack's
}

// Accept completes the handshake and returns the connection.
func (r *TCPRequest) Accept() (net.Conn, error) {
	var wq waiter.Queue
	ep, terr := r.r.CreateEndpoint(&wq)
	if terr != nil {
		r.r.Complete(true)
		return nil, fmt.Errorf("netstack: accept %v -> %v: %v", r.Src, r.Dst, terr)
	}
	r.r.Complete(false)
	setKeepalive(ep, r.keepalive)
	return newTCPConn(&wq, ep), nil
}

// Refuse answers with a RST: the peer sees "connection refused" at once.
func (r *TCPRequest) Refuse() { r.r.Complete(true) }

// maxTCPInFlight bounds connection attempts being decided at once; more are
// dropped (the peer retransmits its SYN).
const maxTCPInFlight = 1024

// HandleTCP sends every TCP connection attempt that no listener takes to h,
// each in its own goroutine; nil goes back to answering them with a RST.
// It may be called at any time, also while packets flow.
func (ns *Stack) HandleTCP(h func(*TCPRequest)) { ns.tcpHandler.Store(&h) }

// installHandlers puts the stack's own transport handlers in place before
// any packet flows (gVisor's SetTransportProtocolHandler is not safe to call
// later); they pass unclaimed packets to the handlers HandleTCP and
// HandleUDP set, which can change at any time.
func (ns *Stack) installHandlers() {
	fwd := tcp.NewForwarder(ns.s, 0, maxTCPInFlight, func(r *tcp.ForwarderRequest) {
		h := ns.tcpHandler.Load()
		if h == nil || *h == nil {
			r.Complete(true) // the handler went away: as a closed port
			return
		}
		id := r.ID()
		(*h)(&TCPRequest{Src: endpointAddr(id.RemoteAddress, id.RemotePort), Dst: endpointAddr(id.LocalAddress, id.LocalPort), r: r, keepalive: ns.keepalive})
	})
	ns.s.SetTransportProtocolHandler(tcp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		if h := ns.tcpHandler.Load(); h == nil || *h == nil {
			ns.observeDrop(DropNoListener, pkt)
			return false // the stack answers with a RST
		}
		return fwd.HandlePacket(id, pkt)
	})
	ns.s.SetTransportProtocolHandler(udp.ProtocolNumber, ns.handleUDP)
}

func endpointAddr(a tcpip.Address, port uint16) netip.AddrPort {
	addr, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(addr.Unmap(), port)
}

// UDPRequest is the first datagram of a UDP flow that no socket took.
type UDPRequest struct {
	// Src is the peer's end, Dst the address and port it sent to.
	Src, Dst netip.AddrPort
	r        *udp.ForwarderRequest
	ns       *Stack
	packet   []byte // the whole first datagram, IP header included
}

// Accept opens a socket for the flow, connected to the peer; the first
// datagram is the first thing it reads.
func (r *UDPRequest) Accept() (net.Conn, error) {
	var wq waiter.Queue
	ep, terr := r.r.CreateEndpoint(&wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: accept udp %v -> %v: %v", r.Src, r.Dst, terr)
	}
	return connectedUDP(&wq, ep), nil
}

// Packet returns the flow's first datagram, IP header included. A handler
// that refuses the flow may report it (the stack reports only the
// datagrams no handler saw).
func (r *UDPRequest) Packet() []byte { return r.packet }

// Unreachable tells the peer the flow's port is unreachable (ICMP or
// ICMPv6 port unreachable quoting its first datagram), after the handler
// accepted it and only then found its target refused. The accepted socket
// must be closed first.
func (r *UDPRequest) Unreachable() {
	r.ns.rejected.Store(flowID{r.Src, r.Dst}, struct{}{})
	pkt := r.packet
	// Deliver the first datagram again: with no socket for it and the
	// flow marked rejected, the stack answers it with the ICMP error.
	r.ns.link.write([][]byte{pkt}, 0)
	r.ns.rejected.Delete(flowID{r.Src, r.Dst})
}

type flowID struct{ src, dst netip.AddrPort }

// HandleUDP sends the first datagram of every UDP flow that no socket takes
// to h, synchronously on the packet path: h must decide at once (typically
// Accept and hand the socket to a goroutine). When h returns false the peer
// gets an ICMP port unreachable, as it would from a closed port; nil goes
// back to answering every such datagram so. It may be called at any time.
func (ns *Stack) HandleUDP(h func(*UDPRequest) bool) { ns.udpHandler.Store(&h) }

func (ns *Stack) handleUDP(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	h := ns.udpHandler.Load()
	if h == nil || *h == nil {
		ns.observeDrop(DropNoListener, pkt)
		return false // the stack answers with ICMP port unreachable
	}
	src, dst := endpointAddr(id.RemoteAddress, id.RemotePort), endpointAddr(id.LocalAddress, id.LocalPort)
	if _, rejected := ns.rejected.Load(flowID{src, dst}); rejected {
		ns.observeDrop(DropRefused, pkt)
		return false
	}
	var req *udp.ForwarderRequest
	udp.NewForwarder(ns.s, func(r *udp.ForwarderRequest) { req = r }).HandlePacket(id, pkt)
	view := pkt.ToView()
	packet := append([]byte(nil), view.AsSlice()...)
	view.Release()
	return (*h)(&UDPRequest{Src: src, Dst: dst, r: req, ns: ns, packet: packet})
}
