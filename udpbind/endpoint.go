// Package udpbind owns the node's WireGuard UDP sockets. On Linux, New
// returns a conn.Bind that moves datagrams in batches (recvmmsg and
// sendmmsg), lets the kernel segment and coalesce them (UDP GSO and GRO),
// hands a send batch to the kernel straight from wireguard-go's buffers
// (scatter-gather, no coalescing copy), answers from the local address a
// peer reached ("sticky" source), and allocates nothing per packet: each
// receiving socket interns its endpoints. Elsewhere New returns
// wireguard-go's conn.StdNetBind.
//
// wireguard-go's own bind (conn.StdNetBind) does the same batching but
// allocates an endpoint per received datagram, copies every GSO batch into
// one buffer before sending, and resets its whole 128-message array on
// every call; on a busy tunnel those were the largest allocation source of
// the process (about 80% of its allocations in a bulk transfer) and about
// a tenth of the CPU of a request/response exchange.
//
// Concurrency: Open, Close and SetMark may be called from any goroutine and
// are serialised by the Bind. Send may be called by any number of
// goroutines at once. Each ReceiveFunc that Open returns must be called by
// one goroutine at a time (wireguard-go runs one goroutine per function).
package udpbind

import (
	"net/netip"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// Endpoint is a peer's UDP address as seen by this bind, with the local
// address the peer's datagrams arrived on (the source for replies) when it
// is known. Endpoints from one receiving socket are shared between the
// datagrams from the same address; only the sticky source can change, and
// only to cleared.
type Endpoint struct {
	endpointKey
	cleared atomic.Bool
}

// endpointKey is what identifies an endpoint: the remote address, and the
// local address and interface its datagrams arrived on (src invalid if
// unknown; ifindex matters for IPv6 link-local sources).
type endpointKey struct {
	dst     netip.AddrPort
	src     netip.Addr
	ifindex int32
}

var _ conn.Endpoint = (*Endpoint)(nil)

// NewEndpoint returns an endpoint for dst with no sticky source.
func NewEndpoint(dst netip.AddrPort) *Endpoint {
	return &Endpoint{endpointKey: endpointKey{dst: netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())}}
}

// DstAddrPort returns the remote address without allocating.
func (e *Endpoint) DstAddrPort() netip.AddrPort { return e.dst }

// ClearSrc forgets the sticky source: replies leave from the address the
// kernel's routing picks. wireguard-go calls it when a peer has roamed.
func (e *Endpoint) ClearSrc() { e.cleared.Store(true) }

// SrcIP returns the local address replies are sent from, or the zero Addr.
func (e *Endpoint) SrcIP() netip.Addr {
	if e.cleared.Load() {
		return netip.Addr{}
	}
	return e.src
}

func (e *Endpoint) SrcToString() string {
	if src := e.SrcIP(); src.IsValid() {
		return src.String()
	}
	return ""
}

func (e *Endpoint) DstIP() netip.Addr   { return e.dst.Addr() }
func (e *Endpoint) DstToString() string { return e.dst.String() }
func (e *Endpoint) DstToBytes() []byte  { b, _ := e.dst.MarshalBinary(); return b }

// maxInterned bounds a receiving socket's endpoint table; when it is full
// the table starts again (peers' endpoints are simply made anew).
const maxInterned = 1024

// interner hands out one *Endpoint per (remote, local) address pair. It
// belongs to one receiving goroutine and is not safe for concurrent use.
type interner struct {
	last *Endpoint
	m    map[endpointKey]*Endpoint
}

func (in *interner) get(k endpointKey) *Endpoint {
	if e := in.last; e != nil && e.endpointKey == k && !e.cleared.Load() {
		return e
	}
	e := in.m[k]
	if e == nil || e.cleared.Load() {
		if in.m == nil || len(in.m) >= maxInterned {
			in.m = make(map[endpointKey]*Endpoint)
		}
		e = &Endpoint{endpointKey: k}
		in.m[k] = e
	}
	in.last = e
	return e
}
