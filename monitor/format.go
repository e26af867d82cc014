package monitor

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// timeLayout is the time prefix of FormatLine and FormatVerbose.
const timeLayout = "15:04:05.000000"

// FormatLine renders ev as one line without a trailing newline, e.g.
//
//	12:00:00.000001 from-peer trace 10.0.0.1:2000 -> 10.0.0.2:80 tcp SYN
//	12:00:00.000002 to-app drop (2 no-listener) 10.0.0.1:53 -> 10.0.0.2:9 udp len=12
//	12:00:00.000003 conn socks5 10.0.0.1:2000 -> example.com:443 ok in=10 out=20 dur=1.5s
//	12:00:00.000004 lost 17 events
//
// It never panics, whatever the packet holds.
func FormatLine(ev Event) string {
	var b strings.Builder
	b.WriteString(ev.Time.Format(timeLayout))
	if ev.Point != 0 {
		b.WriteString(" " + ev.Point.String())
	}
	b.WriteString(" " + ev.Kind.String())
	switch ev.Kind {
	case KindDrop:
		fmt.Fprintf(&b, " (%d %s)", ev.Reason, ev.Reason)
		fallthrough
	case KindTrace:
		switch {
		case ev.Conn != nil:
			b.WriteString(" " + connSummary(ev.Conn))
		case ev.Packet != nil || ev.Detail == "":
			d := dissect(ev.Packet)
			b.WriteString(" " + d.summary())
		}
	case KindConn:
		if c := ev.Conn; c != nil {
			b.WriteString(" " + connSummary(c))
		}
	case KindLost:
		fmt.Fprintf(&b, " %d events", ev.Lost)
	}
	if ev.Detail != "" {
		b.WriteString(" " + ev.Detail)
	}
	return b.String()
}

