package netstack

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gsoMaxSize bounds the TCP segments gVisor hands the link (headers
// included): it leaves room for the largest TCP and IP headers within the
// 16-bit IP length field.
const gsoMaxSize = 60 << 10

// segments returns how many packets of at most the MTU pkt becomes on the
// way out: more than one for a large TCP segment (host GSO), which the link
// cuts at the MSS itself.
func segments(pkt *stack.PacketBuffer) int {
	g := pkt.GSOOptions
	if !isTCPGSO(pkt) || g.MSS == 0 {
		return 1
	}
	n := pkt.Data().Size()
	if n <= int(g.MSS) {
		return 1
	}
	return (n + int(g.MSS) - 1) / int(g.MSS)
}

// isTCPGSO reports whether pkt is a TCP segment in host-GSO form: headers
// for the whole segment and only the pseudo-header summed into the TCP
// checksum (gVisor's "CHECKSUM_PARTIAL").
func isTCPGSO(pkt *stack.PacketBuffer) bool {
	t := pkt.GSOOptions.Type
	return t == stack.GSOTCPv4 || t == stack.GSOTCPv6
}

// writeSegment writes the i-th of the n MSS-sized packets of the TCP
// segment pkt (isTCPGSO) into dst and returns its length, or -1 if dst is
// too small. Each packet gets its own IP length (and IPv4 ID and checksum),
// sequence number, flags (FIN and PSH only on the last, CWR only on the
// first) and a complete TCP checksum.
func writeSegment(dst []byte, pkt *stack.PacketBuffer, i, n int) int {
	nh := pkt.NetworkHeader().Slice()
	th := pkt.TransportHeader().Slice()
	hdrLen := len(nh) + len(th)
	payload := pkt.Data().Size()
	mss := payload
	if n > 1 {
		mss = int(pkt.GSOOptions.MSS)
	}
	off := i * mss
	segLen := min(mss, payload-off)
	if hdrLen+segLen > len(dst) {
		return -1
	}

	copy(dst, nh)
	copy(dst[len(nh):], th)
	views, skip := pkt.AsViewList()
	copyAt(dst[hdrLen:hdrLen+segLen], views, skip+hdrLen+off)

	tcpLen := len(th) + segLen
	var xsum uint16
	if pkt.GSOOptions.Type == stack.GSOTCPv4 {
		ip := header.IPv4(dst[:len(nh)])
		ip.SetTotalLength(uint16(hdrLen + segLen))
		ip.SetID(ip.ID() + uint16(i))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		xsum = header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tcpLen))
	} else {
		ip := header.IPv6(dst[:len(nh)])
		ip.SetPayloadLength(uint16(len(nh) - header.IPv6MinimumSize + tcpLen))
		xsum = header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tcpLen))
	}
	tcp := header.TCP(dst[len(nh) : hdrLen+segLen])
	tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(off))
	flags := tcp.Flags()
	if i < n-1 {
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	if i > 0 {
		flags &^= header.TCPFlagCwr
	}
	tcp.SetFlags(uint8(flags))
	tcp.SetChecksum(0)
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return hdrLen + segLen
}

// copyAt fills dst from the bytes of views starting off bytes in.
func copyAt(dst []byte, views buffer.ViewList, off int) {
	n := 0
	for v := views.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
}
