package monitor

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// dissection is what the formatters know of a packet. Every field is
// filled from length-checked gVisor header views: garbage yields err set
// and whatever could be read before it, never a panic.
type dissection struct {
	version  int // 4, 6, or 0 if unknown
	src, dst netip.Addr
	proto    uint8  // transport protocol number
	protoStr string // "tcp", "udp", "icmp", "icmpv6", or "proto N"
	fragment bool   // a non-first IPv4 fragment: no transport header

	hasPorts     bool
	sport, dport uint16
	tcpFlags     string // TCP only
	icmp         string // ICMP/ICMPv6 description
	payloadLen   int    // transport payload length (UDP: from its header)

	wireGuard string // a UDP payload that is a WireGuard message: its type

	ipHeader, l4Header []byte // for the verbose dissection; nil if absent
	err                string
}

// Inspect reads the IP and transport headers of pkt with the rules the
// formatters use, and reports its addresses (when the IP header has them),
// its transport protocol number, and, if the packet is malformed, why.
func Inspect(pkt []byte) (src, dst netip.Addr, proto uint8, err error) {
	d := dissect(pkt)
	if d.err != "" {
		err = errors.New(d.err)
	}
	return d.src, d.dst, d.proto, err
}

// WireGuardMessage names the WireGuard message in a UDP payload, or
// returns "" if it is none: a known type in a little-endian word with the
// size that type has (data: at least the 32-byte header). These are
// wireguard-go's receive checks; a datagram failing them is dropped unread.
func WireGuardMessage(p []byte) string {
	if len(p) < 4 || p[1] != 0 || p[2] != 0 || p[3] != 0 {
		return ""
	}
	switch {
	case p[0] == 1 && len(p) == 148:
		return "wg handshake-initiation"
	case p[0] == 2 && len(p) == 92:
		return "wg handshake-response"
	case p[0] == 3 && len(p) == 64:
		return "wg cookie-reply"
	case p[0] == 4 && len(p) == 32:
		return "wg keepalive"
	case p[0] == 4 && len(p) > 32:
		return "wg data"
	}
	return ""
}

// packetAddrs returns the source and destination of an IP packet, or
// invalid Addrs if pkt is too short to hold them. It is the cheap path the
// filters use.
func packetAddrs(pkt []byte) (src, dst netip.Addr) {
	if len(pkt) == 0 {
		return
	}
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		if len(pkt) >= header.IPv4MinimumSize {
			ip := header.IPv4(pkt)
			src = netip.AddrFrom4([4]byte(ip.SourceAddressSlice()))
			dst = netip.AddrFrom4([4]byte(ip.DestinationAddressSlice()))
		}
	case header.IPv6Version:
		if len(pkt) >= header.IPv6MinimumSize {
			ip := header.IPv6(pkt)
			src = netip.AddrFrom16([16]byte(ip.SourceAddressSlice()))
			dst = netip.AddrFrom16([16]byte(ip.DestinationAddressSlice()))
		}
	}
	return
}

// dissect reads pkt's IP header and then, unless the packet ends or is a
// non-first fragment before it, its transport header.
func dissect(pkt []byte) dissection {
	var d dissection
	if len(pkt) == 0 {
		d.err = "empty packet"
		return d
	}
	var l4 []byte
	var ok bool
	switch v := pkt[0] >> 4; v {
	case 4:
		l4, ok = d.ipv4(pkt)
	case 6:
		l4, ok = d.ipv6(pkt)
	default:
		d.err = fmt.Sprintf("unknown ip version %d", v)
	}
	if ok {
		d.transport(l4)
	}
	return d
}

// ipv4 reads an IPv4 header into d and returns the transport bytes it
// carries (trailing padding cut off by the total length). ok is false if
// there is no transport header to read: the IP header is malformed, or the
// packet is a non-first fragment.
func (d *dissection) ipv4(pkt []byte) (l4 []byte, ok bool) {
	d.version = 4
	if len(pkt) < header.IPv4MinimumSize {
		d.err = fmt.Sprintf("truncated ipv4 header (%d bytes)", len(pkt))
		return nil, false
	}
	ip := header.IPv4(pkt)
	d.src, d.dst = packetAddrs(pkt)
	hl := int(ip.HeaderLength())
	if hl < header.IPv4MinimumSize || hl > len(pkt) {
		d.err = fmt.Sprintf("bad ipv4 header length %d", hl)
		return nil, false
	}
	d.ipHeader = pkt[:hl]
	end := len(pkt)
	if tl := int(ip.TotalLength()); tl >= hl && tl < end {
		end = tl // ignore trailing padding
	}
	d.setProto(ip.Protocol())
	l4 = pkt[hl:end]
	if ip.FragmentOffset() != 0 {
		d.fragment = true
		d.payloadLen = len(l4)
		return nil, false
	}
	return l4, true
}

