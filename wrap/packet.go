package wrap

import (
	"encoding/binary"

	"github.com/wgsidecar/sidecar/stats"
)

// flowKey sets k to the 5-tuple of an IP packet, with this node's side as
// the source: as written for a packet this node sends (tx), swapped for one
// it receives. Protocols without ports (ICMP, fragments after the first,
// unknown protocols) have ports 0; IPv6 extension headers are not followed.
// It reports false for a packet too short or of an unknown IP version,
// which is not counted (the stack drops it).
//
// It reads the fixed header fields directly rather than through gVisor's
// header views: it runs for every packet and must cost a few nanoseconds.
func flowKey(pkt []byte, rx bool, k *stats.Key) bool {
	if len(pkt) == 0 {
		return false
	}
	be := binary.BigEndian
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return false
		}
		proto := pkt[9]
		var sp, dp uint16
		hlen := int(pkt[0]&0xf) * 4
		if hasPorts(proto) && hlen >= 20 && len(pkt) >= hlen+4 && be.Uint16(pkt[6:])&0x1fff == 0 {
			sp, dp = be.Uint16(pkt[hlen:]), be.Uint16(pkt[hlen+2:])
		}
		if rx {
			k.SetIPv4(proto, pkt[16:20], dp, pkt[12:16], sp)
		} else {
			k.SetIPv4(proto, pkt[12:16], sp, pkt[16:20], dp)
		}
		return true
	case 6:
		if len(pkt) < 40 {
			return false
		}
		proto := pkt[6]
		var sp, dp uint16
		if hasPorts(proto) && len(pkt) >= 44 {
			sp, dp = be.Uint16(pkt[40:]), be.Uint16(pkt[42:])
		}
		if rx {
			k.SetIPv6(proto, pkt[24:40], dp, pkt[8:24], sp)
		} else {
			k.SetIPv6(proto, pkt[8:24], sp, pkt[24:40], dp)
		}
		return true
	}
	return false
}

// hasPorts reports whether proto's header starts with 16-bit source and
// destination ports: TCP, UDP, SCTP, UDP-Lite.
func hasPorts(proto uint8) bool {
	return proto == 6 || proto == 17 || proto == 132 || proto == 136
}