// connSummary is the one-line form of a connection record. A record
// without bytes or duration (a connection opening or refused) leaves them
// out.
func connSummary(c *ConnRecord) string {
	s := fmt.Sprintf("%s %s -> %s %s", orDash(c.Kind), orDash(c.From), orDash(c.To), orDash(c.Verdict))
	if c.BytesIn != 0 || c.BytesOut != 0 || c.Duration != 0 {
		s += fmt.Sprintf(" in=%d out=%d dur=%s", c.BytesIn, c.BytesOut, c.Duration)
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// jsonEvent is the JSON form of an Event. Field names are stable: tools
// parse them.
type jsonEvent struct {
	Time       string    `json:"time"`
	Kind       string    `json:"kind"`
	Point      string    `json:"point,omitempty"`
	Reason     uint16    `json:"reason,omitempty"`
	ReasonName string    `json:"reasonName,omitempty"`
	Src        string    `json:"src,omitempty"`
	Dst        string    `json:"dst,omitempty"`
	SrcPort    *uint16   `json:"srcPort,omitempty"`
	DstPort    *uint16   `json:"dstPort,omitempty"`
	Proto      string    `json:"proto,omitempty"`
	Flags      string    `json:"flags,omitempty"`
	ICMP       string    `json:"icmp,omitempty"`
	Len        *int      `json:"len,omitempty"` // transport payload length
	PacketLen  *int      `json:"packetLen,omitempty"`
	Summary    string    `json:"summary,omitempty"`
	Error      string    `json:"error,omitempty"`
	Conn       *jsonConn `json:"conn,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	Lost       uint64    `json:"lost,omitempty"`
}

type jsonConn struct {
	Kind       string `json:"kind"`
	From       string `json:"from"`
	To         string `json:"to"`
	Verdict    string `json:"verdict"`
	BytesIn    uint64 `json:"bytesIn"`
	BytesOut   uint64 `json:"bytesOut"`
	DurationMS int64  `json:"durationMs"`
}

func toJSONConn(c *ConnRecord) *jsonConn {
	if c == nil {
		return nil
	}
	return &jsonConn{
		Kind: c.Kind, From: c.From, To: c.To, Verdict: c.Verdict,
		BytesIn: c.BytesIn, BytesOut: c.BytesOut, DurationMS: c.Duration.Milliseconds(),
	}
}

// FormatJSON renders ev as one JSON object without a trailing newline.
func FormatJSON(ev Event) ([]byte, error) {
	j := jsonEvent{
		Time: ev.Time.Format(time.RFC3339Nano),
		Kind: ev.Kind.String(),
	}
	if ev.Point != 0 {
		j.Point = ev.Point.String()
	}
	switch ev.Kind {
	case KindDrop:
		j.Reason, j.ReasonName = uint16(ev.Reason), ev.Reason.String()
		fallthrough
	case KindTrace:
		if ev.Conn != nil || (ev.Packet == nil && ev.Detail != "") {
			j.Conn = toJSONConn(ev.Conn)
			break
		}
		d := dissect(ev.Packet)
		n := len(ev.Packet)
		j.PacketLen = &n
		if d.src.IsValid() {
			j.Src, j.Dst = d.src.String(), d.dst.String()
		}
		j.Proto = d.protoStr
		if d.hasPorts {
			j.SrcPort, j.DstPort = &d.sport, &d.dport
		}
		j.Flags, j.ICMP, j.Error = d.tcpFlags, d.icmp, d.err
		if d.ipHeader != nil && d.err == "" {
			j.Len = &d.payloadLen
		}
		j.Summary = d.summary()
	case KindConn:
		j.Conn = toJSONConn(ev.Conn)
	case KindLost:
		j.Lost = ev.Lost
	}
	j.Detail = ev.Detail
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "->" in summaries readable
	if err := enc.Encode(j); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// hexDumpMax bounds the bytes FormatVerbose dumps.
const hexDumpMax = 64

// FormatVerbose renders ev as a multi-line dissection: the FormatLine
// line, then the IP and transport header fields, the payload length and a
// hex dump of the first bytes. Every line ends in a newline.
func FormatVerbose(ev Event) string {
	var b strings.Builder
	b.WriteString(FormatLine(ev))
	b.WriteString("\n")
	if (ev.Kind != KindTrace && ev.Kind != KindDrop) || ev.Conn != nil || (ev.Packet == nil && ev.Detail != "") {
		return b.String()
	}
	d := dissect(ev.Packet)
	switch {
	case d.version == 4 && d.ipHeader != nil:
		ip := header.IPv4(d.ipHeader)
		fmt.Fprintf(&b, "  ipv4 src=%s dst=%s hlen=%d tos=%#02x total=%d id=%d flags=%s frag=%d ttl=%d proto=%d checksum=%#04x\n",
			d.src, d.dst, ip.HeaderLength(), d.ipHeader[1], ip.TotalLength(), ip.ID(),
			ipv4Flags(ip.Flags()), ip.FragmentOffset(), ip.TTL(), ip.Protocol(), ip.Checksum())
	case d.version == 6 && d.ipHeader != nil:
		ip := header.IPv6(d.ipHeader)
		tc, flow := ip.TOS()
		fmt.Fprintf(&b, "  ipv6 src=%s dst=%s class=%#02x flow=%#05x payload=%d next=%d hoplimit=%d\n",
			d.src, d.dst, tc, flow, ip.PayloadLength(), ip.NextHeader(), ip.HopLimit())
	}
	if h := d.l4Header; h != nil {
		switch d.protoStr {
		case "tcp":
			t := header.TCP(h)
			fmt.Fprintf(&b, "  tcp sport=%d dport=%d seq=%d ack=%d off=%d flags=%s win=%d checksum=%#04x urg=%d\n",
				t.SourcePort(), t.DestinationPort(), t.SequenceNumber(), t.AckNumber(),
				t.DataOffset(), d.tcpFlags, t.WindowSize(), t.Checksum(), t.UrgentPointer())
		case "udp":
			u := header.UDP(h)
			fmt.Fprintf(&b, "  udp sport=%d dport=%d length=%d checksum=%#04x\n",
				u.SourcePort(), u.DestinationPort(), u.Length(), u.Checksum())
		case "icmp":
			c := header.ICMPv4(h)
			fmt.Fprintf(&b, "  icmp type=%d code=%d checksum=%#04x (%s)\n", c.Type(), c.Code(), c.Checksum(), d.icmp)
		case "icmpv6":
			c := header.ICMPv6(h)
			fmt.Fprintf(&b, "  icmpv6 type=%d code=%d checksum=%#04x (%s)\n", c.Type(), c.Code(), c.Checksum(), d.icmp)
		}
	}
	if d.err != "" {
		fmt.Fprintf(&b, "  error: %s\n", d.err)
	} else {
		fmt.Fprintf(&b, "  payload %d bytes\n", d.payloadLen)
	}
	dump := ev.Packet[:min(len(ev.Packet), hexDumpMax)]
	fmt.Fprintf(&b, "  packet %d bytes, first %d:\n", len(ev.Packet), len(dump))
	for _, line := range strings.SplitAfter(hex.Dump(dump), "\n") {
		if line != "" {
			b.WriteString("    " + line)
		}
	}
	return b.String()
}

// FormatHex renders ev as its FormatLine line followed by a hex dump of the
// whole packet (none for events without one). Every line ends in a
// newline.
func FormatHex(ev Event) string {
	var b strings.Builder
	b.WriteString(FormatLine(ev))
	b.WriteString("\n")
	for _, line := range strings.SplitAfter(hex.Dump(ev.Packet), "\n") {
		if line != "" {
			b.WriteString("    " + line)
		}
	}
	return b.String()
}

func ipv4Flags(f uint8) string {
	var s []string
	if f&header.IPv4FlagDontFragment != 0 {
		s = append(s, "DF")
	}
	if f&header.IPv4FlagMoreFragments != 0 {
		s = append(s, "MF")
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "|")
}
