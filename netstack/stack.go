// Package netstack owns the virtual layer: a gVisor TCP/IP stack that runs
// in user space, the tun.Device through which wireguard-go exchanges IP
// packets with it, and the socket-style API (dial, listen, ping) that the
// rest of the sidecar uses to reach the tunnel.
//
// Unlike wireguard-go's tun/netstack, the stack is exposed (forwarders
// attach to it), packets move in batches, every packet buffer is returned to
// gVisor's pools, and TCP is tuned for throughput.
//
// netstack knows nothing of WireGuard keys, configuration files, counting or
// logging; it deals in IP addresses, prefixes and packets. It decides which
// packets it refuses and says so to a DropObserver (drops.go), with a
// count per reason.
package netstack

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// nicID is the stack's only NIC: the tunnel.
const nicID tcpip.NICID = 1

// DefaultMTU is WireGuard's usual tunnel MTU.
const DefaultMTU = 1420

// TCP buffer ranges. Receive-buffer auto-tuning grows each connection's
// window up to the maximum as its bandwidth-delay product asks. 2 MiB (about
// 170 Mbit/s at 100 ms) rather than more: gVisor drops a segment when the
// bytes queued for a connection exceed its receive buffer in memory terms,
// which larger windows invited on a busy machine; each such loss sent the
// pinned gVisor into slow SACK recovery (8 MiB: four streams 85 MB/s with
// up to 140k allocs per MiB; 2 MiB: 204 MB/s and 2.8k allocs per MiB).
const (
	tcpReceiveBufferDefault = 1 << 20
	tcpReceiveBufferMax     = 2 << 20
	tcpSendBufferDefault    = 1 << 20
	tcpSendBufferMax        = 6 << 20
)

// Options configure a Stack.
type Options struct {
	// Addresses are the stack's own tunnel addresses, IPv4 and/or IPv6.
	Addresses []netip.Addr
	// MTU of the tunnel; DefaultMTU when zero.
	MTU int
	// Routes are the prefixes reachable through the tunnel. Packets to any
	// other address fail at once with "no route". Nil routes everything of
	// each address family that has a local address.
	Routes []netip.Prefix
	// Promiscuous makes the stack take packets for any destination and
	// answer from it (to serve subnets or exit traffic, with HandleTCP and
	// HandleUDP). Such a stack cannot reach its own addresses: gVisor's
	// local delivery would take every source address for its own.
	Promiscuous bool
	// Keepalive is the silence after which a TCP connection the stack
	// dials, or accepts for HandleTCP, starts probing its peer: a probe
	// every Keepalive/3, and the third unanswered (or data unacknowledged
	// for as long) ends it, so a connection to a peer that went away ends
	// within 2×Keepalive. DefaultKeepalive when zero; negative turns it
	// off.
	Keepalive time.Duration
}

// Stack is a user-space TCP/IP stack joined to one tun.Device.
//
// All methods are safe for concurrent use. Close releases the stack; the
// Device must be closed by its owner (wireguard-go closes it when its
// device.Device is closed) or by Close.
type Stack struct {
	s         *stack.Stack
	link      *link
	addrs     []netip.Addr
	keepalive time.Duration // see Options.Keepalive; <= 0 off

	mu     sync.Mutex
	closed bool

	// rejected holds UDP flows (flowID) whose first datagram is being
	// delivered again to draw an ICMP error; see UDPRequest.Unreachable.
	rejected sync.Map
	// The handlers of unclaimed TCP and UDP (HandleTCP, HandleUDP).
	tcpHandler atomic.Pointer[func(*TCPRequest)]
	udpHandler atomic.Pointer[func(*UDPRequest) bool]
	// dropObs is told of refused packets; see SetDropObserver.
	dropObs atomic.Pointer[DropObserver]
	drops   [numDrops]atomic.Uint64 // by Drop; see Drops
}