// ipv6 reads an IPv6 header into d and returns the bytes after it (cut
// off by the payload length); ok is false if the header is truncated.
// Extension headers are not followed: the next header is the protocol.
func (d *dissection) ipv6(pkt []byte) (l4 []byte, ok bool) {
	d.version = 6
	if len(pkt) < header.IPv6MinimumSize {
		d.err = fmt.Sprintf("truncated ipv6 header (%d bytes)", len(pkt))
		return nil, false
	}
	ip := header.IPv6(pkt)
	d.src, d.dst = packetAddrs(pkt)
	d.ipHeader = pkt[:header.IPv6MinimumSize]
	end := len(pkt)
	if pl := header.IPv6MinimumSize + int(ip.PayloadLength()); pl < end {
		end = pl
	}
	d.setProto(ip.NextHeader())
	return pkt[header.IPv6MinimumSize:end], true
}

// transport reads the transport header in l4 for d's protocol: ports,
// TCP flags, the ICMP message, the payload length and, in UDP, a
// WireGuard message. Any other protocol is all payload.
func (d *dissection) transport(l4 []byte) {
	switch d.proto {
	case uint8(header.TCPProtocolNumber):
		d.tcp(l4)
	case uint8(header.UDPProtocolNumber):
		if len(l4) < header.UDPMinimumSize {
			d.err = fmt.Sprintf("truncated udp header (%d bytes)", len(l4))
			return
		}
		u := header.UDP(l4)
		d.hasPorts, d.sport, d.dport = true, u.SourcePort(), u.DestinationPort()
		d.l4Header = l4[:header.UDPMinimumSize]
		d.payloadLen = max(int(u.Length())-header.UDPMinimumSize, 0)
		d.wireGuard = WireGuardMessage(l4[header.UDPMinimumSize:])
	case uint8(header.ICMPv4ProtocolNumber):
		if d.version != 4 || len(l4) < header.ICMPv4MinimumSize {
			d.err = fmt.Sprintf("truncated icmp header (%d bytes)", len(l4))
			return
		}
		c := header.ICMPv4(l4)
		d.l4Header = l4[:header.ICMPv4MinimumSize]
		d.payloadLen = len(l4) - header.ICMPv4MinimumSize
		d.icmp = icmpv4Name(c.Type(), c.Code())
		if t := c.Type(); t == header.ICMPv4Echo || t == header.ICMPv4EchoReply {
			d.icmp += fmt.Sprintf(" id=%d seq=%d", c.Ident(), c.Sequence())
		}
	case uint8(header.ICMPv6ProtocolNumber):
		if d.version != 6 || len(l4) < header.ICMPv6MinimumSize {
			d.err = fmt.Sprintf("truncated icmpv6 header (%d bytes)", len(l4))
			return
		}
		c := header.ICMPv6(l4)
		d.l4Header = l4[:header.ICMPv6MinimumSize]
		d.payloadLen = len(l4) - header.ICMPv6MinimumSize
		d.icmp = icmpv6Name(c.Type(), c.Code())
		if t := c.Type(); t == header.ICMPv6EchoRequest || t == header.ICMPv6EchoReply {
			d.icmp += fmt.Sprintf(" id=%d seq=%d", c.Ident(), c.Sequence())
		}
	default:
		d.payloadLen = len(l4)
	}
}

// tcp reads a TCP header: ports and flags first, so a bad data offset
// still reports them (with the fixed 20 bytes as the header).
func (d *dissection) tcp(l4 []byte) {
	if len(l4) < header.TCPMinimumSize {
		d.err = fmt.Sprintf("truncated tcp header (%d bytes)", len(l4))
		return
	}
	t := header.TCP(l4)
	d.hasPorts, d.sport, d.dport = true, t.SourcePort(), t.DestinationPort()
	d.tcpFlags = tcpFlags(t.Flags())
	off := int(t.DataOffset())
	if off < header.TCPMinimumSize || off > len(l4) {
		d.err = fmt.Sprintf("bad tcp data offset %d", off)
		d.l4Header = l4[:header.TCPMinimumSize]
		return
	}
	d.l4Header = l4[:off]
	d.payloadLen = len(l4) - off
}

func (d *dissection) setProto(p uint8) {
	d.proto = p
	switch {
	case p == uint8(header.TCPProtocolNumber):
		d.protoStr = "tcp"
	case p == uint8(header.UDPProtocolNumber):
		d.protoStr = "udp"
	case p == uint8(header.ICMPv4ProtocolNumber) && d.version == 4:
		d.protoStr = "icmp"
	case p == uint8(header.ICMPv6ProtocolNumber) && d.version == 6:
		d.protoStr = "icmpv6"
	default:
		d.protoStr = fmt.Sprintf("proto %d", p)
	}
}

