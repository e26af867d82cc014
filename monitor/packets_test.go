package monitor

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Packet builders for the tests. Transport checksums are left zero: the
// monitor does not verify them.

func addr(s string) tcpip.Address {
	return tcpip.AddrFromSlice(netip.MustParseAddr(s).AsSlice())
}

func ipPacket(src, dst string, proto uint8, l4 []byte) []byte {
	if netip.MustParseAddr(src).Is4() {
		pkt := make([]byte, header.IPv4MinimumSize+len(l4))
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)),
			ID:          7,
			Flags:       header.IPv4FlagDontFragment,
			TTL:         64,
			Protocol:    proto,
			SrcAddr:     addr(src),
			DstAddr:     addr(dst),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(pkt[header.IPv4MinimumSize:], l4)
		return pkt
	}
	pkt := make([]byte, header.IPv6MinimumSize+len(l4))
	header.IPv6(pkt).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(l4)),
		TransportProtocol: tcpip.TransportProtocolNumber(proto),
		HopLimit:          64,
		SrcAddr:           addr(src),
		DstAddr:           addr(dst),
	})
	copy(pkt[header.IPv6MinimumSize:], l4)
	return pkt
}

func tcpPacket(src string, sport uint16, dst string, dport uint16, flags header.TCPFlags, payload string) []byte {
	t := make([]byte, header.TCPMinimumSize+len(payload))
	header.TCP(t).Encode(&header.TCPFields{
		SrcPort: sport, DstPort: dport, SeqNum: 1000, AckNum: 2000,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535,
	})
	copy(t[header.TCPMinimumSize:], payload)
	return ipPacket(src, dst, uint8(header.TCPProtocolNumber), t)
}

func udpPacket(src string, sport uint16, dst string, dport uint16, payload string) []byte {
	u := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(u).Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(len(u))})
	copy(u[header.UDPMinimumSize:], payload)
	return ipPacket(src, dst, uint8(header.UDPProtocolNumber), u)
}

// echoPacket builds an ICMP (v4 or v6, after src) echo request or reply.
func echoPacket(src, dst string, reply bool, id, seq uint16) []byte {
	c := make([]byte, 8+4)
	copy(c[8:], "ping")
	binary.BigEndian.PutUint16(c[4:], id)
	binary.BigEndian.PutUint16(c[6:], seq)
	if netip.MustParseAddr(src).Is4() {
		c[0] = byte(header.ICMPv4Echo)
		if reply {
			c[0] = byte(header.ICMPv4EchoReply)
		}
		return ipPacket(src, dst, uint8(header.ICMPv4ProtocolNumber), c)
	}
	c[0] = byte(header.ICMPv6EchoRequest)
	if reply {
		c[0] = byte(header.ICMPv6EchoReply)
	}
	return ipPacket(src, dst, uint8(header.ICMPv6ProtocolNumber), c)
}

func unreachablePacket(src, dst string, inner []byte) []byte {
	c := make([]byte, 8+len(inner))
	c[0] = byte(header.ICMPv4DstUnreachable)
	c[1] = byte(header.ICMPv4PortUnreachable)
	copy(c[8:], inner)
	return ipPacket(src, dst, uint8(header.ICMPv4ProtocolNumber), c)
}
