package netstack

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Listen listens for TCP connections on the stack's addresses. network is
// "tcp", "tcp4" or "tcp6"; address is "[ip]:port", where an empty ip
// listens on every address (IPv4's only, for "tcp4").
func (ns *Stack) Listen(network, address string) (net.Listener, error) {
	ap, err := parseListen(network, address, "tcp")
	if err != nil {
		return nil, err
	}
	return ns.ListenTCP(ap)
}

// ListenPacket opens a UDP socket on the stack's addresses, with the
// address rules of Listen ("udp", "udp4", "udp6").
func (ns *Stack) ListenPacket(network, address string) (net.PacketConn, error) {
	ap, err := parseListen(network, address, "udp")
	if err != nil {
		return nil, err
	}
	return ns.ListenUDP(ap)
}

// parseListen reads a listen address of the network family want. Only an
// IP address or nothing may stand before the port: a listener on a stack
// takes no host name.
func parseListen(network, address, want string) (netip.AddrPort, error) {
	fail := func(err error) (netip.AddrPort, error) {
		return netip.AddrPort{}, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	if strings.TrimRight(network, "46") != want {
		return fail(net.UnknownNetworkError(network))
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return fail(err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fail(fmt.Errorf("bad port %q", portStr))
	}
	var a netip.Addr
	switch {
	case host != "":
		if a, err = netip.ParseAddr(host); err != nil {
			return fail(fmt.Errorf("tunnel listeners take an IP address, not %q", host))
		}
	case strings.HasSuffix(network, "4"):
		a = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}