// tcpFlags names the flags in the conventional order, joined by "-":
// SYN, SYN-ACK, PSH-ACK, FIN-ACK, RST, RST-ACK...
func tcpFlags(f header.TCPFlags) string {
	var names []string
	for _, n := range []struct {
		f    header.TCPFlags
		name string
	}{
		{header.TCPFlagSyn, "SYN"},
		{header.TCPFlagFin, "FIN"},
		{header.TCPFlagRst, "RST"},
		{header.TCPFlagPsh, "PSH"},
		{header.TCPFlagAck, "ACK"},
		{header.TCPFlagUrg, "URG"},
		{header.TCPFlagEce, "ECE"},
		{header.TCPFlagCwr, "CWR"},
	} {
		if f&n.f != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "-")
}

func icmpv4Name(t header.ICMPv4Type, c header.ICMPv4Code) string {
	switch t {
	case header.ICMPv4EchoReply:
		return "echo reply"
	case header.ICMPv4Echo:
		return "echo request"
	case header.ICMPv4DstUnreachable:
		switch c {
		case header.ICMPv4NetUnreachable:
			return "net unreachable"
		case header.ICMPv4HostUnreachable:
			return "host unreachable"
		case header.ICMPv4ProtoUnreachable:
			return "protocol unreachable"
		case header.ICMPv4PortUnreachable:
			return "port unreachable"
		case header.ICMPv4FragmentationNeeded:
			return "fragmentation needed"
		}
		return fmt.Sprintf("unreachable code=%d", c)
	case header.ICMPv4TimeExceeded:
		return "time exceeded"
	case header.ICMPv4ParamProblem:
		return "parameter problem"
	case header.ICMPv4Redirect:
		return "redirect"
	}
	return fmt.Sprintf("type=%d code=%d", t, c)
}

func icmpv6Name(t header.ICMPv6Type, c header.ICMPv6Code) string {
	switch t {
	case header.ICMPv6EchoRequest:
		return "echo request"
	case header.ICMPv6EchoReply:
		return "echo reply"
	case header.ICMPv6DstUnreachable:
		switch c {
		case header.ICMPv6NetworkUnreachable:
			return "net unreachable"
		case header.ICMPv6AddressUnreachable:
			return "address unreachable"
		case header.ICMPv6PortUnreachable:
			return "port unreachable"
		case header.ICMPv6Prohibited:
			return "prohibited"
		}
		return fmt.Sprintf("unreachable code=%d", c)
	case header.ICMPv6PacketTooBig:
		return "packet too big"
	case header.ICMPv6TimeExceeded:
		return "time exceeded"
	case header.ICMPv6ParamProblem:
		return "parameter problem"
	case header.ICMPv6RouterSolicit:
		return "router solicitation"
	case header.ICMPv6RouterAdvert:
		return "router advertisement"
	case header.ICMPv6NeighborSolicit:
		return "neighbor solicitation"
	case header.ICMPv6NeighborAdvert:
		return "neighbor advertisement"
	}
	return fmt.Sprintf("type=%d code=%d", t, c)
}

// endpoints renders "src:sport -> dst:dport" or "src -> dst".
func (d *dissection) endpoints() string {
	if d.hasPorts {
		return netip.AddrPortFrom(d.src, d.sport).String() + " -> " + netip.AddrPortFrom(d.dst, d.dport).String()
	}
	return d.src.String() + " -> " + d.dst.String()
}

// summary renders the one-line description used by FormatLine.
func (d *dissection) summary() string {
	if d.ipHeader == nil {
		if d.src.IsValid() {
			return d.endpoints() + " malformed: " + d.err
		}
		return "malformed: " + d.err
	}
	var b strings.Builder
	b.WriteString(d.endpoints())
	b.WriteString(" ")
	b.WriteString(d.protoStr)
	switch {
	case d.fragment:
		fmt.Fprintf(&b, " fragment len=%d", d.payloadLen)
	case d.err != "":
		if d.tcpFlags != "" {
			b.WriteString(" " + d.tcpFlags)
		}
		b.WriteString(" malformed: " + d.err)
	case d.tcpFlags != "":
		b.WriteString(" " + d.tcpFlags)
		if d.payloadLen > 0 {
			fmt.Fprintf(&b, " len=%d", d.payloadLen)
		}
	case d.icmp != "":
		b.WriteString(" " + d.icmp)
	default:
		fmt.Fprintf(&b, " len=%d", d.payloadLen)
		if d.wireGuard != "" {
			b.WriteString(" " + d.wireGuard)
		}
	}
	return b.String()
}
