package classify

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// key is an address as a 128-bit number: an IPv4 address in the low 32
// bits, an IPv6 address as a whole. Keys of the two families are kept in
// separate span sets, so they never meet.
type key struct{ hi, lo uint64 }

func (a key) less(b key) bool {
	return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo
}

func (a key) compare(b key) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return +1
	}
	return 0
}

// next returns a+1 and whether it did not overflow.
func (a key) next() (key, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
	}
	return key{hi, lo}, hi != 0 || lo != 0
}

// addrKey returns the key of an unmapped IPv4 or IPv6 address.
func addrKey(a netip.Addr) key {
	if a.Is4() {
		b := a.As4()
		return key{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return key{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// span is the inclusive address range [lo, hi].
type span struct{ lo, hi key }

// singleSpan is the span of the single address a.
func singleSpan(a netip.Addr) span {
	k := addrKey(a)
	return span{k, k}
}

// prefixSpan is the span of every address in p.
func prefixSpan(p netip.Prefix) span {
	lo := addrKey(p.Masked().Addr())
	host := p.Addr().BitLen() - p.Bits() // host bits, 0..128
	var mask key
	switch {
	case host >= 128:
		mask = key{^uint64(0), ^uint64(0)}
	case host >= 64:
		mask = key{1<<(host-64) - 1, ^uint64(0)}
	default:
		mask = key{0, 1<<host - 1}
	}
	return span{lo, key{lo.hi | mask.hi, lo.lo | mask.lo}}
}

// size returns the number of addresses in s, as a float: exact enough to
// compare with a threshold.
func (s span) size() float64 {
	hi, lo := s.hi.hi-s.lo.hi, s.hi.lo-s.lo.lo
	if s.hi.lo < s.lo.lo {
		hi-- // borrow
	}
	return float64(hi)*0x1p64 + float64(lo) + 1
}

// spanSet is a sorted list of disjoint, non-adjacent spans.
type spanSet []span

// mergeSpans sorts spans and merges those that overlap or touch. It reuses
// the spans' backing array.
func mergeSpans(spans []span) spanSet {
	if len(spans) == 0 {
		return nil
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.compare(b.lo) })
	out := spans[:1]
	for _, s := range spans[1:] {
		last := &out[len(out)-1]
		after, ok := last.hi.next()
		if !ok || !after.less(s.lo) { // s starts at or before last.hi+1
			if last.hi.less(s.hi) {
				last.hi = s.hi
			}
			continue
		}
		out = append(out, s)
	}
	return slices.Clip(out)
}

// size returns the number of addresses in the set.
func (set spanSet) size() float64 {
	var n float64
	for _, s := range set {
		n += s.size()
	}
	return n
}

// contains reports whether k lies in one of the set's spans: a binary
// search written out, as sort.Search would cost a closure call per probe.
func (set spanSet) contains(k key) bool {
	i, j := 0, len(set)
	for i < j {
		m := int(uint(i+j) >> 1)
		if k.less(set[m].lo) {
			j = m
		} else {
			i = m + 1
		}
	}
	// set[i-1] is the last span starting at or before k.
	return i > 0 && !set[i-1].hi.less(k)
}
