package netlog

import (
	"net/netip"
	"sync"

	"github.com/wgsidecar/sidecar/classify"
)

// peerNamer names the peer behind a UDP endpoint by a tunnel address, for
// the source of physical-layer entries. A peer with a single-address
// AllowedIPs entry is named by it (see TunnelAddr). A peer whose
// AllowedIPs are only wider prefixes (10.77.0.0/24) is named by an
// address it really uses: the remote address inside those prefixes from
// which this node received the most packets in the first window that had
// any (learn), and keeps that name. Until then it has none. Endpoints a
// peer used earlier are remembered, so a peer that roamed mid-window is
// still named. It is safe for concurrent use.
type peerNamer struct {
	// endpoints returns each peer's current endpoint with its AllowedIPs.
	endpoints func() map[netip.AddrPort][]netip.Prefix

	mu      sync.Mutex
	known   map[netip.AddrPort]netip.Addr // endpoint → name, once named
	learnt  map[netip.Prefix]netip.Addr   // a peer's first wide prefix → the address learnt for it
	unnamed bool                          // the last refresh left an endpoint without a name
}

// name returns the address naming the peer at ep, or the zero Addr.
func (p *peerNamer) name(ep netip.AddrPort) netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.known[ep]; ok {
		return a
	}
	p.refreshLocked()
	return p.known[ep]
}

// refreshLocked names the current endpoints that it can. p.mu must be
// held.
func (p *peerNamer) refreshLocked() {
	if p.known == nil {
		p.known = map[netip.AddrPort]netip.Addr{}
	}
	p.unnamed = false
	for e, allowed := range p.endpoints() {
		if _, ok := p.known[e]; ok {
			continue
		}
		if a := TunnelAddr(allowed); a.IsValid() {
			p.known[e] = a
		} else if w, ok := firstWide(allowed); ok && p.learnt[w].IsValid() {
			p.known[e] = p.learnt[w]
		} else {
			p.unnamed = true
		}
	}
}

// learn learns the addresses of peers known only by wide prefixes from a
// window's virtual-layer flows: for each such peer not named yet, the
// remote address inside its prefixes that sent this node the most packets.
// An address counts for the peer whose AllowedIPs hold it most
// specifically; exit traffic, and addresses only a default route holds,
// count for no one (they are not the peer's).
func (p *peerNamer) learn(virtual []Flow) {
	rx := map[netip.Addr]uint64{}
	for i := range virtual {
		f := &virtual[i]
		if f.RxPackets > 0 && f.Class != classify.Exit {
			rx[f.Dst.Addr()] += f.RxPackets
		}
	}
	if len(rx) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known != nil && !p.unnamed {
		return // every peer seen so far has its name
	}
	eps := p.endpoints()
	// Each address belongs to the peer whose AllowedIPs hold it most
	// specifically (a default route holds nothing here).
	best := map[netip.Prefix]netip.Addr{} // a peer's first wide prefix → its busiest address
	for a, n := range rx {
		var owner []netip.Prefix
		bits := 0
		for _, allowed := range eps {
			if b := longestMatch(allowed, a); b > bits {
				owner, bits = allowed, b
			}
		}
		w, ok := firstWide(owner)
		if !ok || TunnelAddr(owner).IsValid() || p.learnt[w].IsValid() {
			continue
		}
		if b := best[w]; !b.IsValid() || n > rx[b] || n == rx[b] && a.Less(b) {
			best[w] = a
		}
	}
	for w, a := range best {
		if p.learnt == nil {
			p.learnt = map[netip.Prefix]netip.Addr{}
		}
		p.learnt[w] = a
	}
	p.refreshLocked()
}

// firstWide returns the first prefix of allowed that is wider than one
// address.
func firstWide(allowed []netip.Prefix) (netip.Prefix, bool) {
	for _, a := range allowed {
		if !a.IsSingleIP() {
			return a, true
		}
	}
	return netip.Prefix{}, false
}

// longestMatch returns the length of the longest prefix of allowed,
// other than a default route, that holds a; 0 when none does.
func longestMatch(allowed []netip.Prefix, a netip.Addr) int {
	bits := 0
	for _, p := range allowed {
		if p.Bits() > bits && p.Contains(a) {
			bits = p.Bits()
		}
	}
	return bits
}

// TunnelAddr is the address that names a peer with the AllowedIPs allowed
// by configuration alone: its first single address, IPv4 first; the zero
// Addr when it has none (a peer of wide prefixes only, which peerNamer
// names from its traffic).
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
	return v6
}
