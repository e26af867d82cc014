package wgdev

import (
	"encoding/binary"
	"net/netip"
)

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
)

// dstAddr is an IP packet's destination address.
func dstAddr(pkt []byte) (netip.Addr, bool) {
	if len(pkt) == 0 {
		return netip.Addr{}, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) >= ipv4HeaderLen {
			return netip.AddrFrom4([4]byte(pkt[16:20])), true
		}
	case 6:
		if len(pkt) >= ipv6HeaderLen {
			return netip.AddrFrom16([16]byte(pkt[24:40])), true
		}
	}
	return netip.Addr{}, false
}

// inboundPacket checks a decrypted packet: its IP version and length
// (trimming the padding), and returns its source address. bad says why it
// is refused: "" fine, "version" no IPv4 or IPv6, "length" a length that
// does not fit.
func inboundPacket(plain []byte) (pkt []byte, src netip.Addr, bad string) {
	switch plain[0] >> 4 {
	case 4:
		if len(plain) < ipv4HeaderLen {
			return nil, src, "length"
		}
		n := int(binary.BigEndian.Uint16(plain[2:4]))
		if n > len(plain) || n < ipv4HeaderLen {
			return nil, src, "length"
		}
		return plain[:n], netip.AddrFrom4([4]byte(plain[12:16])), ""
	case 6:
		if len(plain) < ipv6HeaderLen {
			return nil, src, "length"
		}
		n := int(binary.BigEndian.Uint16(plain[4:6])) + ipv6HeaderLen
		if n > len(plain) {
			return nil, src, "length"
		}
		return plain[:n], netip.AddrFrom16([16]byte(plain[8:24])), ""
	}
	return nil, src, "version"
}
