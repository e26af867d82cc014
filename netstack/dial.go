package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// fullAddr converts an address and port to gVisor's form. An invalid or
// unspecified address becomes the empty address (any).
func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	fa := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return fa, proto
}

// parseDialAddr checks network against the address family of address, which
// must be a literal IP and port: name resolution is the caller's job.
func parseDialAddr(network, address string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return netip.AddrPort{}, &net.AddrError{Err: "netstack dials IP:port only", Addr: address}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	switch network {
	case "tcp", "udp":
	case "tcp4", "udp4":
		if !ap.Addr().Is4() {
			return netip.AddrPort{}, &net.AddrError{Err: "not an IPv4 address", Addr: address}
		}
	case "tcp6", "udp6":
		if !ap.Addr().Is6() {
			return netip.AddrPort{}, &net.AddrError{Err: "not an IPv6 address", Addr: address}
		}
	default:
		return netip.AddrPort{}, net.UnknownNetworkError(network)
	}
	return ap, nil
}

// DialContext connects to address ("IP:port") over network ("tcp", "tcp4",
// "tcp6", "udp", "udp4", "udp6") through the tunnel. A destination with no
// route fails at once; a refused TCP connection fails with the peer's RST.
func (ns *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := parseDialAddr(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	fa, proto := fullAddr(ap)
	switch network[:3] {
	case "tcp":
		return ns.dialTCP(ctx, fa, proto)
	default:
		var wq waiter.Queue
		ep, terr := ns.s.NewEndpoint(udp.ProtocolNumber, proto, &wq)
		if terr != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Addr: net.UDPAddrFromAddrPort(ap), Err: errors.New(terr.String())}
		}
		if terr := ep.Connect(fa); terr != nil {
			ep.Close()
			return nil, &net.OpError{Op: "dial", Net: network, Addr: net.UDPAddrFromAddrPort(ap), Err: errors.New(terr.String())}
		}
		return connectedUDP(&wq, ep), nil
	}
}

// connectedUDP wraps a connected UDP endpoint. gonet's reader waits only
// for readable events, and gVisor reports an ICMP port unreachable with an
// error event: passing that on as readable makes a blocked Read return
// "connection refused", as it would on a host socket.
func connectedUDP(wq *waiter.Queue, ep tcpip.Endpoint) *udpConn {
	onErr := waiter.NewFunctionEntry(waiter.EventErr, func(waiter.EventMask) { wq.Notify(waiter.EventIn) })
	wq.EventRegister(&onErr)
	return newUDPConn(wq, ep)
}

// ListenTCP listens for TCP connections on addr. An unspecified address
// listens on every local address; when the stack has IPv6 addresses that
// listener is dual-stack and IPv4 peers appear as IPv4-mapped addresses.
func (ns *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	fa, proto := ns.listenAddr(addr)
	l, err := gonet.ListenTCP(ns.s, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen tcp %v: %w", addr, err)
	}
	return l, nil
}

// ListenUDP opens a UDP socket on addr, with the same address rules as
// ListenTCP.
func (ns *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	fa, proto := ns.listenAddr(addr)
	var wq waiter.Queue
	ep, terr := ns.s.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr == nil {
		if terr = ep.Bind(fa); terr != nil {
			ep.Close()
		}
	}
	if terr != nil {
		return nil, fmt.Errorf("netstack: listen udp %v: %s", addr, terr)
	}
	return newUDPConn(&wq, ep), nil
}

func (ns *Stack) listenAddr(addr netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	fa, proto := fullAddr(addr)
	if fa.Addr.Len() == 0 && !addr.Addr().Is4() {
		// Any address: prefer a dual-stack IPv6 endpoint when there is
		// an IPv6 address, unless the caller asked for IPv4's "any".
		proto = ipv4.ProtocolNumber
		for _, a := range ns.addrs {
			if a.Is6() {
				proto = ipv6.ProtocolNumber
			}
		}
	}
	return fa, proto
}
