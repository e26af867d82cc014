package wrap

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/wgsidecar/sidecar/stats"
)

// flowKey reads the 5-tuple of an IP packet, with this node's side as the
// source: as written for a packet this node sends (tx), swapped for one it
// receives. Protocols without ports (ICMP, fragments after the first,
// unknown protocols) have ports 0. ok is false for a packet too short or of
// an unknown IP version; such a packet is not counted (the stack drops it).
func flowKey(pkt []byte, rx bool) (k stats.Key, ok bool) {
	if len(pkt) == 0 {
		return k, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < header.IPv4MinimumSize {
			return k, false
		}
		ip := header.IPv4(pkt)
		hlen := int(ip.HeaderLength())
		proto := ip.Protocol()
		var sp, dp uint16
		if ip.FragmentOffset() == 0 && hlen >= header.IPv4MinimumSize {
			sp, dp = ports(proto, pkt[min(hlen, len(pkt)):])
		}
		src, dst := [4]byte(pkt[12:16]), [4]byte(pkt[16:20])
		if rx {
			return stats.MakeKey4(proto, dst, dp, src, sp), true
		}
		return stats.MakeKey4(proto, src, sp, dst, dp), true
	case 6:
		if len(pkt) < header.IPv6MinimumSize {
			return k, false
		}
		proto := pkt[6] // next header; extension headers are not followed
		sp, dp := ports(proto, pkt[header.IPv6MinimumSize:])
		src, dst := [16]byte(pkt[8:24]), [16]byte(pkt[24:40])
		if rx {
			return stats.MakeKey6(proto, dst, dp, src, sp), true
		}
		return stats.MakeKey6(proto, src, sp, dst, dp), true
	}
	return k, false
}

// ports returns the source and destination ports of a TCP, UDP, UDP-Lite or
// SCTP segment (they share the first four bytes), 0 and 0 otherwise.
func ports(proto uint8, l4 []byte) (src, dst uint16) {
	switch proto {
	case 6, 17, 132, 136:
		if len(l4) >= 4 {
			return binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		}
	}
	return 0, 0
}
