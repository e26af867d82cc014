package wgdev

import (
	"net/netip"
	"slices"
)

// routeTable answers which peer owns an address: the longest of the
// allowed IPs containing it. It is immutable once built (the device
// publishes a new one after each change), so the packet paths read it
// without a lock.
type routeTable struct {
	v4, v6 lpm
}

// lpm is one family's prefixes grouped by length, the lengths longest
// first: a lookup masks the address to each length present and probes a
// map, so it costs one probe per distinct length (typically one to three).
type lpm struct {
	lens  []int
	byLen map[netip.Prefix]*peer
}

// buildRoutes makes the table of owners (each prefix masked).
func buildRoutes(owners map[netip.Prefix]*peer) *routeTable {
	t := &routeTable{
		v4: lpm{byLen: map[netip.Prefix]*peer{}},
		v6: lpm{byLen: map[netip.Prefix]*peer{}},
	}
	for pfx, p := range owners {
		l := &t.v6
		if pfx.Addr().Is4() {
			l = &t.v4
		}
		l.byLen[pfx] = p
		if !slices.Contains(l.lens, pfx.Bits()) {
			l.lens = append(l.lens, pfx.Bits())
		}
	}
	for _, l := range []*lpm{&t.v4, &t.v6} {
		slices.Sort(l.lens)
		slices.Reverse(l.lens)
	}
	return t
}

// lookup returns the peer owning a, or nil.
func (t *routeTable) lookup(a netip.Addr) *peer {
	l := &t.v6
	if a.Is4() {
		l = &t.v4
	}
	for _, bits := range l.lens {
		pfx, _ := a.Prefix(bits)
		if p, ok := l.byLen[pfx]; ok {
			return p
		}
	}
	return nil
}