// New creates a stack with the given addresses.
func New(opts Options) (*Stack, error) {
	if len(opts.Addresses) == 0 {
		return nil, errors.New("netstack: no local address")
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("netstack: MTU %d out of range", mtu)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// Local delivery and promiscuous mode do not mix: with both,
		// gVisor counts every packet's source as one of its own
		// addresses and drops the packet.
		HandleLocal: !opts.Promiscuous,
	})
	ns := &Stack{s: s, link: newLink(mtu), keepalive: opts.Keepalive}
	if ns.keepalive == 0 {
		ns.keepalive = DefaultKeepalive
	}
	ns.link.refused = ns.observeDrop
	ns.link.screen = ns.screenInbound
	if err := tuneTCP(s); err != nil {
		s.Close()
		return nil, err
	}
	ns.installHandlers()
	if terr := s.CreateNIC(nicID, ns.link); terr != nil {
		s.Close()
		return nil, fmt.Errorf("netstack: create NIC: %v", terr)
	}
	for _, a := range opts.Addresses {
		a = a.Unmap()
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if terr := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); terr != nil {
			ns.Close()
			return nil, fmt.Errorf("netstack: add address %v: %v", a, terr)
		}
		ns.addrs = append(ns.addrs, a)
	}
	if opts.Promiscuous {
		if terr := s.SetPromiscuousMode(nicID, true); terr != nil {
			ns.Close()
			return nil, fmt.Errorf("netstack: promiscuous mode: %v", terr)
		}
		if terr := s.SetSpoofing(nicID, true); terr != nil {
			ns.Close()
			return nil, fmt.Errorf("netstack: spoofing: %v", terr)
		}
	}
	ns.SetRoutes(opts.Routes)
	return ns, nil
}

// tuneTCP applies the stack-wide TCP settings: SACK on; RACK loss detection
// off, since the pinned gVisor's RACK makes spurious retransmissions and
// collapses the window under load; Reno congestion control, the most
// exercised one in gVisor; larger, auto-tuned buffers.
func tuneTCP(s *stack.Stack) error {
	sack := tcpip.TCPSACKEnabled(true)
	recovery := tcpip.TCPRecovery(0)
	cc := tcpip.CongestionControlOption("reno")
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpReceiveBufferDefault, Max: tcpReceiveBufferMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpSendBufferDefault, Max: tcpSendBufferMax}
	for name, opt := range map[string]tcpip.SettableTransportProtocolOption{
		"SACK": &sack, "recovery": &recovery, "congestion control": &cc,
		"receive buffer moderation": &moderate, "receive buffer": &rcv, "send buffer": &snd,
	} {
		if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); terr != nil {
			return fmt.Errorf("netstack: set TCP %s: %v", name, terr)
		}
	}
	if terr := tuneTimeWait(s); terr != nil {
		return fmt.Errorf("netstack: set TCP TIME_WAIT: %v", terr)
	}
	return nil
}

// SetRoutes replaces the prefixes reachable through the tunnel. Nil routes
// everything of each address family that has a local address.
func (ns *Stack) SetRoutes(prefixes []netip.Prefix) {
	var routes []tcpip.Route
	if prefixes == nil {
		var has4, has6 bool
		for _, a := range ns.addrs {
			has4 = has4 || a.Is4()
			has6 = has6 || a.Is6()
		}
		if has4 {
			routes = append(routes, tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
		}
		if has6 {
			routes = append(routes, tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
		}
	}
	for _, p := range prefixes {
		p = p.Masked()
		sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(p.Addr().AsSlice()), tcpip.MaskFromBytes(prefixMask(p)))
		if err != nil {
			continue // unreachable: p is masked
		}
		routes = append(routes, tcpip.Route{Destination: sub, NIC: nicID})
	}
	ns.s.SetRouteTable(routes)
}

func prefixMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen() / 8
	m := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// Device returns the tun.Device to hand to wireguard-go. There is one per
// Stack; closing it ends the stack's packet flow.
func (ns *Stack) Device() tun.Device { return device{ns.link} }

// Promiscuous reports whether the stack takes packets for any address.
func (ns *Stack) Promiscuous() bool { return !ns.s.HandleLocal() }

// GVisor returns the underlying gVisor stack, for forwarders that attach
// transport handlers to it. Callers must not close it.
func (ns *Stack) GVisor() *stack.Stack { return ns.s }

// Takes reports whether the stack takes packets for a: one of its own
// addresses, or any address when promiscuous. It does not allocate.
func (ns *Stack) Takes(a netip.Addr) bool {
	return ns.Promiscuous() || ns.IsLocal(a)
}

// IsLocal reports whether a is one of the stack's own addresses.
func (ns *Stack) IsLocal(a netip.Addr) bool { return slices.Contains(ns.addrs, a.Unmap()) }

// Addresses returns the stack's own addresses.
func (ns *Stack) Addresses() []netip.Addr { return append([]netip.Addr(nil), ns.addrs...) }

// Close tears the stack down: every endpoint is aborted, the NIC removed and
// the device closed. It is idempotent.
func (ns *Stack) Close() error {
	ns.mu.Lock()
	if ns.closed {
		ns.mu.Unlock()
		return nil
	}
	ns.closed = true
	ns.mu.Unlock()
	ns.link.closeDevice()
	ns.s.Close()
	for _, ep := range ns.s.CleanupEndpoints() {
		ep.Abort()
	}
	ns.s.RemoveNIC(nicID)
	ns.s.Wait()
	return nil
}
