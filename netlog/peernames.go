package netlog

import (
	"net/netip"
	"sync/atomic"
)

// peerNamer names the peer behind a UDP endpoint by a tunnel address, for
// the source of physical-layer entries. Endpoints a peer used earlier are
// remembered, so a peer that roamed mid-window is still named. It is safe
// for concurrent use.
type peerNamer struct {
	// endpoints returns each peer's current endpoint with its AllowedIPs.
	endpoints func() map[netip.AddrPort][]netip.Prefix
	known     atomic.Pointer[map[netip.AddrPort]netip.Addr] // replaced, never modified
}

// name returns the address naming the peer at ep, or the zero Addr.
func (p *peerNamer) name(ep netip.AddrPort) netip.Addr {
	old := p.known.Load()
	if old != nil {
		if a, ok := (*old)[ep]; ok {
			return a
		}
	}
	m := map[netip.AddrPort]netip.Addr{}
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	for e, allowed := range p.endpoints() {
		m[e] = TunnelAddr(allowed)
	}
	p.known.Store(&m)
	return m[ep]
}

// TunnelAddr is the address that names a peer with the AllowedIPs allowed:
// the first single address (IPv4 first), else the first prefix's address.
func TunnelAddr(allowed []netip.Prefix) netip.Addr {
	var v6 netip.Addr
	for _, a := range allowed {
		if a.IsSingleIP() {
			if a.Addr().Is4() {
				return a.Addr()
			}
			if !v6.IsValid() {
				v6 = a.Addr()
			}
		}
	}
	if v6.IsValid() {
		return v6
	}
	if len(allowed) > 0 {
		return allowed[0].Addr()
	}
	return netip.Addr{}
}
