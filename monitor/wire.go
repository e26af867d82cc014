package monitor

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// UDPDatagram wraps payload in the IP and UDP headers of a datagram from
// src to dst, with valid checksums, as it crossed the wire. The physical
// observation points (from-network, to-network) see UDP payloads without
// their headers; this gives their events the same packet form as the
// virtual points, for the formatters, filters and pcap files. An
// unspecified src address (the local end of a socket bound to every
// address) is written as 0.0.0.0 or ::.
func UDPDatagram(src, dst netip.AddrPort, payload []byte) []byte {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	v6 := da.Is6()
	if !sa.IsValid() || sa.Is6() != v6 {
		sa = netip.IPv4Unspecified()
		if v6 {
			sa = netip.IPv6Unspecified()
		}
	}
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	udpLen := header.UDPMinimumSize + len(payload)
	pkt := make([]byte, ipLen+udpLen)
	copy(pkt[ipLen+header.UDPMinimumSize:], payload)
	s, d := tcpip.AddrFromSlice(sa.AsSlice()), tcpip.AddrFromSlice(da.AsSlice())
	if v6 {
		header.IPv6(pkt).Encode(&header.IPv6Fields{
			PayloadLength: uint16(udpLen), TransportProtocol: header.UDPProtocolNumber,
			HopLimit: 64, SrcAddr: s, DstAddr: d,
		})
	} else {
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)), Protocol: uint8(header.UDPProtocolNumber),
			TTL: 64, SrcAddr: s, DstAddr: d,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	u := header.UDP(pkt[ipLen:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(udpLen)})
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, s, d, uint16(udpLen))
	sum = checksum.Checksum(payload, sum)
	u.SetChecksum(^u.CalculateChecksum(sum))
	return pkt
}
