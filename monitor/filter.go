package monitor

import (
	"net"
	"net/netip"
	"slices"
)

// Filter selects the events a [Listener] receives. The zero Filter
// selects everything. KindLost events are never filtered: they describe
// the listener itself.
type Filter struct {
	Kinds []Kind       // if non-empty, only these kinds
	Src   netip.Prefix // if valid, the source must be inside
	Dst   netip.Prefix // if valid, the destination must be inside
	Addr  netip.Prefix // if valid, either end must be inside
}

func (f Filter) clone() Filter {
	f.Kinds = slices.Clone(f.Kinds)
	return f
}

func (f *Filter) hasAddr() bool {
	return f.Src.IsValid() || f.Dst.IsValid() || f.Addr.IsValid()
}

func (f *Filter) matchKind(k Kind) bool {
	return len(f.Kinds) == 0 || slices.Contains(f.Kinds, k)
}

// matchAddrs applies the address prefixes. An invalid (unknown) address
// never matches a prefix.
func (f *Filter) matchAddrs(src, dst netip.Addr) bool {
	if f.Src.IsValid() && !(src.IsValid() && f.Src.Contains(src)) {
		return false
	}
	if f.Dst.IsValid() && !(dst.IsValid() && f.Dst.Contains(dst)) {
		return false
	}
	if f.Addr.IsValid() &&
		!(src.IsValid() && f.Addr.Contains(src)) &&
		!(dst.IsValid() && f.Addr.Contains(dst)) {
		return false
	}
	return true
}

func (f *Filter) matchPacket(k Kind, src, dst netip.Addr) bool {
	return f.matchKind(k) && f.matchAddrs(src, dst)
}

func (f *Filter) matchConn(k Kind, rec *ConnRecord) bool {
	if !f.matchKind(k) {
		return false
	}
	if !f.hasAddr() {
		return true
	}
	return f.matchAddrs(parseHostAddr(rec.From), parseHostAddr(rec.To))
}

// parseHostAddr extracts the IP address of "ip", "ip:port" or "[ip]:port";
// anything else (a name) yields the invalid Addr.
func parseHostAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap()
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}
